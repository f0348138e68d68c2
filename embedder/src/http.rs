//! HTTP transport: OpenAI-compatible `POST /v1/embeddings`, plus `/health`
//! and `/metrics`.
//!
//! Bodies are parsed by hand from bytes (not with axum's `Json` extractor)
//! so that every client mistake — bad JSON, a wrong type, an oversized
//! body — gets OpenAI's error shape with a precise message.

use std::time::Instant;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};

use crate::embedder::{EmbedOptions, Embedder};
use crate::error::EmbedError;
use crate::metrics as m;

#[derive(Clone)]
struct AppState {
    embedder: Embedder,
    max_body_bytes: usize,
}

pub fn router(
    embedder: Embedder,
    max_body_bytes: usize,
    lifecycle: &ragmesh_telemetry::Lifecycle,
) -> Router {
    Router::new()
        .route(
            "/v1/embeddings",
            post(embeddings).layer(axum::middleware::from_fn(
                ragmesh_telemetry::otel::http_server_span,
            )),
        )
        .merge(ragmesh_telemetry::ops_router(lifecycle))
        .fallback(not_found)
        .with_state(AppState {
            embedder,
            max_body_bytes,
        })
}

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    /// `Retry-After` for a 429 or 503 (1 s when unset).
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
        {
            let secs = self
                .retry_after
                .map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        // A 413 can answer before the body was read; hyper then closes the
        // connection, and a client that pooled it would send its next
        // request into a closed socket. Say so in the answer.
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl From<EmbedError> for ApiError {
    fn from(e: EmbedError) -> Self {
        let message = e.to_string();
        let retry_after = match &e {
            EmbedError::Overloaded { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let (status, kind, param, code) = match &e {
            EmbedError::Invalid { param, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                *param,
                None,
            ),
            EmbedError::UnknownModel(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            EmbedError::Overloaded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                None,
                Some("rate_limit_exceeded"),
            ),
            EmbedError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                None,
                Some("service_unavailable"),
            ),
            EmbedError::ModelFile { .. } | EmbedError::Backend(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                None,
            ),
        };
        Self {
            status,
            message,
            kind,
            param,
            code,
            retry_after,
        }
    }
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such route".into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("not_found"),
        retry_after: None,
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("request body exceeds the limit of {limit} bytes"),
        kind: "invalid_request_error",
        param: None,
        code: Some("request_too_large"),
        retry_after: None,
    }
}

/// Reads a JSON object body, mapping every failure to an OpenAI error: a
/// `Content-Length` past `limit` is a 413 decided before anything is read
/// (an `Expect: 100-continue` client is never sent `100 Continue`; another
/// client's body is dropped as it arrives, so it reads the 413), a body
/// growing past it a 413, a broken transfer (malformed chunking) a 400.
pub async fn read_json_body(
    req: Request,
    limit: usize,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        // the client may still be sending: let it finish, so it reads the
        // 413 instead of a broken pipe
        ragmesh_telemetry::discard_body(req, std::time::Duration::from_secs(3)).await;
        return Err(too_large(limit));
    }
    let bytes = match to_bytes(req.into_body(), limit).await {
        Ok(b) => b,
        Err(e) => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = cur {
                if err.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large(limit));
                }
                cur = err.source();
            }
            return Err(ApiError::bad_request(
                format!("the request body could not be read: {e}"),
                None,
            ));
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "request body must be a JSON object",
            None,
        )),
        Err(e) => Err(ApiError::bad_request(
            format!("invalid JSON body: {e}"),
            None,
        )),
    }
}

/// The validated form of an embeddings request.
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Vec<String>,
    pub base64: bool,
}

pub fn parse_request(
    body: &serde_json::Map<String, Value>,
    dims: usize,
) -> Result<EmbeddingsRequest, ApiError> {
    let model = match body.get("model") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "'model' must be a string",
                Some("model"),
            ));
        }
    };
    let input = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    // OpenAI accepts token ids, but they are ids of
                    // OpenAI's tokenizers (LangChain counts with tiktoken
                    // and sends those): read as this model's WordPiece ids
                    // they would embed other words, silently. Refused.
                    Value::Number(_) | Value::Array(_) => {
                        return Err(ApiError::bad_request(
                            format!(
                                "input[{i}]: token-id input is not supported (ids of another tokenizer would embed other words); send text (LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))"
                            ),
                            Some("input"),
                        ));
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            format!("input[{i}] must be a string"),
                            Some("input"),
                        ));
                    }
                }
            }
            out
        }
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request("'input' is required", Some("input")));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "'input' must be a string or an array of strings",
                Some("input"),
            ));
        }
    };
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "float" => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "'encoding_format' must be \"float\" or \"base64\"",
                Some("encoding_format"),
            ));
        }
    };
    match body.get("dimensions") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64() == Some(dims as u64) => {}
        Some(Value::Number(n)) => {
            return Err(ApiError::bad_request(
                format!(
                    "'dimensions' is {n} but this model only produces {dims}-dimensional embeddings"
                ),
                Some("dimensions"),
            ));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "'dimensions' must be an integer",
                Some("dimensions"),
            ));
        }
    }
    if let Some(user) = body.get("user")
        && !user.is_string()
        && !user.is_null()
    {
        return Err(ApiError::bad_request(
            "'user' must be a string",
            Some("user"),
        ));
    }
    Ok(EmbeddingsRequest {
        model,
        input,
        base64,
    })
}

async fn embeddings(State(st): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let result = handle_embeddings(&st, req).await;
    let status = match &result {
        Ok(_) => "200".to_owned(),
        Err(e) => e.status.as_u16().to_string(),
    };
    metrics::counter!(m::REQUESTS, "transport" => "http", "status" => status).increment(1);
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "POST /v1/embeddings"
    );
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn handle_embeddings(st: &AppState, req: Request) -> Result<Value, ApiError> {
    let body = read_json_body(req, st.max_body_bytes).await?;
    let info = st.embedder.info();
    let parsed = parse_request(&body, info.dims)?;
    st.embedder.check_model(&parsed.model)?;
    let out = st
        .embedder
        .embed(parsed.input, EmbedOptions::default())
        .await?;
    Ok(embeddings_response(
        &info.id,
        &out.vectors,
        out.prompt_tokens,
        parsed.base64,
    ))
}

/// The OpenAI `/v1/embeddings` response body (the gateway answers with the
/// same shape).
pub fn embeddings_response(
    model: &str,
    vectors: &[Vec<f32>],
    prompt_tokens: usize,
    base64: bool,
) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                Value::String(encode_base64(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}

/// OpenAI's base64 format: the little-endian f32 bytes, base64-encoded.
pub fn encode_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn parses_string_and_array_input() {
        let r = parse_request(&obj(json!({"input": "hi", "model": "m"})), 384);
        assert!(matches!(r, Ok(ref r) if r.input == vec!["hi"] && !r.base64));
        let r = parse_request(
            &obj(json!({"input": ["a", "b"], "encoding_format": "base64"})),
            384,
        );
        assert!(matches!(r, Ok(ref r) if r.input.len() == 2 && r.base64));
    }

    #[test]
    fn rejects_bad_fields_with_param() {
        let cases = [
            (json!({}), "input"),
            (json!({"input": 3}), "input"),
            (json!({"input": ["a", 3]}), "input"),
            (json!({"input": ["a", null]}), "input"),
            (json!({"input": "a", "dimensions": 12}), "dimensions"),
            (json!({"input": "a", "dimensions": "x"}), "dimensions"),
            (
                json!({"input": "a", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (json!({"input": "a", "model": 5}), "model"),
        ];
        for (body, param) in cases {
            match parse_request(&obj(body.clone()), 384) {
                Err(e) => {
                    assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
                    assert_eq!(e.param, Some(param), "{body}");
                }
                Ok(_) => panic!("accepted {body}"),
            }
        }
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let s = encode_base64(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_default();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
    }
}
