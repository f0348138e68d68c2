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
        .map(str::to_owned);
    let body = crate::body::read_json(st, req, large).await?;
    let model = fields::req_str(&body, "model")?;
    let target = st.resolve(&model)?;
    let span = trace::genai_span(operation, &model, trace::provider(&target));
    let incoming = Incoming {
        tenant,
        request_id,
        session: session_key(header, &body),
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

/// The session key a runner pool routing by session goes by: the
/// `x-session-id` header, else the body's `safety_identifier` or `user`;
/// empty values are none, and at most 256 characters count. Read
/// leniently (a non-string field is no key): the fields' own checks are
/// the endpoints', and an upstream model gets the body as sent.
fn session_key(header: Option<String>, body: &fields::Body) -> Option<String> {
    let from_body = || {
        ["safety_identifier", "user"]
            .iter()
            .find_map(|k| {
                body.get(*k)
                    .and_then(|v| v.as_str())
                    .filter(|s| !s.trim().is_empty())
            })
            .map(str::to_owned)
    };
    header
        .filter(|s| !s.trim().is_empty())
        .or_else(from_body)
        .map(|s| s.chars().take(256).collect())
}

#[cfg(test)]
mod tests {
    use super::session_key;
    use crate::fields::body;
    use serde_json::json;

    #[test]
    fn session_keys_come_from_the_header_then_the_body() {
        let b = body(json!({"user": "u-1", "safety_identifier": "s-1"}));
        assert_eq!(session_key(Some("h-1".into()), &b).as_deref(), Some("h-1"));
        assert_eq!(session_key(None, &b).as_deref(), Some("s-1"));
        // an empty header falls back to the body
        assert_eq!(session_key(Some(" ".into()), &b).as_deref(), Some("s-1"));
        let b = body(json!({"user": "u-1", "safety_identifier": 5}));
        assert_eq!(session_key(None, &b).as_deref(), Some("u-1"));
        assert_eq!(session_key(None, &body(json!({"user": ""}))), None);
        let b = body(json!({"safety_identifier": "", "user": "u-2"}));
        assert_eq!(session_key(None, &b).as_deref(), Some("u-2"));
        let long = "x".repeat(1000);
        assert_eq!(
            session_key(Some(long), &body(json!({}))).map(|s| s.len()),
            Some(256)
        );
    }
}
