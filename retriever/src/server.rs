//! The `ragmesh-retriever` binary: configuration (flags + env) and the
//! serve loop (gRPC + `/health`, `/metrics`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

use crate::backend::Backend;
use crate::edge::EdgeBackend;
use crate::grpc::RetrieverGrpc;
use crate::objects::grpc::ObjectsGrpc;
use crate::objects::{DiskObjects, NoObjects, ObjectStore};
use crate::qdrant::{QdrantBackend, QdrantConfig};
use crate::retriever::Retriever;

/// Where collections live, shared with the all-in-one gateway (which
/// embeds the retriever and flattens these flags into its own).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// `edge`: the embedded engine under --data-dir; `qdrant`: a Qdrant
    /// server or cluster at --qdrant-url.
    #[arg(
        long,
        env = "RAGMESH_RETRIEVER_BACKEND",
        value_enum,
        default_value = "edge"
    )]
    pub backend: BackendKind,
    /// Qdrant gRPC URL (`https://` for TLS).
    #[arg(long, env = "QDRANT_URL", default_value = "http://127.0.0.1:6334")]
    pub qdrant_url: String,
    #[arg(long, env = "QDRANT_API_KEY", hide_env_values = true)]
    pub qdrant_api_key: Option<String>,
    /// Prefix of the Qdrant collections this retriever owns.
    #[arg(long, env = "RAGMESH_QDRANT_PREFIX", default_value = "ragmesh")]
    pub qdrant_prefix: String,
    /// Shards of each new Qdrant collection.
    #[arg(long, env = "RAGMESH_QDRANT_SHARDS", default_value_t = 1)]
    pub qdrant_shards: u32,
    /// Replicas of each shard of a new Qdrant collection.
    #[arg(long, env = "RAGMESH_QDRANT_REPLICATION", default_value_t = 1)]
    pub qdrant_replication: u32,
    /// Replicas that must acknowledge a write before it is acknowledged.
    #[arg(long, env = "RAGMESH_QDRANT_WRITE_CONSISTENCY", default_value_t = 1)]
    pub qdrant_write_consistency: u32,
    /// Where the embedded engine keeps its collections.
    #[arg(long, env = "RAGMESH_DATA_DIR", default_value_t = default_data_dir())]
    pub data_dir: String,
    /// Where uploaded files and vector-store records are kept (default:
    /// `<data-dir>/objects` with the edge backend; none with qdrant, whose
    /// replicas may be several: set it on a single replica with a volume).
    #[arg(long, env = "RAGMESH_OBJECTS_DIR")]
    pub objects_dir: Option<String>,
}

/// Every flag is also an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "ragmesh-retriever",
    version,
    about = "Collections and hybrid search over Qdrant Edge or a Qdrant cluster"
)]
pub struct Args {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, env = "RAGMESH_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "RAGMESH_GRPC_PORT", default_value_t = 50052)]
    pub grpc_port: u16,
    #[arg(long, env = "RAGMESH_HTTP_PORT", default_value_t = 8082)]
    pub http_port: u16,
    /// Largest accepted gRPC message, in bytes (bounds an upsert batch).
    #[arg(long, env = "RAGMESH_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,
    #[command(flatten)]
    pub drain: ragmesh_telemetry::DrainArgs,
    #[command(flatten)]
    pub log: ragmesh_telemetry::LogArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    Edge,
    Qdrant,
}

pub fn default_data_dir() -> String {
    match std::env::var("HOME") {
        Ok(h) if !h.is_empty() => format!("{h}/.local/share/ragmesh"),
        _ => ".local/share/ragmesh".into(),
    }
}

/// Opens the configured backend: the embedded engine under
/// `<data-dir>/collections`, or a connection to Qdrant.
pub async fn open(args: &StoreArgs) -> anyhow::Result<Retriever> {
    let backend: Arc<dyn Backend> = match args.backend {
        BackendKind::Edge => {
            let dir = PathBuf::from(&args.data_dir).join("collections");
            let edge = tokio::task::spawn_blocking(move || EdgeBackend::open(dir))
                .await
                .context("storage start-up task")?
                .with_context(|| format!("cannot open data directory {}", args.data_dir))?;
            Arc::new(edge)
        }
        BackendKind::Qdrant => Arc::new(
            QdrantBackend::connect(QdrantConfig {
                url: args.qdrant_url.clone(),
                api_key: args.qdrant_api_key.clone(),
                prefix: args.qdrant_prefix.clone(),
                shard_number: args.qdrant_shards,
                replication_factor: args.qdrant_replication,
                write_consistency_factor: args.qdrant_write_consistency,
                ..QdrantConfig::default()
            })
            .await
            .context("cannot reach Qdrant")?,
        ),
    };
    Ok(Retriever::new(backend))
}

/// Opens the object store (files and vector-store records): under
/// `--objects-dir`, else `<data-dir>/objects` with the edge backend; the
/// qdrant backend without `--objects-dir` has none ([`NoObjects`]).
pub async fn open_objects(args: &StoreArgs) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let dir = match (&args.objects_dir, args.backend) {
        (Some(d), _) => PathBuf::from(d),
        (None, BackendKind::Edge) => PathBuf::from(&args.data_dir).join("objects"),
        (None, BackendKind::Qdrant) => return Ok(Arc::new(NoObjects)),
    };
    let store = tokio::task::spawn_blocking(move || {
        DiskObjects::open(&dir)
            .with_context(|| format!("cannot open object store {}", dir.display()))
    })
    .await
    .context("object store start-up task")??;
    Ok(Arc::new(store))
}

/// The binary's `main` (the gateway's multi-call binary runs it too,
/// when called by this binary's name).
pub fn main() -> ! {
    use clap::Parser;
    let args = Args::parse();
    // acknowledged writes are already durable; a write still in
    // progress gets a moment, not an unbounded wait
    ragmesh_telemetry::service_main(
        "ragmesh-retriever",
        args.log.log_format,
        0,
        std::time::Duration::from_secs(5),
        move || run(args),
    )
}

/// Opens the data directory, binds both listeners and serves until
/// SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let lifecycle = args.drain.lifecycle();
    lifecycle.drain_on_signals();
    // the recorder first: the core describes its metrics as it is made
    if ragmesh_telemetry::prometheus(&[]).is_none() {
        tracing::warn!("another metrics recorder is installed; /metrics will be empty");
    }
    let Some(core) = lifecycle.unless_drained(open(&args.store)).await else {
        return Ok(());
    };
    let core = core?;
    let objects = open_objects(&args.store).await?;

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
        .set_serving::<ragmesh_proto::v1::retriever_server::RetrieverServer<RetrieverGrpc>>()
        .await;
    let grpc = tonic::transport::Server::builder()
        .trace_fn(ragmesh_telemetry::otel::grpc_server_span)
        .add_service(health_svc)
        .add_service(RetrieverGrpc::server(core, args.max_message_bytes))
        .add_service(ObjectsGrpc::server(objects, args.max_message_bytes))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            ragmesh_telemetry::not_serving_on_drain::<
                ragmesh_proto::v1::retriever_server::RetrieverServer<RetrieverGrpc>,
            >(lifecycle.clone(), health),
        );
    tracing::info!(backend = ?args.store.backend, data_dir = %args.store.data_dir, %grpc_addr, %http_addr, "retriever serving");
    // Parseable by scripts and tests (they start us on port 0).
    // ready before the line scripts wait for (the listeners are bound)
    lifecycle.set_ready();
    println!("ragmesh-retriever listening http={http_addr} grpc={grpc_addr}");
    ragmesh_telemetry::serve_leaf(&lifecycle, http, grpc)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RetrieverError;
    use crate::objects::Expect;
    use clap::Parser;

    #[tokio::test]
    async fn qdrant_keeps_objects_only_where_told() -> anyhow::Result<()> {
        let put = |s: Arc<dyn ObjectStore>| async move {
            s.put_record("t", "file", "f1", serde_json::json!(1), Expect::Any)
                .await
        };
        // no volume named: every call says why, nothing is written anywhere
        let args = Args::try_parse_from(["ragmesh-retriever", "--backend", "qdrant"])?;
        let r = put(open_objects(&args.store).await?).await;
        assert!(
            matches!(&r, Err(RetrieverError::Unavailable(m)) if m.contains("--objects-dir")),
            "{r:?}"
        );
        // --objects-dir: a store on that folder, whichever backend
        let dir = tempfile::tempdir()?;
        let path = dir.path().display().to_string();
        let args = Args::try_parse_from([
            "ragmesh-retriever",
            "--backend",
            "qdrant",
            "--objects-dir",
            &path,
        ])?;
        assert_eq!(put(open_objects(&args.store).await?).await?, 1);
        assert!(dir.path().join("records").join("records.jsonl").exists());
        Ok(())
    }
}
