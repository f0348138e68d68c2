//! The gateway's configuration: flags + environment (Kubernetes sets
//! those) for the process, and an optional TOML file for what is a list
//! (RAG profiles, models, aliases, keys):
//!
//! ```toml
//! [[profile]]
//! name = "docs-assistant"        # the model name clients select
//! collection = "docs"
//! top_k = 4                      # default 4
//! score_threshold = 0.2          # optional
//! hybrid = true                  # dense + BM25 fused by RRF (default)
//! template = "prompts/docs.j2"   # optional minijinja file
//! temperature = 0.0              # when the request sends none (default 0)
//! repetition_penalty = 1.1       # default 1.1; frequency_penalty, presence_penalty: 0
//! stop_on_repeat = true          # default: end an answer at a repeated sentence
//! filter = { lang = "en" }       # optional fixed metadata filter
//!
//! [[model]]                      # llm-runner replicas (the mesh)
//! runners = ["dns://llm-runner-headless:50053"]
//! # name = "..."; scale_from_zero_wait_s = 300 (a pool KEDA may scale
//! # to zero: not waited for at start-up, requests wait for a replica)
//!
//! [[model]]                      # an external OpenAI-compatible API
//! name = "llama3"
//! timeout_s = 60                 # default 120; connect_timeout_ms = 2000
//! retries = 1                    # per target, before the next one
//! [[model.upstream]]             # tried in order
//! url = "http://10.0.0.7:8000/v1"
//! model = "meta-llama/Llama-3.1-8B-Instruct"
//! api_key_env = "VLLM_KEY"       # optional
//! [[model.upstream]]
//! url = "http://127.0.0.1:11434/v1"
//! model = "llama3.1"
//!
//! [aliases]                      # more names for models or profiles
//! "gpt-4o-mini" = "docs-assistant"
//!
//! [[key]]
//! name = "team-a"                # names the key in logs and metrics
//! tenant = "team-a"
//! sha256 = "<64 hex digits>"     # printf %s "$KEY" | sha256sum
//! rate_per_minute = 600          # optional
//! burst = 20                     # optional (default: rate_per_minute)
//! max_concurrent = 8             # optional
//! ```

use std::path::{Path, PathBuf};

use clap::Parser;
use ragmesh_llm_runner::server::EngineArgs;
use ragmesh_retriever::server::StoreArgs;
use serde::Deserialize;

use crate::rag::profile::ProfileConfig;

#[derive(Debug, Parser)]
#[command(
    name = "ragmesh-gateway",
    version,
    about = "OpenAI-compatible API with retrieval-augmented generation"
)]
pub struct Args {
    #[arg(long, env = "RAGMESH_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "RAGMESH_HTTP_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Model cache directory.
    #[arg(long, env = "RAGMESH_MODEL_DIR", default_value_t = ragmesh_embedder::server::default_model_dir())]
    pub model_dir: String,
    /// Embedding model: a folder in --model-dir or an absolute path.
    #[arg(long, env = "RAGMESH_EMBED_MODEL", default_value = "all-MiniLM-L6-v2")]
    pub embed_model: String,
    /// Chat model: a GGUF file in --model-dir or an absolute path, run
    /// in-process; `none` serves no in-process model (upstreams only).
    #[arg(
        long,
        env = "RAGMESH_LLM_MODEL",
        default_value = "SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    pub llm_model: String,
    /// The TOML file with `[[profile]]` tables.
    #[arg(long, env = "RAGMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Files or folders (their `*.md` / `*.txt`) ingested at start-up into
    /// --demo-collection, served through a profile of the same name.
    #[arg(long, env = "RAGMESH_DEMO_INGEST", value_delimiter = ',')]
    pub demo_ingest: Vec<PathBuf>,
    #[arg(long, env = "RAGMESH_DEMO_COLLECTION", default_value = "ragmesh-docs")]
    pub demo_collection: String,
    /// Chunk size for ingest, in embedder tokens.
    #[arg(long, env = "RAGMESH_CHUNK_TOKENS", default_value_t = 160)]
    pub chunk_tokens: usize,
    /// Tokens shared by neighbouring chunks.
    #[arg(long, env = "RAGMESH_CHUNK_OVERLAP", default_value_t = 32)]
    pub chunk_overlap: usize,
    /// Largest accepted request body, in bytes (beyond: 413).
    #[arg(long, env = "RAGMESH_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds a connection may take to send a request head, counted from
    /// when the gateway waits for one: bounds slow-header clients and idle
    /// keep-alive connections alike (see `listen.rs`).
    #[arg(long, env = "RAGMESH_HTTP_HEADER_TIMEOUT_S", default_value_t = 10)]
    pub http_header_timeout_s: u64,
    /// Seconds a request body may take to arrive (beyond: 408).
    #[arg(long, env = "RAGMESH_HTTP_BODY_TIMEOUT_S", default_value_t = 60)]
    pub http_body_timeout_s: u64,
    /// Open connections at most; past it new ones get 503 and are closed.
    #[arg(long, env = "RAGMESH_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Largest file `/v1/files` accepts, in bytes (beyond: 413). The
    /// bytes pass through memory once, within the in-flight body budget.
    #[arg(long, env = "RAGMESH_MAX_FILE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_file_bytes: usize,
    /// Files attached to vector stores that one gateway extracts, embeds
    /// and stores at once; the rest wait, `in_progress`.
    #[arg(long, env = "RAGMESH_ATTACH_CONCURRENCY", default_value_t = 2)]
    pub attach_concurrency: usize,
    /// Days a stored response (`/v1/responses` with `store`) is kept;
    /// past it, it reads as absent (OpenAI keeps them 30 days).
    #[arg(long, env = "RAGMESH_RESPONSE_RETENTION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub response_retention_days: u64,
    /// Request-body bytes being read or held at once, over all requests
    /// (beyond: 429 with Retry-After). Bounds the memory bodies take.
    #[arg(long, env = "RAGMESH_MAX_INFLIGHT_BODY_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_inflight_body_bytes: usize,
    /// API requests in flight at once, over all keys (a stream holds its
    /// slot until it ends; beyond: 429 with Retry-After).
    #[arg(long, env = "RAGMESH_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Embedding requests queued or running at once (beyond: 429).
    #[arg(long, env = "RAGMESH_EMBED_MAX_CONCURRENT", default_value_t = 512)]
    pub embed_max_concurrent: usize,
    /// API keys as `tenant=key` pairs, comma-separated (hashed at start-up;
    /// `[[key]]` tables in --config hold hashes instead). No keys at all:
    /// open mode, every caller is tenant `default`.
    #[arg(long, env = "RAGMESH_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// Web origins (`scheme://host[:port]`, comma-separated) a browser UI
    /// may call an open-mode gateway from; loopback origins always may.
    #[arg(long, env = "RAGMESH_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Compute threads (0: one per core).
    #[arg(long, env = "RAGMESH_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Async runtime threads serving HTTP and the mesh calls (0: one per
    /// core). Model work runs on its own threads either way.
    #[arg(long, env = "RAGMESH_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// llm-runner replicas for the chat model instead of the in-process
    /// one: `http://host:port,...` or one `dns://host:port` (re-resolved).
    #[arg(long, env = "RAGMESH_RUNNER_ENDPOINTS", value_delimiter = ',')]
    pub runner_endpoints: Vec<String>,
    /// How a generation picks its `--runner-endpoints` replica:
    /// `least-outstanding`, `prefix` (requests sharing a conversation
    /// prefix meet the replica caching it; bounded load) or `session`
    /// (`x-session-id` / `safety_identifier` / `user` pins a replica).
    #[arg(long, env = "RAGMESH_RUNNER_ROUTING", value_enum, default_value_t = crate::mesh::pool::Routing::LeastOutstanding)]
    pub runner_routing: crate::mesh::pool::Routing,
    /// Embedder replicas instead of the in-process embedder (same form).
    #[arg(long, env = "RAGMESH_EMBEDDER_ENDPOINTS", value_delimiter = ',')]
    pub embedder_endpoints: Vec<String>,
    /// Retriever replicas instead of the in-process store (same form).
    /// Several replicas must share storage (`--backend qdrant`).
    #[arg(long, env = "RAGMESH_RETRIEVER_ENDPOINTS", value_delimiter = ',')]
    pub retriever_endpoints: Vec<String>,
    /// Connect timeout of the mesh's gRPC channels.
    #[arg(long, env = "RAGMESH_MESH_CONNECT_TIMEOUT_MS", default_value_t = 1000)]
    pub mesh_connect_timeout_ms: u64,
    /// How often a `dns://` endpoint is re-resolved.
    #[arg(long, env = "RAGMESH_MESH_RESOLVE_INTERVAL_S", default_value_t = 10)]
    pub mesh_resolve_interval_s: u64,
    /// How often each replica is probed (runners report their load).
    #[arg(long, env = "RAGMESH_MESH_PROBE_INTERVAL_MS", default_value_t = 1000)]
    pub mesh_probe_interval_ms: u64,
    /// How long start-up waits for each remote stage to answer.
    #[arg(long, env = "RAGMESH_MESH_WAIT_S", default_value_t = 120)]
    pub mesh_wait_s: u64,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub drain: ragmesh_telemetry::DrainArgs,
    #[command(flatten)]
    pub log: ragmesh_telemetry::LogArgs,
    /// Load and validate the configuration (flags, env, --config) as
    /// start-up would, without loading models or dialling anything; print
    /// one line and exit (0: valid).
    #[arg(long)]
    pub check_config: bool,
}

impl Args {
    pub fn model_path(&self, name: &str) -> PathBuf {
        let p = PathBuf::from(name);
        if p.is_absolute() {
            p
        } else {
            Path::new(&self.model_dir).join(p)
        }
    }
}

/// The optional config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub profile: Vec<ProfileConfig>,
    #[serde(default)]
    pub key: Vec<crate::auth::KeyConfig>,
    #[serde(default)]
    pub model: Vec<crate::routing::ModelConfig>,
    #[serde(default)]
    pub aliases: std::collections::BTreeMap<String, String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            // one readable line: the message and where (toml's own Display
            // spans several lines with a source excerpt)
            let line = e
                .span()
                .map(|s| text.get(..s.start).unwrap_or(&text).matches('\n').count() + 1);
            match line {
                Some(l) => anyhow::anyhow!("config {} line {l}: {}", path.display(), e.message()),
                None => anyhow::anyhow!("config {}: {}", path.display(), e.message()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_typos_are_refused() {
        let c: Result<FileConfig, _> = toml::from_str(
            "[[profile]]\nname = \"a\"\ncollection = \"c\"\ntop_k = 3\nfilter = { lang = \"en\" }\n",
        );
        let c = c.map_err(|e| e.to_string());
        assert_eq!(c.as_ref().map(|c| c.profile[0].top_k), Ok(3));
        assert_eq!(c.map(|c| c.profile[0].hybrid), Ok(true));
        let bad: Result<FileConfig, _> =
            toml::from_str("[[profile]]\nname = \"a\"\ncollection = \"c\"\ntopk = 3\n");
        assert!(bad.is_err());
    }

    #[test]
    fn flags_do_not_collide() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
