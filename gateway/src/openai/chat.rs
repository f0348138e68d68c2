//! `POST /v1/chat/completions`: OpenAI chat, with retrieval when the model
//! is a RAG profile or the request carries a `rag` object.
//!
//! Extensions (documented in the README): the assistant message and the
//! final stream chunk carry `citations` (the chunks placed in the prompt:
//! `index` as numbered in the prompt, `doc_id`, `chunk_id`, `score`,
//! `text` excerpt, `metadata`), and the response carries `rag` (profile,
//! collection, retrieved / used / dropped counts, timings in ms).

use axum::extract::{Request, State};
use axum::response::Response;

use super::front::{self, Incoming};
use super::output::{self, Kind};
use super::request::ChatRequest;
use crate::answer::{AnswerRequest, Plan, Question};
use crate::error::{ApiResult, bad_request};
use crate::fields;
use crate::metrics as m;
use crate::state::{AppState, Target};
use crate::upstream::{Endpoint, forward};

pub async fn chat(State(st): State<AppState>, req: Request) -> Response {
    m::reply("chat", chat_inner(&st, req).await)
}

async fn chat_inner(st: &AppState, req: Request) -> ApiResult<Response> {
    static LARGE: std::sync::LazyLock<Vec<&str>> = std::sync::LazyLock::new(|| {
        super::tools::with_format_fields(&[
            "messages",
            "rag",
            "tools",
            "functions",
            "stop",
            "logit_bias",
        ])
    });
    front::handle(st, req, "chat", &LARGE, |i| answer(st, i)).await
}

async fn answer(st: &AppState, i: Incoming) -> ApiResult<Response> {
    let Incoming {
        tenant,
        request_id,
        session,
        started,
        body,
        model,
        target,
        span,
    } = i;
    if let Target::Upstream(up) = &target {
        // pass-through: the upstream validates its own request
        if fields::opt_object(&body, "rag")?.is_some() {
            return Err(bad_request(
                format!(
                    "'{model}' is an external upstream: retrieval ('rag') needs a runner model"
                ),
                "rag",
            ));
        }
        let stream = fields::opt_bool(&body, "stream")?.unwrap_or(false);
        return forward(up, Endpoint::Chat, &body, stream, &request_id).await;
    }
    let ChatRequest {
        messages,
        params,
        rag,
        shape,
    } = ChatRequest::parse(&body)?;
    let plan = Plan::new(st, target, rag.as_ref())?;
    let format = output::Format::of(&params);
    let req = AnswerRequest {
        tenant,
        model: model.clone(),
        plan,
        question: Question::Chat(messages),
        params,
        shape,
        session,
        id_prefix: "chatcmpl",
    };
    let a = crate::answer::answer(st, req, span).await?;
    output::respond(st, a, Kind::Chat, model, format, started).await
}
