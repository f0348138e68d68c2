//! `POST /v1/completions`: raw text completion (no chat template, no
//! retrieval: RAG profiles answer on chat only).

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::Value;

use super::front::{self, Incoming};
use super::output::{self, Kind};
use super::params::GenParams;
use crate::answer::{AnswerRequest, Plan, Question};
use crate::error::{ApiResult, bad_request};
use crate::fields;
use crate::metrics as m;
use crate::state::{AppState, Target};
use crate::upstream::{Endpoint, forward};

pub async fn completions(State(st): State<AppState>, req: Request) -> Response {
    m::reply("completions", inner(&st, req).await)
}

fn prompt(b: &fields::Body) -> ApiResult<String> {
    match b.get("prompt") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(a[0].as_str().unwrap_or_default().to_owned())
        }
        Some(Value::Array(a)) if a.len() > 1 => Err(bad_request(
            "only one prompt per request is supported; send separate requests",
            "prompt",
        )),
        None | Some(Value::Null) => Err(bad_request("'prompt' is required", "prompt")),
        Some(_) => Err(bad_request(
            "'prompt' must be a string (token-id prompts are not supported)",
            "prompt",
        )),
    }
}

async fn inner(st: &AppState, req: Request) -> ApiResult<Response> {
    const LARGE: [&str; 4] = ["prompt", "rag", "stop", "logit_bias"];
    front::handle(st, req, "text_completion", &LARGE, |i| complete(st, i)).await
}

async fn complete(st: &AppState, i: Incoming) -> ApiResult<Response> {
    let Incoming {
        tenant,
        request_id,
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
    let text = prompt(&body)?;
    let params = GenParams::parse(&body, false)?;
    if fields::opt_bool(&body, "echo")?.unwrap_or(false) {
        return Err(bad_request("'echo' is not supported", "echo"));
    }
    if fields::opt_str(&body, "suffix")?.is_some() {
        return Err(bad_request("'suffix' is not supported", "suffix"));
    }
    if fields::opt_int_in(&body, "best_of", 1, 1)?.is_some_and(|b| b != 1) {
        return Err(bad_request("only best_of=1 is supported", "best_of"));
    }
    let format = output::Format::of(&params);
    let req = AnswerRequest {
        tenant,
        model: model.clone(),
        plan,
        question: Question::Text(text),
        params,
        id_prefix: "cmpl",
    };
    let a = crate::answer::answer(st, req, span).await?;
    output::respond(st, a, Kind::Completion, model, format, started).await
}
