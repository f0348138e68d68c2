//! The `ragmesh-llm-runner` binary: configuration (flags + env) and the
//! serve loop (gRPC + `/health`, `/metrics`).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

use crate::generator::{Generator, GeneratorConfig};
use crate::grpc::RunnerGrpc;
use crate::linear::Kernel;

/// The engine's limits, shared with the all-in-one gateway (which embeds
/// the runner and flattens these flags into its own).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Sequences decoded together at most.
    #[arg(long, env = "RAGMESH_MAX_SEQUENCES", default_value_t = 16)]
    pub max_sequences: usize,
    /// Tokens in one forward at most (prompt chunks + decode tokens).
    #[arg(long, env = "RAGMESH_MAX_BATCHED_TOKENS", default_value_t = 512)]
    pub max_batched_tokens: usize,
    /// Requests waiting for a slot at most; beyond: RESOURCE_EXHAUSTED.
    #[arg(long, env = "RAGMESH_MAX_WAITING", default_value_t = 256)]
    pub max_waiting: usize,
    /// Seconds a request may wait for a slot; past it, RESOURCE_EXHAUSTED
    /// (HTTP 429 with Retry-After) instead of a wait without end.
    #[arg(long, env = "RAGMESH_MAX_QUEUE_WAIT_S", default_value_t = 60)]
    pub max_queue_wait_s: u64,
    /// KV-cache budget in tokens over all sequences (f16: ~23 KB each for
    /// SmolLM2-135M).
    #[arg(long, env = "RAGMESH_KV_CACHE_TOKENS", default_value_t = 65_536)]
    pub kv_cache_tokens: usize,
    /// Caps the context window (0: the model's own).
    #[arg(long, env = "RAGMESH_MAX_MODEL_LEN", default_value_t = 0)]
    pub max_model_len: usize,
    /// Matmul kernel: `quantized` (every row on the GGUF blocks × 8-bit
    /// activations; output independent of batching) or `gemm` (every row
    /// on OpenBLAS over dequantised f32 weights: ~0.5 GB more for 135M,
    /// slower). See linear.rs.
    #[arg(long, env = "RAGMESH_KERNEL", value_enum, default_value_t = Kernel::Quantized)]
    pub kernel: Kernel,
    /// Automatic prefix caching: a new request reuses the KV blocks of the
    /// longest whole-block prompt prefix an earlier or running request
    /// computed (`--prefix-cache false` to turn it off).
    #[arg(long, env = "RAGMESH_PREFIX_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub prefix_cache: bool,
}

impl EngineArgs {
    pub fn generator_config(&self, model: impl Into<std::path::PathBuf>) -> GeneratorConfig {
        GeneratorConfig {
            model: model.into(),
            max_sequences: self.max_sequences,
            max_batched_tokens: self.max_batched_tokens,
            max_waiting: self.max_waiting,
            max_queue_wait: std::time::Duration::from_secs(self.max_queue_wait_s.max(1)),
            kv_cache_tokens: self.kv_cache_tokens,
            max_model_len: self.max_model_len,
            kernel: self.kernel,
            prefix_cache: self.prefix_cache,
        }
    }
}

/// Every flag is also an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "ragmesh-llm-runner",
    version,
    about = "GGUF text generation with continuous batching"
)]
pub struct Args {
    /// The GGUF model file.
    #[arg(long, env = "RAGMESH_LLM_MODEL", default_value_t = default_model())]
    pub model: String,
    #[arg(long, env = "RAGMESH_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "RAGMESH_GRPC_PORT", default_value_t = 50053)]
    pub grpc_port: u16,
    #[arg(long, env = "RAGMESH_HTTP_PORT", default_value_t = 8083)]
    pub http_port: u16,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Compute threads (0: one per core).
    #[arg(long, env = "RAGMESH_THREADS", default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub drain: ragmesh_telemetry::DrainArgs,
    #[command(flatten)]
    pub log: ragmesh_telemetry::LogArgs,
}

pub fn default_model() -> String {
    let dir = std::env::var("RAGMESH_MODEL_DIR").unwrap_or_else(|_| match std::env::var("HOME") {
        Ok(h) if !h.is_empty() => format!("{h}/.cache/ragmesh/models"),
        _ => ".cache/ragmesh/models".into(),
    });
    format!("{dir}/SmolLM2-135M-Instruct.Q4_1.gguf")
}

impl Args {
    pub fn generator_config(&self) -> GeneratorConfig {
        self.engine.generator_config(self.model.clone())
    }
}

/// The binary's `main` (the gateway's multi-call binary runs it too,
/// when called by this binary's name).
pub fn main() -> ! {
    use clap::Parser;
    let args = Args::parse();
    // the engine computes on its own threads; two async workers serve
    // gRPC
    ragmesh_telemetry::service_main(
        "ragmesh-llm-runner",
        args.log.log_format,
        2,
        std::time::Duration::from_secs(1),
        move || run(args),
    )
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let lifecycle = args.drain.lifecycle();
    lifecycle.drain_on_signals();
    if args.threads > 0 {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(args.threads)
            .build_global();
    }
    let cfg = args.generator_config();
    let load = tokio::task::spawn_blocking(move || Generator::load(cfg));
    let Some(core) = lifecycle.unless_drained(load).await else {
        return Ok(());
    };
    let core = core
        .context("model loading task")?
        .with_context(|| format!("cannot load model {}", args.model))?;
    // vLLM's bucket edges for the latency histograms; requests run long
    if ragmesh_telemetry::prometheus(crate::metrics::BUCKETS).is_none() {
        tracing::warn!("another metrics recorder is installed; /metrics will be empty");
    }
    // (after the recorder: a description given before it is lost)
    crate::metrics::describe();
    let ip: std::net::IpAddr = args
        .host
        .parse()
        .with_context(|| format!("--host '{}' is not an IP address", args.host))?;
    let grpc = TcpListener::bind(SocketAddr::new(ip, args.grpc_port))
        .await
        .with_context(|| format!("cannot bind gRPC port {}", args.grpc_port))?;
    let http = TcpListener::bind(SocketAddr::new(ip, args.http_port))
        .await
        .with_context(|| format!("cannot bind HTTP port {}", args.http_port))?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<ragmesh_proto::v1::llm_runner_server::LlmRunnerServer<RunnerGrpc>>()
        .await;
    let info = core.info().clone();
    let grpc = tonic::transport::Server::builder()
        .trace_fn(ragmesh_telemetry::otel::grpc_server_span)
        .add_service(health_svc)
        .add_service(RunnerGrpc::server(core, 16 * 1024 * 1024))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            ragmesh_telemetry::not_serving_on_drain::<
                ragmesh_proto::v1::llm_runner_server::LlmRunnerServer<RunnerGrpc>,
            >(lifecycle.clone(), health),
        );
    tracing::info!(model = %info.model_id, context = info.context_length, %grpc_addr, %http_addr, "llm-runner serving");
    // ready before the line scripts wait for (the listeners are bound)
    lifecycle.set_ready();
    println!("ragmesh-llm-runner listening http={http_addr} grpc={grpc_addr}");
    ragmesh_telemetry::serve_leaf(&lifecycle, http, grpc)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}
