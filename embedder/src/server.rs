//! The `ragmesh-embedder` binary: configuration (flags + env) and the serve
//! loop for both transports.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

use crate::embedder::{Embedder, EmbedderConfig};
use crate::grpc::EmbedderGrpc;
use crate::metrics as m;

/// Every flag is also an environment variable (Kubernetes sets those).
#[derive(Debug, Parser)]
#[command(
    name = "ragmesh-embedder",
    version,
    about = "Sentence embeddings over gRPC and the OpenAI HTTP API"
)]
pub struct Args {
    /// Model cache directory (holds one folder per model).
    #[arg(long, env = "RAGMESH_MODEL_DIR", default_value_t = default_model_dir())]
    pub model_dir: String,
    /// Model folder inside --model-dir, or an absolute path to a
    /// sentence-transformers directory.
    #[arg(long, env = "RAGMESH_EMBED_MODEL", default_value = "all-MiniLM-L6-v2")]
    pub model: String,
    /// Served model id (default: the folder's name).
    #[arg(long, env = "RAGMESH_EMBED_MODEL_ID")]
    pub model_id: Option<String>,
    #[arg(long, env = "RAGMESH_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "RAGMESH_GRPC_PORT", default_value_t = 50051)]
    pub grpc_port: u16,
    #[arg(long, env = "RAGMESH_HTTP_PORT", default_value_t = 8081)]
    pub http_port: u16,
    /// Token budget of one forward pass (dynamic batching).
    #[arg(long, env = "RAGMESH_MAX_BATCH_TOKENS", default_value_t = 16_384)]
    pub max_batch_tokens: usize,
    /// Sequences per forward pass at most.
    #[arg(long, env = "RAGMESH_MAX_BATCH_SEQUENCES", default_value_t = 256)]
    pub max_batch_sequences: usize,
    /// Requests queued or running at once; beyond it 429 / RESOURCE_EXHAUSTED.
    #[arg(long, env = "RAGMESH_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Inputs per request at most.
    #[arg(long, env = "RAGMESH_MAX_INPUTS", default_value_t = 2048)]
    pub max_inputs: usize,
    /// Largest accepted HTTP body / gRPC message, in bytes.
    #[arg(long, env = "RAGMESH_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Compute threads (0: one per core).
    #[arg(long, env = "RAGMESH_THREADS", default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub drain: ragmesh_telemetry::DrainArgs,
    #[command(flatten)]
    pub log: ragmesh_telemetry::LogArgs,
}

/// `RAGMESH_MODEL_DIR`, or the default cache directory.
pub fn default_model_dir_env() -> String {
    std::env::var("RAGMESH_MODEL_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(default_model_dir)
}

pub fn default_model_dir() -> String {
    match std::env::var("HOME") {
        Ok(h) if !h.is_empty() => format!("{h}/.cache/ragmesh/models"),
        _ => ".cache/ragmesh/models".into(),
    }
}

impl Args {
    pub fn model_path(&self) -> PathBuf {
        let p = PathBuf::from(&self.model);
        if p.is_absolute() {
            p
        } else {
            PathBuf::from(&self.model_dir).join(p)
        }
    }

    pub fn embedder_config(&self) -> EmbedderConfig {
        EmbedderConfig {
            model_path: self.model_path(),
            model_id: self.model_id.clone(),
            max_batch_tokens: self.max_batch_tokens,
            max_batch_sequences: self.max_batch_sequences,
            max_concurrent_requests: self.max_concurrent_requests,
            max_inputs_per_request: self.max_inputs,
        }
    }
}

/// Sizes the compute thread pool candle's GEMMs run on. Call before any
/// forward; a second call is a no-op.
pub fn init_threads(threads: usize) {
    if threads > 0 {
        let _ = rayon_pool(threads);
    }
}

fn rayon_pool(threads: usize) -> Result<(), String> {
    // candle's CPU matmul spreads over rayon's global pool.
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| e.to_string())
}

/// The binary's `main` (the gateway's multi-call binary runs it too,
/// when called by this binary's name).
pub fn main() -> ! {
    use clap::Parser;
    let args = Args::parse();
    ragmesh_telemetry::service_main(
        "ragmesh-embedder",
        args.log.log_format,
        0,
        std::time::Duration::from_secs(1),
        move || run(args),
    )
}

/// Loads the model, binds both listeners and serves until SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let lifecycle = args.drain.lifecycle();
    lifecycle.drain_on_signals();
    init_threads(args.threads);
    // the recorder first: loading describes the metrics
    let prom = m::prometheus();
    if prom.is_none() {
        tracing::warn!("another metrics recorder is installed; /metrics will be empty");
    }
    let cfg = args.embedder_config();
    let load = tokio::task::spawn_blocking(move || Embedder::load(&cfg));
    let Some(embedder) = lifecycle.unless_drained(load).await else {
        return Ok(());
    };
    let embedder = embedder.context("model loading task")??;

    let ip: std::net::IpAddr = args
        .host
        .parse()
        .with_context(|| format!("--host '{}' is not an IP address", args.host))?;
    let http = TcpListener::bind(SocketAddr::new(ip, args.http_port))
        .await
        .with_context(|| format!("cannot bind HTTP port {}", args.http_port))?;
    let grpc = TcpListener::bind(SocketAddr::new(ip, args.grpc_port))
        .await
        .with_context(|| format!("cannot bind gRPC port {}", args.grpc_port))?;
    let (http_addr, grpc_addr) = (http.local_addr()?, grpc.local_addr()?);

    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<ragmesh_proto::v1::embedder_server::EmbedderServer<EmbedderGrpc>>()
        .await;
    let grpc_svc = EmbedderGrpc::server(embedder.clone(), args.max_body_bytes);
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .trace_fn(ragmesh_telemetry::otel::grpc_server_span)
            .add_service(health_svc)
            .add_service(grpc_svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc),
                ragmesh_telemetry::not_serving_on_drain::<
                    ragmesh_proto::v1::embedder_server::EmbedderServer<EmbedderGrpc>,
                >(lifecycle.clone(), health),
            ),
    );
    // HTTP is the API here too: on drain it stops accepting and finishes
    // the requests it has (embeddings take well under the grace period).
    let app = crate::http::router(embedder.clone(), args.max_body_bytes, &lifecycle);
    let lc = lifecycle.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(http, app)
            .with_graceful_shutdown(async move { lc.draining().await })
            .await
    });
    lifecycle.set_ready();
    let info = embedder.info();
    tracing::info!(model = %info.id, dims = info.dims, %http_addr, %grpc_addr, "embedder serving");
    // One parseable line on stdout: scripts and tests read the bound ports
    // from it (they start us with port 0).
    println!("ragmesh-embedder listening http={http_addr} grpc={grpc_addr}");

    let Some((g, h)) = lifecycle
        .serve_until_drained(
            async { tokio::join!(grpc_task, http_task) },
            std::time::Duration::ZERO,
        )
        .await
    else {
        return Ok(());
    };
    g.context("gRPC server task")?.context("gRPC server")?;
    h.context("HTTP server task")?.context("HTTP server")?;
    Ok(())
}
