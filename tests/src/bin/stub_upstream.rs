//! `ragmesh-stub-upstream`: a real HTTP server speaking just enough of the
//! OpenAI API to stand for an external upstream (vLLM, Ollama, a hosted
//! API) in the routing tests, and as the zero-work upstream of the gateway
//! overhead benchmark. It answers a fixed completion naming itself.
//!
//! Flags: `--port P` (0: any), `--name N` (in every answer),
//! `--status S` (answer every call with this HTTP error),
//! `--delay-ms D` (before the headers), `--chunks K` (SSE chunks),
//! `--die-after K` (a stream breaks off after K chunks).
//! `GET /stats` returns the calls seen and the last one's body, auth,
//! request id and `traceparent`, so tests can check what the gateway
//! forwarded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default, Clone)]
struct Opts {
    name: String,
    status: Option<u16>,
    delay: Duration,
    chunks: usize,
    die_after: Option<usize>,
}

#[derive(Default)]
struct Seen {
    calls: u64,
    last_body: Value,
    last_auth: Option<String>,
    last_request_id: Option<String>,
    last_traceparent: Option<String>,
}

struct St {
    opts: Opts,
    seen: Mutex<Seen>,
    /// The fixed non-streaming answer, encoded once (zero work per call).
    chat_json: Bytes,
    completion_json: Bytes,
    responses_json: Bytes,
}

fn parse() -> Result<(u16, Opts), String> {
    let mut port = 0u16;
    let mut o = Opts {
        name: "stub".into(),
        chunks: 3,
        ..Default::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: '{v}' is not a number"))
        };
        match flag.as_str() {
            "--port" => port = num(val()?)? as u16,
            "--name" => o.name = val()?,
            "--status" => o.status = Some(num(val()?)? as u16),
            "--delay-ms" => o.delay = Duration::from_millis(num(val()?)?),
            "--chunks" => o.chunks = num(val()?)? as usize,
            "--die-after" => o.die_after = Some(num(val()?)? as usize),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok((port, o))
}

fn text(o: &Opts) -> String {
    format!("Hello from {}.", o.name)
}

async fn stats(State(st): State<Arc<St>>) -> Response {
    let s = st.seen.lock().unwrap_or_else(|p| p.into_inner());
    axum::Json(json!({
        "calls": s.calls,
        "last_body": s.last_body,
        "last_auth": s.last_auth,
        "last_request_id": s.last_request_id,
        "last_traceparent": s.last_traceparent,
    }))
    .into_response()
}

/// Which OpenAI endpoint a call came to.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    Chat,
    Completion,
    Responses,
}

async fn answer(st: Arc<St>, headers: HeaderMap, body: Bytes, api: Api) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    {
        let mut s = st.seen.lock().unwrap_or_else(|p| p.into_inner());
        s.calls += 1;
        let h = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        s.last_auth = h("authorization");
        s.last_request_id = h("x-request-id");
        s.last_traceparent = h("traceparent");
        s.last_body = parsed.clone();
    }
    if !st.opts.delay.is_zero() {
        tokio::time::sleep(st.opts.delay).await;
    }
    if let Some(code) = st.opts.status {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let e = json!({"error": {"message": format!("{} says {code}", st.opts.name), "type": "stub_error", "param": null, "code": null}});
        return (status, [(header::RETRY_AFTER, "7")], axum::Json(e)).into_response();
    }
    if parsed.get("stream").and_then(Value::as_bool) != Some(true) {
        let bytes = match api {
            Api::Chat => st.chat_json.clone(),
            Api::Completion => st.completion_json.clone(),
            Api::Responses => st.responses_json.clone(),
        };
        return ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    }
    let words: Vec<String> = text(&st.opts)
        .split_inclusive(' ')
        .map(str::to_owned)
        .collect();
    let n = st.opts.chunks.max(1);
    let pieces: Vec<String> = (0..n)
        .map(|i| {
            let lo = i * words.len() / n;
            let hi = (i + 1) * words.len() / n;
            words[lo..hi].concat()
        })
        .collect();
    let die_after = st.opts.die_after;
    let stream = async_stream::stream! {
        for (i, p) in pieces.into_iter().enumerate() {
            if die_after == Some(i) {
                yield Err(std::io::Error::other("stub dies mid-stream"));
                return;
            }
            let event = match api {
                Api::Chat => format!("data: {}\n\n", json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})),
                Api::Completion => format!("data: {}\n\n", json!({"object": "text_completion", "choices": [{"index": 0, "text": p, "finish_reason": null}]})),
                Api::Responses => format!("event: response.output_text.delta\ndata: {}\n\n", json!({"type": "response.output_text.delta", "sequence_number": i, "item_id": "msg_stub", "output_index": 0, "content_index": 0, "delta": p, "logprobs": []})),
            };
            yield Ok::<_, std::io::Error>(Bytes::from(event));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // the Responses stream ends with its last event, the others with [DONE]
        if api != Api::Responses {
            yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
        }
    };
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[tokio::main]
async fn main() {
    let (port, opts) = match parse() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("ragmesh-stub-upstream: error: {e}");
            std::process::exit(2);
        }
    };
    let t = text(&opts);
    let chat_json = json!({
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": opts.name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    });
    let completion_json = json!({
        "id": "cmpl-stub", "object": "text_completion", "created": 0, "model": opts.name,
        "choices": [{"index": 0, "text": t, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    });
    let responses_json = json!({
        "id": "resp_stub", "object": "response", "created_at": 0, "status": "completed", "model": opts.name,
        "output": [{"type": "message", "id": "msg_stub", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": t, "annotations": [], "logprobs": []}]}],
        "usage": {"input_tokens": 5, "output_tokens": 4, "total_tokens": 9}
    });
    let st = Arc::new(St {
        responses_json: Bytes::from(responses_json.to_string()),
        opts,
        seen: Mutex::new(Seen::default()),
        chat_json: Bytes::from(chat_json.to_string()),
        completion_json: Bytes::from(completion_json.to_string()),
    });
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|State(st): State<Arc<St>>, h: HeaderMap, b: Bytes| answer(st, h, b, Api::Chat)),
        )
        .route(
            "/v1/completions",
            post(|State(st): State<Arc<St>>, h: HeaderMap, b: Bytes| {
                answer(st, h, b, Api::Completion)
            }),
        )
        .route(
            "/v1/responses",
            post(|State(st): State<Arc<St>>, h: HeaderMap, b: Bytes| {
                answer(st, h, b, Api::Responses)
            }),
        )
        .route("/stats", get(stats))
        .with_state(st);
    let listener =
        match tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ragmesh-stub-upstream: error: cannot bind port {port}: {e}");
                std::process::exit(1);
            }
        };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("ragmesh-stub-upstream listening http={addr}");
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("ragmesh-stub-upstream: error: {e}");
        std::process::exit(1);
    }
}
