//! `POST /v1/completions`: raw text completion (no chat template, no
//! retrieval: RAG profiles answer on chat only).

use std::time::Instant;

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::Value;

use super::output::{self, Kind};
use super::params::GenParams;
use crate::answer::{AnswerRequest, Plan, Question};
use crate::error::{ApiResult, bad_request};
use crate::fields;
use crate::metrics as m;
use crate::state::{AppState, Target};
use crate::trace;
use crate::upstream::{Endpoint, forward};
use tracing::Instrument;

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
    let started = Instant::now();
    let request_id = crate::request_id::of(&req);
    let tenant = req
        .extensions()
        .get::<crate::auth::Caller>()
        .map(|c| c.tenant.clone())
        .unwrap_or_else(|| crate::state::DEFAULT_TENANT.into());
    let body = crate::body::read_json(st, req, &["prompt", "rag", "stop", "logit_bias"]).await?;
    let model = fields::req_str(&body, "model")?;
    let target = st.resolve(&model)?;
    let span = trace::genai_span("text_completion", &model, trace::provider(&target));
    let out = complete(
        st,
        body,
        (model, target, tenant),
        request_id,
        started,
        span.clone(),
    )
    .instrument(span.clone())
    .await;
    trace::on_error(&span, &out);
    out
}

async fn complete(
    st: &AppState,
    body: crate::body::JsonBody,
    (model, target, tenant): (String, Target, std::sync::Arc<str>),
    request_id: String,
    started: Instant,
    span: tracing::Span,
) -> ApiResult<Response> {
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
    let req = AnswerRequest {
        tenant,
        model: model.clone(),
        plan,
        question: Question::Text(text),
        params: params.clone(),
        id_prefix: "cmpl",
    };
    let a = crate::answer::answer(st, req, span).await?;
    output::respond(st, a, Kind::Completion, model, &params, started).await
}
