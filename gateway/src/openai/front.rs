//! What every generation front door does before its own fields: read the
//! body, resolve the model, open the request's GenAI span; and after:
//! mark the span with the error, if any.

use std::future::Future;
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use tracing::Instrument;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::ApiResult;
use crate::fields;
use crate::state::{AppState, DEFAULT_TENANT, Target};
use crate::trace;

/// A generation request, its body read and its model resolved.
pub struct Incoming {
    pub tenant: std::sync::Arc<str>,
    pub request_id: String,
    /// The `x-session-id` header, else the body's `safety_identifier` or
    /// `user` (a runner pool routing by session keeps it on one replica).
    pub session: Option<String>,
    pub started: Instant,
    pub body: JsonBody,
    /// The model name as asked.
    pub model: String,
    pub target: Target,
    pub span: tracing::Span,
}

/// Reads `req` (members `large` parsed whatever their size), resolves its
/// model and runs `then` inside the request's GenAI span named
/// `operation`.
pub async fn handle<F, Fut>(
    st: &AppState,
    req: Request,
    operation: &'static str,
    large: &[&str],
    then: F,
) -> ApiResult<Response>
where
    F: FnOnce(Incoming) -> Fut,
    Fut: Future<Output = ApiResult<Response>>,
{
    let started = Instant::now();
    let tenant = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.tenant.clone())
        .unwrap_or_else(|| DEFAULT_TENANT.into());
    let request_id = crate::request_id::of(&req);
    let header = req
        .headers()
        .get("x-session-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.chars().take(256).collect::<String>());
    let body = crate::body::read_json(st, req, large).await?;
    let model = fields::req_str(&body, "model")?;
    let target = st.resolve(&model)?;
    let span = trace::genai_span(operation, &model, trace::provider(&target));
    let incoming = Incoming {
        tenant,
        request_id,
        // read leniently: the fields' own checks are the endpoints' (an
        // upstream model gets the body as sent)
        session: header.or_else(|| {
            ["safety_identifier", "user"]
                .iter()
                .find_map(|k| {
                    body.get(*k)
                        .and_then(|v| v.as_str())
                        .filter(|s| !s.is_empty())
                })
                .map(|s| s.chars().take(256).collect())
        }),
        started,
        body,
        model,
        target,
        span: span.clone(),
    };
    let out = then(incoming).instrument(span.clone()).await;
    trace::on_error(&span, &out);
    out
}
