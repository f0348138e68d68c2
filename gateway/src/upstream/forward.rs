//! One proxied call: attempts over the targets, then the pass-through.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::direct::{DirectPool, Failed};
use super::{COOLDOWN, Target, Upstream, error_chain, now_ms};
use crate::error::{ApiResult, timeout, unavailable};
use crate::metrics as m;
use ragmesh_telemetry::otel::genai;
use tracing::Instrument;

/// Why an attempt did not produce an answer to pass through.
enum Failure {
    /// No HTTP answer: connect error, reset, timeout.
    Transport { timed_out: bool, message: String },
    /// An HTTP answer worth retrying elsewhere (kept to return if last).
    Status(Response),
}

fn retryable(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT
        || s == StatusCode::CONFLICT
        || s == StatusCode::TOO_MANY_REQUESTS
        || s.is_server_error()
}

/// The answer's headers worth keeping (framing headers are axum's).
fn copy_headers(from: &reqwest::header::HeaderMap, to: &mut axum::http::HeaderMap) {
    for name in [
        header::CONTENT_TYPE,
        header::RETRY_AFTER,
        header::CACHE_CONTROL,
    ] {
        if let Some(v) = from.get(name.as_str())
            && let Ok(v) = HeaderValue::from_bytes(v.as_bytes())
        {
            to.insert(name, v);
        }
    }
}

/// Which OpenAI endpoint a proxied call goes to.
#[derive(Clone, Copy)]
pub enum Endpoint {
    Chat,
    Completions,
    Responses,
}

/// Proxies `body` to the endpoint of the upstream's targets.
pub async fn forward(
    up: &Upstream,
    path: Endpoint,
    body: &crate::body::JsonBody,
    stream: bool,
    request_id: &str,
) -> ApiResult<Response> {
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut last: Option<Failure> = None;
    // healthy targets in configured order, then those cooling down
    let now = now_ms();
    let mut order: Vec<(usize, &Target)> = up.targets.iter().enumerate().collect();
    order.sort_by_key(|(i, t)| (t.cooling_until.load(Relaxed) > now, *i));
    for (ti, t) in order {
        // the client's body as sent (unknown members included), with the
        // target's model name
        let payload = Bytes::from(body.with_member("model", &Value::String(t.model.clone())));
        for attempt in 0..=up.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
            }
            let span = attempt_span(t, path, attempt, ti > 0, failures.last());
            let out = attempt_once(up, t, path, payload.clone(), stream, request_id)
                .instrument(span.clone())
                .await;
            if let Err(f) = &out {
                genai::error(
                    &span,
                    match f {
                        Failure::Transport {
                            timed_out: true, ..
                        } => "timeout".to_owned(),
                        Failure::Transport { .. } => "transport".to_owned(),
                        Failure::Status(r) => r.status().as_u16().to_string(),
                    },
                );
            }
            match out {
                Ok(resp) => {
                    t.cooling_until.store(0, Relaxed);
                    let outcome = if failures.is_empty() {
                        "ok"
                    } else {
                        "ok_after_retry"
                    };
                    metrics::counter!(m::UPSTREAM, "model" => up.name.clone(), "outcome" => outcome)
                        .increment(1);
                    if ti > 0 {
                        tracing::debug!(model = %up.name, target = %t.base, "served by a fallback upstream");
                    }
                    return Ok(resp);
                }
                Err(f) => {
                    let what = match &f {
                        Failure::Transport { message, .. } => message.clone(),
                        Failure::Status(r) => format!("HTTP {}", r.status().as_u16()),
                    };
                    tracing::warn!(model = %up.name, target = %t.base, attempt, error = %what, "upstream attempt failed");
                    failures.push(format!("{}: {what}", t.base));
                    last = Some(f);
                }
            }
        }
        t.cooling_until
            .store(now_ms() + COOLDOWN.as_millis() as u64, Relaxed);
    }
    metrics::counter!(m::UPSTREAM, "model" => up.name.clone(), "outcome" => "failed").increment(1);
    let summary = format!(
        "every upstream of '{}' failed after {} ms: {}",
        up.name,
        started.elapsed().as_millis(),
        failures.join("; ")
    );
    match last {
        Some(Failure::Status(r)) => Ok(r),
        Some(Failure::Transport {
            timed_out: true, ..
        }) => Err(timeout(summary)),
        // every target now cools down for COOLDOWN
        _ => Err(unavailable(summary, COOLDOWN)),
    }
}

/// One attempt's client span: `chat <upstream model>` to the target's
/// host, with the attempt number, whether it is a fallback target, and
/// why the previous attempt failed (`upstream.retry_reason`).
fn attempt_span(
    t: &Target,
    path: Endpoint,
    attempt: u32,
    fallback: bool,
    previous: Option<&String>,
) -> tracing::Span {
    let op = match path {
        Endpoint::Chat | Endpoint::Responses => "chat",
        Endpoint::Completions => "text_completion",
    };
    let span = tracing::info_span!(
        "upstream_attempt",
        otel.name = %format!("{op} {}", t.model),
        otel.kind = "client",
    );
    genai::set(&span, genai::OPERATION, op);
    genai::set(&span, genai::PROVIDER, "openai");
    genai::set(&span, genai::REQUEST_MODEL, t.model.clone());
    if let Some(h) = t.chat_url.host_str() {
        genai::set(&span, genai::SERVER_ADDRESS, h.to_owned());
    }
    if let Some(p) = t.chat_url.port_or_known_default() {
        genai::set(&span, genai::SERVER_PORT, i64::from(p));
    }
    genai::set(&span, "upstream.attempt", i64::from(attempt));
    genai::set(&span, "upstream.fallback", fallback);
    if let Some(why) = previous {
        genai::set(&span, "upstream.retry_reason", why.clone());
    }
    span
}

/// `Ok` is an answer to give the client (success, or a 4xx that is the
/// client's own fault); `Err` lets the caller try again.
async fn attempt_once(
    up: &Upstream,
    t: &Target,
    path: Endpoint,
    payload: Bytes,
    stream: bool,
    request_id: &str,
) -> Result<Response, Failure> {
    let deadline = Instant::now() + up.timeout;
    if let (Some(pool), false) = (&t.direct, stream) {
        return attempt_direct(up, t, pool, path, payload, request_id).await;
    }
    let mut req = up
        .client
        .post(match path {
            Endpoint::Chat => t.chat_url.clone(),
            Endpoint::Completions => t.completions_url.clone(),
            Endpoint::Responses => t.responses_url.clone(),
        })
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", request_id)
        .headers(trace_headers())
        .body(payload);
    if let Some(k) = &t.api_key {
        req = req.bearer_auth(k);
    }
    let resp = match tokio::time::timeout(up.timeout, req.send()).await {
        Err(_) => {
            return Err(Failure::Transport {
                timed_out: true,
                message: format!("no answer within {} s", up.timeout.as_secs_f64()),
            });
        }
        Ok(Err(e)) => {
            return Err(Failure::Transport {
                timed_out: e.is_timeout(),
                message: error_chain(&e),
            });
        }
        Ok(Ok(r)) => r,
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = axum::http::HeaderMap::new();
    copy_headers(resp.headers(), &mut headers);
    if status.is_success() && stream {
        let mut out = Response::new(Body::from_stream(relay(resp, up.timeout)));
        *out.headers_mut() = headers;
        return Ok(out);
    }
    // a whole answer: read it within the same deadline
    let left = deadline.saturating_duration_since(Instant::now());
    let bytes = match tokio::time::timeout(left, resp.bytes()).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Err(Failure::Transport {
                timed_out: e.is_timeout(),
                message: error_chain(&e),
            });
        }
        Err(_) => {
            return Err(Failure::Transport {
                timed_out: true,
                message: format!("answer not complete within {} s", up.timeout.as_secs_f64()),
            });
        }
    };
    let mut out = (status, bytes).into_response();
    *out.headers_mut() = headers;
    if status.is_success() || !retryable(status) {
        Ok(out)
    } else {
        Err(Failure::Status(out))
    }
}

/// `traceparent`/`tracestate` of the current span (the attempt's).
fn trace_headers() -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    ragmesh_telemetry::otel::inject_http(&mut h);
    h
}

/// `attempt_once` for a whole answer from an `http://` target, on the
/// in-task client.
async fn attempt_direct(
    up: &Upstream,
    t: &Target,
    pool: &DirectPool,
    path: Endpoint,
    payload: Bytes,
    request_id: &str,
) -> Result<Response, Failure> {
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    ragmesh_telemetry::otel::inject_http(&mut headers);
    if let Some(k) = &t.api_key
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {k}"))
    {
        headers.insert(header::AUTHORIZATION, v);
    }
    let uri = match path {
        Endpoint::Chat => &t.chat_path,
        Endpoint::Completions => &t.completions_path,
        Endpoint::Responses => &t.responses_path,
    };
    let answer = match tokio::time::timeout(up.timeout, pool.post(uri, headers, payload)).await {
        Err(_) => {
            return Err(Failure::Transport {
                timed_out: true,
                message: format!("no answer within {} s", up.timeout.as_secs_f64()),
            });
        }
        Ok(Err(Failed(message))) => {
            return Err(Failure::Transport {
                timed_out: false,
                message,
            });
        }
        Ok(Ok(a)) => a,
    };
    let mut out = (answer.status, answer.body).into_response();
    copy_headers(&answer.headers, out.headers_mut());
    if answer.status.is_success() || !retryable(answer.status) {
        Ok(out)
    } else {
        Err(Failure::Status(out))
    }
}

/// The upstream's stream, chunk by chunk; a failure or a silence longer
/// than `idle` ends it with an SSE error event (the status is already
/// sent, so the event is how the client learns).
fn relay(
    resp: reqwest::Response,
    idle: Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let mut chunks = resp.bytes_stream();
    async_stream::stream! {
        loop {
            match tokio::time::timeout(idle, chunks.next()).await {
                Ok(Some(Ok(b))) => yield Ok(b),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    yield Ok(error_event(&format!("upstream stream failed: {}", error_chain(&e))));
                    break;
                }
                Err(_) => {
                    yield Ok(error_event(&format!(
                        "upstream sent nothing for {} s",
                        idle.as_secs_f64()
                    )));
                    break;
                }
            }
        }
    }
}

fn error_event(message: &str) -> Bytes {
    let e = json!({"error": {"message": message, "type": "server_error", "param": null, "code": "upstream_stream_failed"}});
    Bytes::from(format!("\n\ndata: {e}\n\n"))
}
