//! The HTTP listener: hyper's connection builder driven by hand instead of
//! `axum::serve`, for the limits a gateway facing the internet needs.
//!
//! - **Header timeout** (`--http-header-timeout-s`): a connection must send
//!   a whole request head within it. hyper starts this clock whenever it
//!   waits for a request head, so it bounds slow-header clients *and* idle
//!   keep-alive connections (an idle connection is one whose next head has
//!   not arrived): there is one timer in hyper for both, so one flag.
//! - **Connection cap** (`--max-connections`): past it a new connection
//!   gets an immediate `503` with `Retry-After` and is closed, so the
//!   kernel's backlog never hides a queue and health probes get an answer.
//!   hyper-util's protocol detection (HTTP/1 or HTTP/2 prior knowledge)
//!   reads before hyper's timer runs, so the first bytes are awaited here,
//!   under the same timeout: a connection that never speaks is closed too.
//! - Body reads have their own timeout in [`crate::body`].
//!
//! Shutdown (SIGINT/SIGTERM) stops accepting, then lets open connections
//! finish their requests.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// What a connection past the cap reads before it is closed.
fn refusal() -> Vec<u8> {
    let body = r#"{"error":{"message":"the gateway has its maximum of open connections; retry shortly","type":"server_error","param":null,"code":"too_many_connections"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Whether the connection sends enough to tell its protocol within
/// `within`: any byte that departs from the HTTP/2 preface, or the whole
/// preface. Peeks, so hyper still reads everything.
async fn speaks_in_time(tcp: &tokio::net::TcpStream, within: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let wait = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            match tcp.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == PREFACE.len() || buf[..n] != PREFACE[..n] => return true,
                // part of an HTTP/2 preface: peek again shortly (peek
                // returns at once while those bytes are unread)
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(within, wait).await.unwrap_or(false)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let refusal: Arc<[u8]> = refusal().into();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // out of file descriptors and the like: back off, go on
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // no Nagle delay: SSE chunks and small JSON answers go out at once
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
            let refusal = refusal.clone();
            tokio::spawn(async move {
                let mut tcp = tcp;
                let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&refusal)).await;
                let _ = tcp.shutdown().await;
            });
            continue;
        };
        let (builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            if !speaks_in_time(&tcp, limits.header_timeout).await {
                return; // dropped: closed without a word, as hyper would
            }
            let service = TowerToHyperService::new(app);
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .into_owned();
            let _ = watcher.watch(conn).await; // a client's broken connection is not our error
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
