//! API keys, tenants and per-key limits.
//!
//! Keys are configured as SHA-256 hashes (`[[key]]` tables in the config
//! file) or as plain `tenant=key` pairs in `RAGMESH_API_KEYS` (hashed at
//! start-up, the plain text dropped). A request presents its key as
//! `Authorization: Bearer <key>` (what every OpenAI SDK sends) or
//! `api-key: <key>`. The presented key is hashed and compared with every
//! configured hash in constant time, without stopping at a match, so
//! timing tells nothing about which or how many bytes matched. Keys never
//! reach a log line: logs and metrics name the key by its `name`.
//!
//! Each key belongs to one tenant: its collections are the tenant's, and
//! another tenant's collection answers 404 exactly like a missing one.
//! With no key configured the gateway runs **open** (every caller is the
//! tenant `default`), and says so at start-up.
//!
//! Limits per key: a token bucket (`rate_per_minute`, refilled
//! continuously; `burst` requests at once, default a minute's worth) and a
//! cap on requests in flight (`max_concurrent`, held until a stream ends).
//! Past either: 429 with `Retry-After`. The key set is fixed at start-up,
//! so the buckets live in a plain vector indexed by key, no keyed limiter
//! is needed.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::state::{AppState, DEFAULT_TENANT};

/// One `[[key]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Names the key in logs and metrics.
    pub name: String,
    pub tenant: String,
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    pub rate_per_minute: Option<u32>,
    pub burst: Option<u32>,
    pub max_concurrent: Option<u32>,
}

/// Who is calling: inserted into every `/v1` request by [`middleware`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Arc<str>,
    /// The key's name (`None` in open mode).
    pub key: Option<Arc<str>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Entry {
    name: Arc<str>,
    tenant: Arc<str>,
    hash: [u8; 32],
    /// (per second, capacity, state)
    rate: Option<(f64, f64, Mutex<Bucket>)>,
    in_flight: Option<Arc<Semaphore>>,
}

pub struct Keys {
    entries: Vec<Entry>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

impl Keys {
    /// `configs` from the file, `env_pairs` from `RAGMESH_API_KEYS`
    /// (`tenant=key,tenant=key`).
    pub fn load(configs: &[KeyConfig], env_pairs: Option<&str>) -> anyhow::Result<Self> {
        let mut entries = Vec::new();
        for c in configs {
            let raw = hex::decode(c.sha256.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| anyhow::anyhow!("key {}: sha256 must be 64 hex digits", c.name))?;
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&raw);
            entries.push(Entry::new(
                &c.name,
                &c.tenant,
                hash,
                c.rate_per_minute,
                c.burst,
                c.max_concurrent,
            )?);
        }
        for (i, pair) in env_pairs
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let (tenant, key) = pair
                .split_once('=')
                .filter(|(t, k)| !t.is_empty() && k.len() >= 8)
                .ok_or_else(|| {
                    anyhow::anyhow!("RAGMESH_API_KEYS entry {i}: expected tenant=key with a key of 8+ characters")
                })?;
            entries.push(Entry::new(
                &format!("env-{i}"),
                tenant,
                sha256(key.as_bytes()),
                None,
                None,
                None,
            )?);
        }
        for (i, a) in entries.iter().enumerate() {
            anyhow::ensure!(
                !entries[..i].iter().any(|b| b.hash == a.hash),
                "key {}: the same key is configured twice",
                a.name
            );
        }
        Ok(Self { entries })
    }

    pub fn open(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry whose hash equals the presented key's, scanning all of
    /// them in constant time per entry.
    fn find(&self, presented: &str) -> Option<&Entry> {
        let h = sha256(presented.as_bytes());
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&h)) {
                found = Some(e);
            }
        }
        found
    }
}

impl Entry {
    fn new(
        name: &str,
        tenant: &str,
        hash: [u8; 32],
        rate_per_minute: Option<u32>,
        burst: Option<u32>,
        max_concurrent: Option<u32>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!tenant.is_empty(), "key {name}: tenant must not be empty");
        let rate = match rate_per_minute {
            None | Some(0) => None,
            Some(r) => {
                let cap = f64::from(burst.unwrap_or(r).max(1));
                Some((
                    f64::from(r) / 60.0,
                    cap,
                    Mutex::new(Bucket {
                        tokens: cap,
                        last: Instant::now(),
                    }),
                ))
            }
        };
        Ok(Self {
            name: name.into(),
            tenant: tenant.into(),
            hash,
            rate,
            in_flight: max_concurrent
                .filter(|&m| m > 0)
                .map(|m| Arc::new(Semaphore::new(m as usize))),
        })
    }

    /// Takes one request from the bucket, or says how many seconds until
    /// one is there.
    fn take(&self) -> Result<(), u64> {
        let Some((per_sec, cap, bucket)) = &self.rate else {
            return Ok(());
        };
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * per_sec).min(*cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64)
        }
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::Unauthorized {
        message: message.into(),
    }
}

fn too_many(message: String, retry_after: u64) -> Response {
    ApiError::RateLimited {
        message,
        retry_after: std::time::Duration::from_secs(retry_after),
    }
    .into_response()
}

fn presented(req: &Request) -> Option<&str> {
    let h = req.headers();
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        return Some(
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim(),
        );
    }
    h.get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The key a request presents, checked: `Ok(None)` in open mode, a 401
/// response when a key is required and missing or unknown.
fn authenticate<'a>(st: &'a AppState, req: &Request) -> Result<Option<&'a Entry>, ApiError> {
    if st.keys.open() {
        return Ok(None);
    }
    match presented(req) {
        None | Some("") => Err(unauthorized(
            "missing API key: send 'Authorization: Bearer <key>'",
        )),
        Some(k) => st
            .keys
            .find(k)
            .map(Some)
            .ok_or_else(|| unauthorized("invalid API key")),
    }
}

/// For routes that match nothing (404) or not with this method (405):
/// with keys configured, a caller without a valid key learns only 401, so
/// the route table cannot be mapped without a key.
pub fn guard_unmatched(st: &AppState, req: &Request) -> Result<(), ApiError> {
    authenticate(st, req).map(|_| ())
}

/// Authenticates, applies the key's limits and records the caller.
///
/// The concurrency cap is checked before the rate bucket: a request the
/// cap refuses never ran, so it must not spend a rate token.
pub async fn middleware(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let mut held = Vec::with_capacity(2);
    // a span for the checks (no await until it is dropped)
    let auth_span = tracing::info_span!("auth");
    let entered = auth_span.enter();
    let caller = match authenticate(&st, &req) {
        Ok(None) => {
            if let Err(refused) = crate::origin::check(&st, &req) {
                return refused.into_response();
            }
            Caller {
                tenant: DEFAULT_TENANT.into(),
                key: None,
            }
        }
        Ok(Some(entry)) => {
            if let Some(sem) = &entry.in_flight {
                match sem.clone().try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => {
                        metrics::counter!(crate::metrics::RATE_LIMITED, "key" => entry.name.to_string(), "limit" => "concurrency")
                            .increment(1);
                        return too_many(
                            format!("key '{}' has its maximum of requests in flight", entry.name),
                            1,
                        );
                    }
                }
            }
            if let Err(wait) = entry.take() {
                metrics::counter!(crate::metrics::RATE_LIMITED, "key" => entry.name.to_string(), "limit" => "rate")
                    .increment(1);
                return too_many(
                    format!(
                        "rate limit of key '{}' reached; retry in {wait} s",
                        entry.name
                    ),
                    wait,
                );
            }
            Caller {
                tenant: entry.tenant.clone(),
                key: Some(entry.name.clone()),
            }
        }
        Err(refused) => return refused.into_response(),
    };
    // the gateway-wide cap, after the key's own limits
    match st.in_flight.clone().try_acquire_owned() {
        Ok(p) => held.push(p),
        Err(_) => {
            metrics::counter!(crate::metrics::RATE_LIMITED, "key" => caller.key.as_deref().unwrap_or("").to_owned(), "limit" => "gateway")
                .increment(1);
            return too_many(
                "the gateway has its maximum of requests in flight; retry shortly".into(),
                1,
            );
        }
    }
    drop(entered);
    drop(auth_span);
    // the request's span (request_id::middleware) names who called
    let span = tracing::Span::current();
    span.record("tenant", &*caller.tenant);
    if let Some(k) = &caller.key {
        span.record("key_name", &**k);
    }
    req.extensions_mut().insert(caller);
    let resp = next.run(req).await;
    // the permits live as long as the body: a stream holds its slots
    // until the last event or the client's disconnect
    resp.map(|inner| Body::new(Holding { inner, _held: held }))
}

/// A response body that keeps admission permits until it is dropped; its
/// size hint is the inner body's, so a JSON answer keeps its
/// Content-Length.
struct Holding {
    inner: Body,
    _held: Vec<tokio::sync::OwnedSemaphorePermit>,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_by_hash_and_refuses_others() {
        let hash = hex::encode(sha256(b"secret-a-123"));
        let cfg = KeyConfig {
            name: "a".into(),
            tenant: "ta".into(),
            sha256: hash,
            rate_per_minute: None,
            burst: None,
            max_concurrent: None,
        };
        let keys = Keys::load(&[cfg], Some("tb=secret-b-456")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys.find("secret-a-123").map(|e| &*e.tenant), Some("ta"));
        assert_eq!(keys.find("secret-b-456").map(|e| &*e.tenant), Some("tb"));
        assert!(keys.find("secret-a-12").is_none());
        assert!(keys.find("").is_none());
        assert!(Keys::load(&[], Some("tb=short")).is_err());
        assert!(Keys::load(&[], Some("x=abcdefgh,y=abcdefgh")).is_err());
    }

    #[test]
    fn bucket_allows_burst_then_says_when() {
        let e = Entry::new("k", "t", [0; 32], Some(60), Some(3), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!((0..3).all(|_| e.take().is_ok()));
        assert_eq!(e.take(), Err(1));
    }
}
