//! What every ragmesh binary shares around its service: log set-up, the
//! process-wide Prometheus recorder, the `/health` + `/metrics` routes, and
//! graceful shutdown on SIGINT/SIGTERM.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The log filter when `RUST_LOG` is unset. qdrant-edge 0.7 warns
/// "Feature flags not initialized!" on every search and
/// "MULTI_MMAP_SUPPORT_CHECK_RESULT should be initialized" when a
/// collection opens: both globals are set by the Qdrant server's start-up,
/// which the embedded engine has not got, and the crate does not export
/// their initialisers (the defaults it falls back to are the ones we want).
/// Those two targets are held to errors. The engine's INFO lines (a WAL
/// opened, with its path) are below what an operator needs per request;
/// its warnings and errors still show.
pub const DEFAULT_LOG_FILTER: &str =
    "info,qdrant_edge=warn,qdrant_edge::common::flags=error,qdrant_edge::common::mmap::ops=error";

/// Logs to stderr, filtered by `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]);
/// colours only on a terminal, so log files and collectors get plain text.
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets for every `*_seconds` histogram.
const LATENCY: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder on first call, with
/// histogram buckets for `*_seconds` metrics plus `extra` (exact names);
/// later calls return the same handle. `None` if another recorder was
/// installed first.
pub fn prometheus(extra: &[(&str, &[f64])]) -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let mut b = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY)
                .ok()?;
            for (name, buckets) in extra {
                b = b
                    .set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
                    .ok()?;
            }
            b.install_recorder().ok()
        })
        .clone()
}

/// `GET /health` (liveness) and `GET /metrics` (Prometheus text format).
pub fn ops_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
}

async fn metrics_text() -> axum::response::Response {
    match HANDLE.get().cloned().flatten() {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder in this process").into_response(),
    }
}

/// Resolves on SIGINT or SIGTERM (Kubernetes stops pods with SIGTERM).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
