//! What every ragmesh binary shares around its service: logs and traces
//! ([`logs`], [`otel`]), the process-wide Prometheus recorder, the
//! `/health`, `/ready` and `/metrics` routes, and readiness with graceful
//! drain on SIGINT/SIGTERM ([`lifecycle`]).

pub mod lifecycle;
pub mod logs;
pub mod otel;

pub use lifecycle::{DrainArgs, Lifecycle};
pub use logs::{LogArgs, LogFormat};

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

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets for every `*_seconds` histogram without buckets of its
/// own: from 100 µs (an embedded search, a cached embedding) to a minute
/// (a long prompt's first token on a CPU).
const LATENCY: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
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
            let handle = b.install_recorder().ok()?;
            otel::export::describe();
            Some(handle)
        })
        .clone()
}

/// `GET /health` (liveness: 200 while the process serves HTTP, draining
/// included), `GET /ready` (readiness: 200 only when loaded and not
/// draining, else 503) and `GET /metrics` (Prometheus text format).
pub fn ops_router<S: Clone + Send + Sync + 'static>(lifecycle: &Lifecycle) -> Router<S> {
    let lc = lifecycle.clone();
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(move || ready(lc.clone())))
        .route("/metrics", get(metrics_text))
}

async fn ready(lc: Lifecycle) -> axum::response::Response {
    use lifecycle::Phase;
    match lc.phase() {
        Phase::Ready => "ready".into_response(),
        Phase::Loading => (StatusCode::SERVICE_UNAVAILABLE, "loading").into_response(),
        Phase::Draining | Phase::Deadline => {
            (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
        }
    }
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

/// Serves a leaf service: the ops routes on `http` until the process ends
/// (a draining service is alive, just not ready), beside `grpc`, whose
/// shutdown future must be [`Lifecycle::draining`] (or wrap it). Returns
/// once `grpc` has finished its streams or the grace deadline has passed.
pub async fn serve_leaf<E>(
    lifecycle: &Lifecycle,
    http: tokio::net::TcpListener,
    grpc: impl Future<Output = Result<(), E>> + Send + 'static,
) -> Result<(), String>
where
    E: std::fmt::Display + Send + 'static,
{
    let router = ops_router::<()>(lifecycle);
    let http_task = tokio::spawn(async move { axum::serve(http, router).await });
    let grpc_task = tokio::spawn(grpc);
    lifecycle.set_ready();
    tokio::select! {
        g = lifecycle.serve_until_drained(grpc_task, std::time::Duration::ZERO) => match g {
            Some(Ok(Err(e))) => Err(format!("gRPC server: {e}")),
            Some(Err(e)) => Err(format!("gRPC server task: {e}")),
            Some(Ok(Ok(()))) | None => Ok(()),
        },
        h = http_task => match h {
            Ok(Ok(())) => Err("HTTP server stopped".into()),
            Ok(Err(e)) => Err(format!("HTTP server: {e}")),
            Err(e) => Err(format!("HTTP server task: {e}")),
        },
    }
}

/// Bodies an early refusal still reads (and drops) before answering.
pub const DISCARD_UP_TO: u64 = 64 * 1024 * 1024;

/// After a refusal decided from the headers alone (a 413 on
/// `Content-Length`), the client may still be writing its body; closing at
/// once cuts it off mid-write, so it sees a broken pipe and never reads the
/// answer. This reads and drops the body first: up to [`DISCARD_UP_TO`]
/// declared bytes, within `within` (callers give it a few seconds: a client
/// that trickles only holds its own request that long), never for an
/// `Expect: 100-continue` client (it sends nothing until told to) nor on
/// HTTP/2 (a refusal resets one stream, not the connection). Memory stays
/// flat: frames are dropped as they arrive.
pub async fn discard_body(req: axum::extract::Request, within: std::time::Duration) {
    use http_body_util::BodyExt;
    // HTTP/2 resets the one stream, not the connection: nothing to save
    if req.version() == axum::http::Version::HTTP_2 {
        return;
    }
    let h = req.headers();
    let expects = h
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if expects || declared.is_none_or(|n| n > DISCARD_UP_TO) {
        return;
    }
    let mut body = req.into_body();
    let drain = async { while let Some(Ok(_)) = body.frame().await {} };
    let _ = tokio::time::timeout(within, drain).await;
}

/// A service binary's whole `main` after its flags are parsed: logs and
/// traces ([`logs::init`]), a multi-thread runtime (`workers` threads; 0:
/// one per core), `run`, then at most `linger` for blocking work a drain
/// left behind (a deadline may cut a model step short; nothing
/// acknowledged depends on it) and 2 s to export the last spans. An error
/// is one readable line on stderr and exit status 1; success exits 0.
pub fn service_main<E, Fut>(
    name: &str,
    log: LogFormat,
    workers: usize,
    linger: std::time::Duration,
    run: impl FnOnce() -> Fut,
) -> !
where
    E: std::fmt::Display,
    Fut: Future<Output = Result<(), E>>,
{
    let traces = match logs::init(name, log) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            std::process::exit(1);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        rt.worker_threads(workers);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let out = rt.block_on(run());
    rt.shutdown_timeout(linger);
    if let Some(t) = traces {
        t.shutdown(std::time::Duration::from_secs(2));
    }
    match out {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// A gRPC server's shutdown future: once draining, health checks answer
/// NOT_SERVING for service `S` (gateways stop routing here), then the
/// server stops accepting while its calls finish.
pub async fn not_serving_on_drain<S: tonic::server::NamedService>(
    lifecycle: Lifecycle,
    health: tonic_health::server::HealthReporter,
) {
    lifecycle.draining().await;
    health.set_not_serving::<S>().await;
}
