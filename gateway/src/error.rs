//! One error type for every HTTP answer: OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` with its status. The
//! type is the embedder's (it served the first OpenAI endpoint); the stage
//! errors map onto it here, once.

use axum::http::StatusCode;
pub use ragmesh_embedder::http::ApiError;
use ragmesh_llm_runner::GenError;
use ragmesh_retriever::RetrieverError;

pub type ApiResult<T> = Result<T, ApiError>;

pub fn bad_request(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

pub fn not_found(
    message: impl Into<String>,
    param: Option<&'static str>,
    code: &'static str,
) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: message.into(),
        kind: "invalid_request_error",
        param,
        code: Some(code),
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
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: message.into(),
        kind: "server_error",
        param: None,
        code: None,
    }
}

/// A backend stage (remote replicas, an upstream) cannot serve now: 503
/// with `Retry-After`.
pub fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: message.into(),
        kind: "server_error",
        param: None,
        code: Some("backend_unavailable"),
    }
}

/// A backend did not answer in time.
pub fn timeout(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::GATEWAY_TIMEOUT,
        message: message.into(),
        kind: "server_error",
        param: None,
        code: Some("backend_timeout"),
    }
}

/// A gRPC status from a remote stage (after the pool's retries).
pub fn from_status(s: tonic::Status) -> ApiError {
    use tonic::Code;
    let message = s.message().to_owned();
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            ApiError::bad_request(message, None)
        }
        Code::NotFound => not_found(message, None, "not_found"),
        Code::AlreadyExists | Code::Aborted => ApiError {
            status: StatusCode::CONFLICT,
            message,
            kind: "invalid_request_error",
            param: None,
            code: Some("conflict"),
        },
        Code::ResourceExhausted => from_gen(GenError::Overloaded(message)),
        Code::Unavailable => unavailable(message),
        Code::DeadlineExceeded => timeout(message),
        _ => internal(message),
    }
}

pub fn from_gen(e: GenError) -> ApiError {
    match e {
        GenError::InvalidArgument(m) => ApiError::bad_request(m, None),
        GenError::Overloaded(m) => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: m,
            kind: "rate_limit_error",
            param: None,
            code: Some("rate_limit_exceeded"),
        },
        GenError::Model(m) | GenError::Internal(m) => internal(m),
    }
}

pub fn from_retriever(e: RetrieverError) -> ApiError {
    let message = e.to_string();
    match e {
        RetrieverError::InvalidArgument(_) => ApiError::bad_request(message, None),
        RetrieverError::NotFound(_) => not_found(message, None, "collection_not_found"),
        RetrieverError::AlreadyExists(_) => ApiError {
            status: StatusCode::CONFLICT,
            message,
            kind: "invalid_request_error",
            param: Some("name"),
            code: Some("collection_exists"),
        },
        RetrieverError::Conflict(_) => ApiError {
            status: StatusCode::CONFLICT,
            message,
            kind: "invalid_request_error",
            param: None,
            code: Some("conflict"),
        },
        RetrieverError::Unavailable(_) => unavailable(message),
        RetrieverError::Backend(_) => internal(message),
    }
}
