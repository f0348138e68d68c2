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

use super::wire::{
    AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, ChatLogprobs, ChunkChoice, Completion,
    CompletionChoice, CompletionLogprobs, Delta, FunctionCall, FunctionChunk, TokenLp,
    ToolCallChunk, ToolCallOut, Usage,
};
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

/// How a response is sent, from the request's generation fields.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
}

impl Format {
    pub fn of(p: &super::params::GenParams) -> Self {
        Self {
            stream: p.stream,
            include_usage: p.include_usage,
            logprobs: p.logprobs,
        }
    }
}

/// An [`crate::answer::Answer`] as the response of one front door: SSE
/// when `params.stream` (a refusal before the first token is still an
/// HTTP status), else one JSON body.
pub async fn respond(
    st: &crate::state::Inner,
    a: crate::answer::Answer,
    kind: Kind,
    model: String,
    params: Format,
    started: Instant,
) -> crate::error::ApiResult<axum::response::Response> {
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
        collect(a.events, meta).await
    }
}

/// A tool call's id, as OpenAI writes them (`call_` and 24 characters).
fn call_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("call_{}", &u[..24])
}

fn chat_logprobs(lps: &[TokenLogprob]) -> ChatLogprobs<'_> {
    let content = lps
        .iter()
        .map(|t| TokenLp {
            token: &t.text,
            logprob: t.logprob,
            bytes: t.text.as_bytes(),
            top_logprobs: Some(
                t.top
                    .iter()
                    .map(|(_, text, lp)| TokenLp {
                        token: text,
                        logprob: *lp,
                        bytes: text.as_bytes(),
                        top_logprobs: None,
                    })
                    .collect(),
            ),
        })
        .collect();
    // OpenAI's schema requires `refusal` beside `content` (null: the
    // runner never refuses)
    ChatLogprobs {
        content,
        refusal: None,
    }
}

/// Legacy completions logprobs, with offsets counted from `offset`.
fn completion_logprobs(lps: &[TokenLogprob], mut offset: usize) -> CompletionLogprobs<'_> {
    let mut out = CompletionLogprobs {
        tokens: Vec::with_capacity(lps.len()),
        token_logprobs: Vec::with_capacity(lps.len()),
        top_logprobs: Vec::with_capacity(lps.len()),
        text_offset: Vec::with_capacity(lps.len()),
    };
    for t in lps {
        out.tokens.push(&t.text);
        out.token_logprobs.push(t.logprob);
        out.top_logprobs.push(
            t.top
                .iter()
                .map(|(_, text, lp)| (text.clone(), json!(lp)))
                .collect(),
        );
        out.text_offset.push(offset);
        offset += t.text.len();
    }
    out
}

/// The whole answer, for non-streaming responses.
pub async fn collect(mut events: BoxStream<'static, Event>, meta: Meta) -> ApiResult<Response> {
    let mut text = String::new();
    let mut lps = Vec::new();
    let mut calls: Vec<ToolCallOut> = Vec::new();
    let mut first = true;
    while let Some(ev) = events.next().await {
        match ev {
            Event::Delta {
                text: t,
                logprobs,
                tool_calls,
                ..
            } => {
                if first {
                    first = false;
                    m::first_token(&meta);
                }
                text.push_str(&t);
                lps.extend(logprobs);
                for d in tool_calls {
                    // by index (a remote runner's out-of-order or sparse
                    // indices cannot mix calls up; at most 128 calls)
                    let i = d.index as usize;
                    while calls.len() <= i && calls.len() < 128 {
                        calls.push(ToolCallOut {
                            id: call_id(),
                            kind: "function",
                            function: FunctionCall {
                                name: String::new(),
                                arguments: String::new(),
                            },
                        });
                    }
                    if let Some(c) = calls.get_mut(i) {
                        if c.function.name.is_empty() {
                            c.function.name = d.name;
                        }
                        c.function.arguments.push_str(&d.arguments);
                    }
                }
            }
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            } => {
                m::finished(&meta, prompt_tokens, completion_tokens);
                return Ok(full_body(
                    &meta,
                    (text, calls),
                    &lps,
                    finish,
                    Usage::new(prompt_tokens, completion_tokens, cached_tokens),
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
    (text, tool_calls): (String, Vec<ToolCallOut>),
    lps: &[TokenLogprob],
    finish: FinishReason,
    usage: Usage,
) -> Response {
    let finish = finish.as_str();
    match meta.kind {
        Kind::Chat => axum::Json(ChatCompletion {
            id: &meta.id,
            object: "chat.completion",
            created: meta.created,
            model: &meta.model,
            system_fingerprint: None,
            choices: [ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: (tool_calls.is_empty() || !text.is_empty()).then_some(text),
                    tool_calls,
                    refusal: None,
                    citations: meta.citations.as_ref(),
                },
                logprobs: meta.logprobs.then(|| chat_logprobs(lps)),
                finish_reason: finish,
            }],
            usage,
            rag: meta.rag.as_ref(),
        })
        .into_response(),
        Kind::Completion => axum::Json(Completion {
            id: &meta.id,
            object: "text_completion",
            created: meta.created,
            model: &meta.model,
            system_fingerprint: None,
            choices: vec![CompletionChoice {
                index: 0,
                text: &text,
                logprobs: meta.logprobs.then(|| completion_logprobs(lps, 0)),
                finish_reason: Some(finish),
            }],
            usage: Some(Some(usage)),
            rag: meta.rag.as_ref(),
        })
        .into_response(),
    }
}

/// A chat stream chunk with `choices` (empty for the usage chunk).
fn chat_chunk<'a>(meta: &'a Meta, choices: Vec<ChunkChoice<'a>>) -> ChatChunk<'a> {
    ChatChunk {
        id: &meta.id,
        object: "chat.completion.chunk",
        created: meta.created,
        model: &meta.model,
        system_fingerprint: None,
        choices,
        // OpenAI sends `usage: null` on every chunk once usage is asked for
        usage: meta.include_usage.then_some(None),
        citations: None,
        rag: None,
    }
}

/// A legacy completions stream chunk.
fn completion_chunk<'a>(meta: &'a Meta, choices: Vec<CompletionChoice<'a>>) -> Completion<'a> {
    Completion {
        id: &meta.id,
        object: "text_completion",
        created: meta.created,
        model: &meta.model,
        system_fingerprint: None,
        choices,
        usage: meta.include_usage.then_some(None),
        rag: None,
    }
}

fn data(v: &impl serde::Serialize) -> Result<Sse, Infallible> {
    Ok(Sse::default().data(serde_json::to_string(v).unwrap_or_default()))
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

fn error_event(e: &crate::error::ApiError) -> Result<Sse, Infallible> {
    data(&e.to_json())
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
            let mut role = chat_chunk(&meta, vec![ChunkChoice {
                index: 0,
                delta: Delta { role: Some("assistant"), content: Some(""), tool_calls: Vec::new() },
                logprobs: None,
                finish_reason: None,
            }]);
            // sources are known before the first token: send them early
            // too, so a UI can show them while the answer streams
            role.citations = meta.citations.as_ref();
            role.rag = meta.rag.as_ref();
            yield data(&role);
        }
        let mut first = true;
        let mut offset = 0usize;
        // the ids of the calls begun, by index
        let mut call_ids: Vec<String> = Vec::new();
        let cut = lifecycle.deadline();
        tokio::pin!(cut);
        loop {
            let next = tokio::select! {
                ev = events.next() => Some(ev),
                () = &mut cut => None,
            };
            let Some(next) = next else {
                yield error_event(&crate::error::ApiError::Unavailable {
                    message:
                        "the server is shutting down and its grace period is over; retry the request"
                            .into(),
                    code: "server_shutting_down",
                    retry_after: std::time::Duration::from_secs(1),
                });
                break;
            };
            let Some(ev) = next else { break };
            match ev {
                Event::Delta { text, logprobs, tool_calls, .. } => {
                    if first {
                        first = false;
                        m::first_token(&meta);
                    }
                    if text.is_empty() && logprobs.is_empty() && tool_calls.is_empty() {
                        continue;
                    }
                    let opened = call_ids.len();
                    for d in &tool_calls {
                        if d.index as usize >= call_ids.len() {
                            call_ids.push(call_id());
                        }
                    }
                    let calls: Vec<ToolCallChunk<'_>> = tool_calls
                        .iter()
                        .map(|d| {
                            let new = d.index as usize >= opened;
                            ToolCallChunk {
                                index: d.index,
                                id: call_ids.get(d.index as usize).filter(|_| new).map(String::as_str),
                                kind: new.then_some("function"),
                                function: FunctionChunk {
                                    name: new.then_some(d.name.as_str()),
                                    arguments: &d.arguments,
                                },
                            }
                        })
                        .collect();
                    let start = offset;
                    offset += text.len();
                    yield match meta.kind {
                        Kind::Chat => data(&chat_chunk(&meta, vec![ChunkChoice {
                            index: 0,
                            delta: Delta {
                                role: None,
                                content: (!text.is_empty() || calls.is_empty()).then_some(text.as_str()),
                                tool_calls: calls,
                            },
                            logprobs: meta.logprobs.then(|| chat_logprobs(&logprobs)),
                            finish_reason: None,
                        }])),
                        Kind::Completion => data(&completion_chunk(&meta, vec![CompletionChoice {
                            index: 0,
                            text: &text,
                            logprobs: meta.logprobs.then(|| completion_logprobs(&logprobs, start)),
                            finish_reason: None,
                        }])),
                    };
                }
                Event::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                } => {
                    m::finished(&meta, prompt_tokens, completion_tokens);
                    let finish = Some(finish.as_str());
                    let usage = Usage::new(prompt_tokens, completion_tokens, cached_tokens);
                    match meta.kind {
                        Kind::Chat => {
                            let mut last = chat_chunk(&meta, vec![ChunkChoice {
                                index: 0,
                                delta: Delta::default(),
                                logprobs: None,
                                finish_reason: finish,
                            }]);
                            last.citations = meta.citations.as_ref();
                            last.rag = meta.rag.as_ref();
                            yield data(&last);
                            if meta.include_usage {
                                let mut u = chat_chunk(&meta, Vec::new());
                                u.usage = Some(Some(usage));
                                yield data(&u);
                            }
                        }
                        Kind::Completion => {
                            let mut last = completion_chunk(&meta, vec![CompletionChoice {
                                index: 0,
                                text: "",
                                logprobs: None,
                                finish_reason: finish,
                            }]);
                            last.rag = meta.rag.as_ref();
                            yield data(&last);
                            if meta.include_usage {
                                let mut u = completion_chunk(&meta, Vec::new());
                                u.usage = Some(Some(usage));
                                yield data(&u);
                            }
                        }
                    }
                    break;
                }
                Event::Error(e) => {
                    let err = from_gen(e);
                    yield error_event(&err);
                    break;
                }
            }
        }
        yield Ok(Sse::default().data("[DONE]"));
    }
}
