//! Turning the runner's event stream into OpenAI responses: one JSON body
//! (non-streaming) or server-sent events (`data: {chunk}` … `data: [DONE]`)
//! for chat and text completions alike.

use std::convert::Infallible;
use std::time::Instant;

use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use ragmesh_llm_runner::generator::TokenLogprob;
use ragmesh_llm_runner::{Event, FinishReason};
use serde_json::{Value, json};

use crate::error::{ApiResult, from_gen};
use crate::metrics as m;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// What every chunk of one response shares.
#[derive(Debug, Clone)]
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub kind: Kind,
    pub include_usage: bool,
    pub logprobs: bool,
    /// `citations` (chat: placed in the message / the final chunk) and
    /// `rag` (top level), when retrieval ran.
    pub citations: Option<Value>,
    pub rag: Option<Value>,
    pub started: Instant,
}

/// An [`crate::answer::Answer`] as the response of one front door: SSE
/// when `params.stream` (a refusal before the first token is still an
/// HTTP status), else one JSON body.
pub async fn respond(
    st: &crate::state::Inner,
    a: crate::answer::Answer,
    kind: Kind,
    model: String,
    params: &super::params::GenParams,
    started: Instant,
) -> crate::error::ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let meta = Meta {
        id: a.id,
        created: crate::state::unix_now(),
        model,
        kind,
        include_usage: params.include_usage,
        logprobs: params.logprobs,
        citations: a.citations,
        rag: a.rag,
        started,
    };
    if params.stream {
        let events = first_or_error(a.events).await?;
        Ok(sse(events, meta, &st.lifecycle))
    } else {
        Ok(axum::Json(collect(a.events, meta).await?).into_response())
    }
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn chat_logprobs(lps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = lps
        .iter()
        .map(|t| {
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|(_, text, lp)| json!({"token": text, "logprob": lp, "bytes": text.as_bytes()}))
                .collect();
            json!({"token": t.text, "logprob": t.logprob, "bytes": t.text.as_bytes(), "top_logprobs": top})
        })
        .collect();
    // OpenAI's schema requires `refusal` beside `content` (null: the
    // runner never refuses)
    json!({ "content": content, "refusal": null })
}

/// Legacy completions logprobs, with offsets counted from `offset`.
fn completion_logprobs(lps: &[TokenLogprob], mut offset: usize) -> Value {
    let mut tokens = Vec::new();
    let mut token_lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for t in lps {
        tokens.push(json!(t.text));
        token_lps.push(json!(t.logprob));
        let top: serde_json::Map<String, Value> = t
            .top
            .iter()
            .map(|(_, text, lp)| (text.clone(), json!(lp)))
            .collect();
        tops.push(Value::Object(top));
        offsets.push(json!(offset));
        offset += t.text.len();
    }
    json!({"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets})
}

/// The whole answer, for non-streaming responses.
pub async fn collect(mut events: BoxStream<'static, Event>, meta: Meta) -> ApiResult<Value> {
    let mut text = String::new();
    let mut lps = Vec::new();
    let mut first = true;
    while let Some(ev) = events.next().await {
        match ev {
            Event::Delta {
                text: t, logprobs, ..
            } => {
                if first {
                    first = false;
                    m::first_token(&meta);
                }
                text.push_str(&t);
                lps.extend(logprobs);
            }
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                m::finished(&meta, prompt_tokens, completion_tokens);
                return Ok(full_body(
                    &meta,
                    text,
                    &lps,
                    finish,
                    prompt_tokens,
                    completion_tokens,
                ));
            }
            Event::Error(e) => return Err(from_gen(e)),
        }
    }
    Err(crate::error::internal(
        "the runner ended the stream without finishing",
    ))
}

fn full_body(
    meta: &Meta,
    text: String,
    lps: &[TokenLogprob],
    finish: FinishReason,
    prompt: usize,
    completion: usize,
) -> Value {
    let logprobs = match (meta.logprobs, meta.kind) {
        (false, _) => Value::Null,
        (true, Kind::Chat) => chat_logprobs(lps),
        (true, Kind::Completion) => completion_logprobs(lps, 0),
    };
    let mut body = match meta.kind {
        Kind::Chat => {
            let mut message = json!({"role": "assistant", "content": text, "refusal": null});
            if let Some(c) = &meta.citations {
                message["citations"] = c.clone();
            }
            json!({
                "id": meta.id, "object": "chat.completion", "created": meta.created,
                "model": meta.model, "system_fingerprint": null,
                "choices": [{"index": 0, "message": message, "logprobs": logprobs,
                             "finish_reason": finish_name(finish)}],
                "usage": usage(prompt, completion),
            })
        }
        Kind::Completion => json!({
            "id": meta.id, "object": "text_completion", "created": meta.created,
            "model": meta.model, "system_fingerprint": null,
            "choices": [{"index": 0, "text": text, "logprobs": logprobs,
                         "finish_reason": finish_name(finish)}],
            "usage": usage(prompt, completion),
        }),
    };
    if let Some(r) = &meta.rag {
        body["rag"] = r.clone();
    }
    body
}

fn chunk(meta: &Meta, choice: Value) -> Value {
    let object = match meta.kind {
        Kind::Chat => "chat.completion.chunk",
        Kind::Completion => "text_completion",
    };
    let mut c = json!({
        "id": meta.id, "object": object, "created": meta.created, "model": meta.model,
        "system_fingerprint": null, "choices": [choice],
    });
    if meta.include_usage {
        c["usage"] = Value::Null;
    }
    c
}

fn data(v: &Value) -> Result<Sse, Infallible> {
    Ok(Sse::default().data(v.to_string()))
}

/// Waits for the first event, so a request refused before its first token
/// (a queue deadline, an engine error) is answered with its HTTP status
/// (429 with `Retry-After`, …) rather than a 200 stream holding an error.
/// The stream's headers go out with the first token.
pub async fn first_or_error(
    mut events: BoxStream<'static, Event>,
) -> ApiResult<BoxStream<'static, Event>> {
    match events.next().await {
        Some(Event::Error(e)) => Err(from_gen(e)),
        Some(first) => Ok(futures::stream::iter([first]).chain(events).boxed()),
        None => Ok(events),
    }
}

/// Server-sent events: role first (chat; with retrieval it carries
/// `citations` and `rag` already), then one chunk per delta, then the chunk
/// carrying `finish_reason` (and again `citations` and `rag`), then usage
/// if asked, then `[DONE]`. An error after the stream
/// started is sent as a `data: {"error": ...}` event before `[DONE]`; so
/// is the end of a shutdown's grace period, so a client never reads a
/// truncated stream.
pub fn sse(
    events: BoxStream<'static, Event>,
    meta: Meta,
    lifecycle: &ragmesh_telemetry::Lifecycle,
) -> Response {
    axum::response::Sse::new(sse_events(events, meta, lifecycle.clone()))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn error_event(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Result<Sse, Infallible> {
    data(&json!({"error": {"message": message, "type": kind, "param": param, "code": code}}))
}

fn sse_events(
    mut events: BoxStream<'static, Event>,
    meta: Meta,
    lifecycle: ragmesh_telemetry::Lifecycle,
) -> impl Stream<Item = Result<Sse, Infallible>> + Send + 'static {
    // The stream owns the runner's event stream: when the client
    // disconnects, axum drops this stream, which drops the runner's
    // receiver, which cancels the request at the next engine step.
    async_stream::stream! {
        if meta.kind == Kind::Chat {
            let mut role = chunk(
                &meta,
                json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
            );
            // sources are known before the first token: send them early
            // too, so a UI can show them while the answer streams
            if let Some(c) = &meta.citations {
                role["citations"] = c.clone();
            }
            if let Some(r) = &meta.rag {
                role["rag"] = r.clone();
            }
            yield data(&role);
        }
        let mut first = true;
        let mut offset = 0usize;
        let cut = lifecycle.deadline();
        tokio::pin!(cut);
        loop {
            let next = tokio::select! {
                ev = events.next() => Some(ev),
                () = &mut cut => None,
            };
            let Some(next) = next else {
                yield error_event(
                    "the server is shutting down and its grace period is over; retry the request",
                    "server_error",
                    None,
                    Some("server_shutting_down"),
                );
                break;
            };
            let Some(ev) = next else { break };
            match ev {
                Event::Delta { text, logprobs, .. } => {
                    if first {
                        first = false;
                        m::first_token(&meta);
                    }
                    if text.is_empty() && logprobs.is_empty() {
                        continue;
                    }
                    let lp = match (meta.logprobs, meta.kind) {
                        (false, _) => Value::Null,
                        (true, Kind::Chat) => chat_logprobs(&logprobs),
                        (true, Kind::Completion) => completion_logprobs(&logprobs, offset),
                    };
                    offset += text.len();
                    let choice = match meta.kind {
                        Kind::Chat => json!({"index": 0, "delta": {"content": text}, "logprobs": lp, "finish_reason": null}),
                        Kind::Completion => json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": null}),
                    };
                    yield data(&chunk(&meta, choice));
                }
                Event::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    m::finished(&meta, prompt_tokens, completion_tokens);
                    let choice = match meta.kind {
                        Kind::Chat => json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_name(finish)}),
                        Kind::Completion => json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish_name(finish)}),
                    };
                    let mut last = chunk(&meta, choice);
                    if let Some(c) = &meta.citations {
                        last["citations"] = c.clone();
                    }
                    if let Some(r) = &meta.rag {
                        last["rag"] = r.clone();
                    }
                    yield data(&last);
                    if meta.include_usage {
                        let mut u = chunk(&meta, Value::Null);
                        u["choices"] = json!([]);
                        u["usage"] = usage(prompt_tokens, completion_tokens);
                        yield data(&u);
                    }
                    break;
                }
                Event::Error(e) => {
                    let err = from_gen(e);
                    yield error_event(&err.message, err.kind, err.param, err.code);
                    break;
                }
            }
        }
        yield Ok(Sse::default().data("[DONE]"));
    }
}
