//! External OpenAI-compatible upstreams (vLLM, Ollama, hosted APIs) over
//! reqwest: a model whose `[[model]]` table lists `[[model.upstream]]`
//! targets is proxied, not served.
//!
//! - **Pass-through**: the request body is forwarded as the client sent
//!   it, with `model` rewritten to the target's name; the answer (JSON or
//!   the SSE stream, chunk by chunk as it arrives) goes back untouched.
//!   The client's gateway key is never forwarded: each target has its own
//!   (`api_key_env` names the variable holding it).
//! - **Timeouts**: `connect_timeout_ms` for the TCP/TLS connect;
//!   `timeout_s` for the whole answer of a non-streaming call, and for a
//!   stream both until its headers and as the longest silence between
//!   chunks.
//! - **Retries and fallback**: targets are tried in order; each gets
//!   `1 + retries` attempts while it fails before answering (connect
//!   error, timeout, 408/409/429/5xx), then the next target. Nothing is
//!   retried once the first byte went to the client. Another 4xx is the
//!   client's error: returned as is, never retried elsewhere. When every
//!   target fails, the last HTTP answer is returned (with its
//!   `Retry-After`), or 503/504 naming each failure.
//! - **Cool-down**: a target that failed all its attempts goes to the end
//!   of the order for [`COOLDOWN`], so later calls do not pay for its
//!   retries first; it is still tried when nothing else answers.
//! - **Transport**: whole answers from `http://` targets go through
//!   [`direct`] (connections driven by the calling task: fewer wake-ups,
//!   a shorter latency tail); streams and `https://` through reqwest.

mod direct;
mod forward;

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use forward::{Endpoint, forward};

/// One `[[model.upstream]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Base URL of the OpenAI API, e.g. `http://127.0.0.1:11434/v1`;
    /// `https://` verifies the server against the system's CA roots.
    pub url: String,
    /// The model name the upstream knows (default: the public name).
    pub model: Option<String>,
    /// Environment variable holding the upstream's API key.
    pub api_key_env: Option<String>,
}

pub struct Target {
    pub base: String,
    /// `<base>/chat/completions`, `<base>/completions` and
    /// `<base>/responses`, parsed once.
    pub chat_url: reqwest::Url,
    pub completions_url: reqwest::Url,
    pub responses_url: reqwest::Url,
    pub model: String,
    pub api_key: Option<String>,
    /// `http://` targets: the in-task HTTP/1 client for whole answers.
    pub direct: Option<direct::DirectPool>,
    /// Paths (with query) of the endpoints, for `direct`.
    pub chat_path: axum::http::Uri,
    pub completions_path: axum::http::Uri,
    pub responses_path: axum::http::Uri,
    /// Milliseconds since the process epoch until which the target is
    /// tried last (0: not cooling down).
    pub cooling_until: AtomicU64,
}

/// An error with its causes, `outer: inner: …` (HTTP clients' own messages
/// hide the cause, e.g. "error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

/// How long a failed target is tried last.
pub const COOLDOWN: Duration = Duration::from_secs(5);

/// Milliseconds since the first call (a monotonic clock for atomics).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

pub struct Upstream {
    pub name: String,
    pub targets: Vec<Target>,
    pub client: reqwest::Client,
    pub timeout: Duration,
    pub retries: u32,
}

pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_TIMEOUT_S: u64 = 120;
pub const DEFAULT_RETRIES: u32 = 1;

impl Upstream {
    pub fn new(
        name: &str,
        targets: &[TargetConfig],
        connect_timeout: Duration,
        timeout: Duration,
        retries: u32,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!targets.is_empty(), "model {name}: no upstream targets");
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let base = t.url.trim_end_matches('/').to_owned();
            let parsed = reqwest::Url::parse(&base)
                .map_err(|e| anyhow::anyhow!("model {name}: upstream url '{}': {e}", t.url))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https"),
                "model {name}: upstream url '{}' must be http:// or https://",
                t.url
            );
            let api_key = match &t.api_key_env {
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    anyhow::anyhow!(
                        "model {name}: environment variable {var} (api_key_env) is not set"
                    )
                })?),
                None => None,
            };
            let url = |path: &str| {
                reqwest::Url::parse(&format!("{base}/{path}"))
                    .map_err(|e| anyhow::anyhow!("model {name}: upstream url '{}': {e}", t.url))
            };
            let (chat_url, completions_url) = (url("chat/completions")?, url("completions")?);
            let responses_url = url("responses")?;
            let path = |u: &reqwest::Url| {
                let pq = match u.query() {
                    Some(q) => format!("{}?{q}", u.path()),
                    None => u.path().to_owned(),
                };
                pq.parse::<axum::http::Uri>()
                    .map_err(|e| anyhow::anyhow!("model {name}: upstream url '{}': {e}", t.url))
            };
            out.push(Target {
                direct: direct::DirectPool::for_url(&chat_url, connect_timeout),
                chat_path: path(&chat_url)?,
                completions_path: path(&completions_url)?,
                responses_path: path(&responses_url)?,
                chat_url,
                completions_url,
                responses_url,
                base,
                model: t.model.clone().unwrap_or_else(|| name.to_owned()),
                api_key,
                cooling_until: AtomicU64::new(0),
            });
        }
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| anyhow::anyhow!("model {name}: HTTP client: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            targets: out,
            client,
            timeout,
            retries,
        })
    }
}
