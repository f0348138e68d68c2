//! The gateway's error type: one variant per way a request can be refused,
//! mapped to OpenAI's `{"error": {"message", "type", "param", "code"}}`
//! and its HTTP status here, once ([`IntoResponse`]). Stage errors (the
//! runner's, the embedder's, the retriever's, a remote stage's gRPC
//! status) are converted at the stage boundary by the `from_*` functions
//! below, keeping the `Retry-After` the refusing stage computed.
//!
//! `Retry-After` (whole seconds, at least 1) comes from whoever refused:
//! a key's token bucket (time until its next token), a runner's queue (its
//! mean request time × the requests ahead per slot), the embedder's queue
//! (its mean request time), a replica pool with every replica backing off
//! (time until the first may be tried again). A gRPC stage sends its value
//! as `retry-after` metadata. The gateway's own body budget, which frees
//! as bodies are parsed, says 1 s.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use ragmesh_embedder::EmbedError;
use ragmesh_llm_runner::GenError;
use ragmesh_retriever::RetrieverError;
use serde_json::json;

pub type ApiResult<T> = Result<T, ApiError>;

/// Why a request was refused.
#[derive(Debug)]
pub enum ApiError {
    /// 400: malformed, missing or out-of-range input; `param` names the
    /// field.
    Invalid {
        message: String,
        param: Option<&'static str>,
        code: Option<&'static str>,
    },
    /// 401: no key or an unknown key.
    Unauthorized { message: String },
    /// 403: a key or an origin that may not do this.
    Forbidden { message: String, code: &'static str },
    /// 404: a route, model, collection, file, store or response this
    /// caller cannot see.
    NotFound {
        message: String,
        param: Option<&'static str>,
        code: &'static str,
    },
    /// 405 on a known route.
    MethodNotAllowed,
    /// 408: the request body did not arrive in time.
    RequestTimeout { message: String },
    /// 409: the object exists or changed under the request.
    Conflict {
        message: String,
        param: Option<&'static str>,
        code: &'static str,
    },
    /// 413: a body or file past its limit.
    TooLarge {
        message: String,
        param: Option<&'static str>,
        code: &'static str,
    },
    /// 415: a body that is not the content type the route reads.
    UnsupportedMediaType { message: String },
    /// 429: a key's rate limit or a stage's full queue.
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// 500: not the caller's fault.
    Internal { message: String },
    /// 503: no replica or upstream can serve now.
    Unavailable {
        message: String,
        code: &'static str,
        retry_after: Duration,
    },
    /// 504: a backend did not answer in time.
    Timeout { message: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// OpenAI's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limit_error",
            Self::Internal { .. } | Self::Unavailable { .. } | Self::Timeout { .. } => {
                "server_error"
            }
            _ => "invalid_request_error",
        }
    }

    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Self::Invalid { code, .. } => return *code,
            Self::Unauthorized { .. } => "invalid_api_key",
            Self::Forbidden { code, .. }
            | Self::NotFound { code, .. }
            | Self::Conflict { code, .. }
            | Self::TooLarge { code, .. }
            | Self::Unavailable { code, .. } => code,
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limit_exceeded",
            Self::Internal { .. } => return None,
            Self::Timeout { .. } => "backend_timeout",
        })
    }

    pub fn param(&self) -> Option<&'static str> {
        match self {
            Self::Invalid { param, .. }
            | Self::NotFound { param, .. }
            | Self::Conflict { param, .. }
            | Self::TooLarge { param, .. } => *param,
            _ => None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Invalid { message, .. }
            | Self::Unauthorized { message }
            | Self::Forbidden { message, .. }
            | Self::NotFound { message, .. }
            | Self::RequestTimeout { message }
            | Self::Conflict { message, .. }
            | Self::TooLarge { message, .. }
            | Self::UnsupportedMediaType { message }
            | Self::RateLimited { message, .. }
            | Self::Internal { message }
            | Self::Unavailable { message, .. }
            | Self::Timeout { message } => message,
            Self::MethodNotAllowed => "method not allowed on this route",
        }
    }

    /// The message, owned (a refusal passed on as another's text).
    pub fn into_message(self) -> String {
        self.message().to_owned()
    }

    /// When the refusing stage says to try again (429 and 503 only).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status().as_u16(), self.message())
    }
}

/// Whole seconds, rounded up, at least 1 (HTTP cannot say less).
pub fn retry_secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

impl ApiError {
    /// OpenAI's error object: `{"error": {"message", "type", "param",
    /// "code"}}` (a response body, or an SSE event mid-stream).
    pub fn to_json(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message(),
            "type": self.kind(),
            "param": self.param(),
            "code": self.code(),
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = self.retry_after();
        let body = self.to_json();
        let mut resp = (status, Json(body)).into_response();
        if let Some(d) = retry
            && let Ok(v) = HeaderValue::from_str(&retry_secs(d).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        // A 413 can answer before the body was read; hyper then closes the
        // connection, and a client that pooled it would send its next
        // request into a closed socket. Say so in the answer.
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

pub fn bad_request(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::Invalid {
        message: message.into(),
        param: Some(param),
        code: None,
    }
}

/// A 400 that names no single field.
pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        message: message.into(),
        param: None,
        code: None,
    }
}

pub fn not_found(
    message: impl Into<String>,
    param: Option<&'static str>,
    code: &'static str,
) -> ApiError {
    ApiError::NotFound {
        message: message.into(),
        param,
        code,
    }
}

pub fn unknown_model(model: &str) -> ApiError {
    not_found(
        format!("The model '{model}' does not exist; GET /v1/models lists the served ones"),
        Some("model"),
        "model_not_found",
    )
}

pub fn internal(message: impl Into<String>) -> ApiError {
    ApiError::Internal {
        message: message.into(),
    }
}

/// A backend stage (remote replicas, an upstream) cannot serve now: 503,
/// try again after `retry_after`.
pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> ApiError {
    ApiError::Unavailable {
        message: message.into(),
        code: "backend_unavailable",
        retry_after,
    }
}

/// A backend did not answer in time.
pub fn timeout(message: impl Into<String>) -> ApiError {
    ApiError::Timeout {
        message: message.into(),
    }
}

/// The `retry-after` metadata (whole seconds) a gRPC stage attached.
pub fn status_retry_after(s: &tonic::Status) -> Option<Duration> {
    s.metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A gRPC status from a remote stage (after the pool's retries).
pub fn from_status(s: tonic::Status) -> ApiError {
    use tonic::Code;
    let retry_after = status_retry_after(&s).unwrap_or(Duration::from_secs(1));
    let message = s.message().to_owned();
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => ApiError::Invalid {
            param: param_of(&message),
            message,
            code: None,
        },
        Code::NotFound => not_found(message, None, "not_found"),
        Code::AlreadyExists | Code::Aborted => ApiError::Conflict {
            message,
            param: None,
            code: "conflict",
        },
        Code::ResourceExhausted => ApiError::RateLimited {
            message,
            retry_after,
        },
        Code::Unavailable => unavailable(message, retry_after),
        Code::DeadlineExceeded => timeout(message),
        _ => internal(message),
    }
}

/// The request field a runner's refusal names first (its messages start
/// with the field: `response_format.json_schema.schema: ...`,
/// `tools[1].function.parameters: ...`).
fn param_of(message: &str) -> Option<&'static str> {
    ["response_format", "tool_choice", "tools", "messages"]
        .into_iter()
        .find(|p| {
            message
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with(['.', '[', ':', ' ']))
        })
}

pub fn from_gen(e: GenError) -> ApiError {
    match e {
        GenError::InvalidArgument(m) => ApiError::Invalid {
            param: param_of(&m),
            message: m,
            code: None,
        },
        GenError::Overloaded {
            message,
            retry_after,
        } => ApiError::RateLimited {
            message,
            retry_after,
        },
        GenError::Model(m) | GenError::Internal(m) => internal(m),
    }
}

pub fn from_embed(e: EmbedError) -> ApiError {
    let message = e.to_string();
    match e {
        EmbedError::Invalid { param, .. } => ApiError::Invalid {
            message,
            param,
            code: None,
        },
        EmbedError::UnknownModel(_) => not_found(message, Some("model"), "model_not_found"),
        EmbedError::Overloaded { retry_after, .. } => ApiError::RateLimited {
            message,
            retry_after,
        },
        EmbedError::Unavailable => ApiError::Unavailable {
            message,
            code: "service_unavailable",
            retry_after: Duration::from_secs(1),
        },
        EmbedError::ModelFile { .. } | EmbedError::Backend(_) => internal(message),
    }
}

/// A refusal of the embedder's `/v1/embeddings` body reader (shared with
/// the gateway's route), which only ever refuses with a 400.
pub fn from_embed_request(e: ragmesh_embedder::http::ApiError) -> ApiError {
    ApiError::Invalid {
        message: e.message,
        param: e.param,
        code: e.code,
    }
}

pub fn from_retriever(e: RetrieverError) -> ApiError {
    let message = e.to_string();
    match e {
        RetrieverError::InvalidArgument(_) => invalid(message),
        RetrieverError::NotFound(_) => not_found(message, None, "collection_not_found"),
        RetrieverError::AlreadyExists(_) => ApiError::Conflict {
            message,
            param: Some("name"),
            code: "collection_exists",
        },
        RetrieverError::Conflict(_) => ApiError::Conflict {
            message,
            param: None,
            code: "conflict",
        },
        RetrieverError::Unavailable(_) => unavailable(message, Duration::from_secs(1)),
        RetrieverError::Backend(_) => internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_refusals_name_their_field() {
        assert_eq!(
            param_of("response_format.json_schema.schema: bad"),
            Some("response_format")
        );
        assert_eq!(param_of("tools[1].function.parameters: bad"), Some("tools"));
        assert_eq!(
            param_of("tool_choice names function 'x'"),
            Some("tool_choice")
        );
        assert_eq!(param_of("toolsmith"), None);
        assert_eq!(param_of("the prompt is empty"), None);
    }

    async fn body_of(e: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let r = e.into_response();
        let status = r.status();
        let retry = r
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        let v = serde_json::from_slice(&bytes).unwrap_or_default();
        (status, retry, v)
    }

    #[tokio::test]
    async fn one_mapping_to_openai_json() {
        let (s, retry, v) = body_of(bad_request("'n' must be 1", "n")).await;
        assert_eq!(s, 400);
        assert_eq!(retry, None);
        assert_eq!(v["error"]["param"], "n");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "'n' must be 1");

        let (s, retry, v) = body_of(ApiError::RateLimited {
            message: "queue full".into(),
            retry_after: Duration::from_millis(7200),
        })
        .await;
        assert_eq!((s.as_u16(), retry.as_deref()), (429, Some("8")));
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");

        let (s, _, v) = body_of(internal("boom")).await;
        assert_eq!(s, 500);
        assert!(v["error"]["code"].is_null());
        let (s, _, v) = body_of(ApiError::MethodNotAllowed).await;
        assert_eq!(
            (s.as_u16(), &v["error"]["code"]),
            (405, &json!("method_not_allowed"))
        );
    }

    #[test]
    fn a_stage_refusal_keeps_its_retry_after() {
        let mut st = tonic::Status::resource_exhausted("runner queue full");
        st.metadata_mut().insert(
            "retry-after",
            tonic::metadata::MetadataValue::from_static("12"),
        );
        let e = from_status(st);
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(12)));
        let e = from_gen(GenError::Overloaded {
            message: "x".into(),
            retry_after: Duration::from_secs(4),
        });
        assert_eq!(e.retry_after(), Some(Duration::from_secs(4)));
        // a status without the metadata still says when
        let e = from_status(tonic::Status::unavailable("down"));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(retry_secs(Duration::from_millis(10)), 1);
        assert_eq!(
            from_status(tonic::Status::invalid_argument("bad")).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
