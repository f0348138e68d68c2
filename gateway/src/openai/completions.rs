//! `POST /v1/completions`: raw text completion (no chat template, no
//! retrieval: RAG profiles answer on chat only).

use axum::extract::{Request, State};
use axum::response::Response;

use super::front::{self, Incoming};
use super::output::{self, Kind};
use super::request::CompletionRequest;
use crate::answer::{AnswerRequest, Plan, Question};
use crate::error::{ApiResult, bad_request};
use crate::fields;
use crate::metrics as m;
use crate::state::{AppState, Target};
use crate::upstream::{Endpoint, forward};

pub async fn completions(State(st): State<AppState>, req: Request) -> Response {
    m::reply("completions", inner(&st, req).await)
}

async fn inner(st: &AppState, req: Request) -> ApiResult<Response> {
    static LARGE: std::sync::LazyLock<Vec<&str>> = std::sync::LazyLock::new(|| {
        super::tools::with_format_fields(&["prompt", "rag", "stop", "logit_bias"])
    });
    front::handle(st, req, "text_completion", &LARGE, |i| complete(st, i)).await
}

async fn complete(st: &AppState, i: Incoming) -> ApiResult<Response> {
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
        let stream = fields::opt_bool(&body, "stream")?.unwrap_or(false);
        return forward(up, Endpoint::Completions, &body, stream, &request_id).await;
    }
    if let Target::Profile(p) = &target {
        return Err(bad_request(
            format!("'{}' is a RAG profile: use /v1/chat/completions", p.name),
            "model",
        ));
    }
    let plan = Plan::new(st, target, None)?;
    let CompletionRequest {
        prompt: text,
        params,
    } = CompletionRequest::parse(&body)?;
    let format = output::Format::of(&params);
    let req = AnswerRequest {
        tenant,
        model: model.clone(),
        plan,
        question: Question::Text(text),
        params,
        // vLLM's: a text completion may be held to a format too
        shape: super::request::Shape {
            format: super::tools::response_format(&body)?,
            ..Default::default()
        },
        session,
        id_prefix: "cmpl",
    };
    let a = crate::answer::answer(st, req, span).await?;
    output::respond(st, a, Kind::Completion, model, format, started).await
}
