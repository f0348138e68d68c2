//! Request ids: every response carries `x-request-id` (the caller's own
//! when it sent a sane one, else a fresh one), and completion ids are
//! unique per process. The same middleware writes the access log: one
//! INFO line per API request (`/health`, `/ready` and `/metrics`, which
//! probes and scrapers call every few seconds, at DEBUG).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use ragmesh_telemetry::otel::genai;
use tracing::Instrument;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<prefix>-<start time><counter>`, hex: unique within a process, and
/// across restarts (the start time moves).
pub fn new(prefix: &str) -> String {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{start:x}{n:06x}")
}

fn sane(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// The request's id (set by [`middleware`]), for forwarding upstream.
pub fn of(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| new("req"), str::to_owned)
}

pub async fn middleware(mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    // bounded: a path is the caller's to choose
    let path: String = req.uri().path().chars().take(200).collect();
    let id = req
        .headers()
        .get("x-request-id")
        .filter(|v| sane(v))
        .cloned()
        .or_else(|| HeaderValue::from_str(&new("req")).ok());
    if let Some(id) = &id {
        // handlers forward it (upstream calls)
        req.headers_mut().insert("x-request-id", id.clone());
    }
    let rid = id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
    // the server span: a child of the caller's trace when it sent
    // `traceparent`; named by the route template, never the raw path
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "http_request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        request_id = %rid,
        tenant = tracing::field::Empty,
        key_name = tracing::field::Empty,
    );
    ragmesh_telemetry::otel::set_parent_from(&span, req.headers());
    genai::set(&span, "http.request.method", method.to_string());
    genai::set(&span, "http.route", route);
    genai::set(&span, "url.path", path.clone());
    let h = req.headers();
    let has_body = h.contains_key(axum::http::header::TRANSFER_ENCODING)
        || h.get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let mut resp = next.run(req).instrument(span.clone()).await;
    // A refusal may come before the body was read (413 on Content-Length,
    // 401, 415, 429, ...); hyper then closes the connection, and a client
    // that pooled it would send its next request into a closed socket. Say
    // so in the answer.
    if has_body && resp.status().as_u16() >= 400 {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let status = resp.status().as_u16();
    genai::set(&span, "http.response.status_code", i64::from(status));
    if status >= 500 {
        genai::error(&span, status.to_string());
    }
    // streamed answers log when their headers go out (ms = time to headers)
    span.in_scope(|| {
        if matches!(path.as_str(), "/health" | "/ready" | "/metrics") {
            tracing::debug!(%method, %path, status, ms, "request");
        } else {
            tracing::info!(%method, %path, status, ms = (ms * 10.0).round() / 10.0, "request");
        }
    });
    if let Some(id) = id {
        resp.headers_mut().insert("x-request-id", id);
    }
    resp
}
