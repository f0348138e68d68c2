//! Reading a JSON request body, each way it can fail answered on its own:
//! a content type that is not JSON is a 415, a `Content-Length` past the
//! limit a 413 decided before anything is read (an `Expect: 100-continue`
//! client is told at once, never sent `100 Continue`; any other client's
//! body is read and dropped first, up to 64 MiB, so it is not cut off
//! mid-write and reads the 413), a body that grows
//! past the limit a 413, a broken transfer (malformed chunking, a client
//! that hangs up) a 400, and bad JSON a 400 with serde's line and column.
//! serde_json's recursion limit (128) turns deep nesting into a 400 as
//! well. A body that takes longer than `--http-body-timeout-s` to arrive
//! is a 408.
//!
//! Members are parsed by need: every member up to [`PARSE_ANY_UP_TO`]
//! bytes, and larger ones only when the route names them as members it
//! reads (`messages`, `input`, …). A larger member the route does not read
//! is validated without building it and kept as raw text, for an upstream
//! that passes the body on: an unknown field of 7 MB costs 7 MB, not the
//! gigabyte its `Value` tree would.
//!
//! Bodies in flight hold a share of `--max-inflight-body-bytes` from before
//! they are read until the request's parsed body is dropped; past it a new
//! request gets 429 with `Retry-After` instead of more memory.
//!
//! A missing `Content-Type` is accepted (scripts and some SDKs omit it);
//! browsers' cross-site requests are refused by the Origin check in
//! [`crate::auth`] instead.

use axum::extract::Request;
use axum::http::header;
use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;

use crate::json_scan;

use crate::error::{ApiError, ApiResult};
use crate::state::Inner;

fn too_large(limit: usize) -> ApiError {
    ApiError::TooLarge {
        message: format!("request body exceeds the limit of {limit} bytes"),
        param: None,
        code: "request_too_large",
    }
}

/// `application/json`, `application/<x>+json`, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Checks what the headers say, reading nothing.
pub fn check_headers(req: &Request, limit: usize) -> ApiResult<()> {
    let h = req.headers();
    if let Some(ct) = h.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !is_json(ct) {
            return Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "Content-Type '{}' is not JSON: send 'Content-Type: application/json'",
                    ct.chars().take(100).collect::<String>()
                ),
            });
        }
    }
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    Ok(())
}

fn hit_limit(e: &axum::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// How long a refused body may take to be read and dropped.
const DISCARD_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Bodies up to this size are parsed on the request's own task.
const PARSE_INLINE_UP_TO: usize = 16 * 1024;

/// Members larger than this are parsed only when the route reads them.
pub const PARSE_ANY_UP_TO: usize = 64 * 1024;

/// A request's JSON object: the members parsed (see the module docs),
/// derefs to them; the raw body stays for pass-through.
pub struct JsonBody {
    bytes: bytes::Bytes,
    members: Vec<json_scan::Member>,
    fields: Map<String, Value>,
    _budget: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for JsonBody {
    type Target = Map<String, Value>;
    fn deref(&self) -> &Self::Target {
        &self.fields
    }
}

impl JsonBody {
    /// The body as the client sent it, with `key` set to `value` (added if
    /// absent): what an upstream receives, unknown members included.
    pub fn with_member(&self, key: &str, value: &Value) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 64);
        out.push(b'{');
        let mut first = true;
        let mut put = |out: &mut Vec<u8>, k: &str, v: &[u8]| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            // a String serialises infallibly
            out.extend_from_slice(&serde_json::to_vec(k).unwrap_or_default());
            out.push(b':');
            out.extend_from_slice(v);
        };
        let encoded = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        let mut replaced = false;
        for m in &self.members {
            if m.key == key {
                if !replaced {
                    put(&mut out, key, &encoded);
                    replaced = true;
                }
                continue;
            }
            put(&mut out, &m.key, &self.bytes[m.value.clone()]);
        }
        if !replaced {
            put(&mut out, key, &encoded);
        }
        out.push(b'}');
        out
    }

    /// A body from a JSON object (tests, internal callers).
    pub fn from_value(v: Value) -> ApiResult<Self> {
        Self::from_bytes(serde_json::to_vec(&v).unwrap_or_default())
    }

    /// A body from raw bytes, parsed as a request body is.
    pub fn from_bytes(bytes: Vec<u8>) -> ApiResult<Self> {
        parse(bytes::Bytes::from(bytes), &[], None)
    }
}

/// How many KiB of the in-flight budget a body may need.
fn budget_kib(req: &Request, limit: usize) -> u32 {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // a chunked body may grow to the limit
    let bytes = declared.unwrap_or(limit).min(limit);
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Reads the whole body, of any content type, up to `limit` bytes and
/// within `st.body_timeout`, holding its share of the in-flight budget
/// (returned with the bytes: keep it while they are in memory).
pub async fn read_bytes(
    st: &Inner,
    req: Request,
    limit: usize,
) -> ApiResult<(bytes::Bytes, OwnedSemaphorePermit)> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        ragmesh_telemetry::discard_body(req, st.body_timeout.min(DISCARD_WITHIN)).await;
        return Err(too_large(limit));
    }
    let need = budget_kib(&req, limit);
    let budget = match st.body_budget.clone().try_acquire_many_owned(need) {
        Ok(p) => p,
        Err(_) => {
            // the budget frees as bodies are parsed (milliseconds):
            // HTTP's smallest Retry-After is the true one
            return Err(ApiError::RateLimited {
                message:
                    "the gateway is reading its maximum of request bodies at once; retry shortly"
                        .into(),
                retry_after: std::time::Duration::from_secs(1),
            });
        }
    };
    let read = tokio::time::timeout(
        st.body_timeout,
        axum::body::to_bytes(req.into_body(), limit),
    );
    let Ok(read) = read.await else {
        return Err(ApiError::RequestTimeout {
            message: format!(
                "the request body did not arrive within {} s",
                st.body_timeout.as_secs()
            ),
        });
    };
    match read {
        Ok(b) => Ok((b, budget)),
        Err(e) if hit_limit(&e) => Err(too_large(limit)),
        Err(e) => Err(ApiError::Invalid {
            message: format!("the request body could not be read: {e}"),
            param: None,
            code: Some("invalid_body"),
        }),
    }
}

/// Reads the body (at most `st.max_body_bytes`, within `st.body_timeout`)
/// as a JSON object whose members `large` are parsed whatever their size.
pub async fn read_json(st: &Inner, req: Request, large: &[&str]) -> ApiResult<JsonBody> {
    let limit = st.max_body_bytes;
    if let Err(refused) = check_headers(&req, limit) {
        if matches!(refused, ApiError::TooLarge { .. }) {
            // the client may still be sending: let it finish, so it reads
            // the 413 instead of a broken pipe
            ragmesh_telemetry::discard_body(req, st.body_timeout.min(DISCARD_WITHIN)).await;
        }
        return Err(refused);
    }
    let (bytes, budget) = read_bytes(st, req, limit).await?;
    // a small body parses in microseconds, cheaper than a hop to the
    // blocking pool (the proxy path's common case); a large one is CPU
    // work that must not hold an async worker
    if bytes.len() <= PARSE_INLINE_UP_TO {
        return parse(bytes, large, Some(budget));
    }
    let large: Vec<String> = large.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let large: Vec<&str> = large.iter().map(String::as_str).collect();
        parse(bytes, &large, Some(budget))
    })
    .await
    .map_err(|e| crate::error::internal(format!("body parsing task failed: {e}")))?
}

fn invalid_json(message: String) -> ApiError {
    crate::error::invalid(format!("invalid JSON body: {message}"))
}

fn parse(
    bytes: bytes::Bytes,
    large: &[&str],
    budget: Option<OwnedSemaphorePermit>,
) -> ApiResult<JsonBody> {
    // JSON is UTF-8: checked once for the whole body, since members that
    // are only validated (not built) are not checked for it by serde
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(invalid_json(format!(
            "not UTF-8 at byte {}",
            e.valid_up_to()
        )));
    }
    let members = json_scan::members(&bytes).map_err(|m| {
        if m.starts_with("request body must be") {
            crate::error::invalid(m)
        } else {
            invalid_json(m)
        }
    })?;
    let mut fields = Map::new();
    for m in &members {
        let raw = &bytes[m.value.clone()];
        if raw.len() <= PARSE_ANY_UP_TO || large.contains(&m.key.as_str()) {
            let v: Value = serde_json::from_slice(raw)
                .map_err(|e| invalid_json(format!("member '{}': {e}", m.key)))?;
            fields.insert(m.key.clone(), v);
        } else {
            serde_json::from_slice::<serde::de::IgnoredAny>(raw)
                .map_err(|e| invalid_json(format!("member '{}': {e}", m.key)))?;
        }
    }
    Ok(JsonBody {
        bytes,
        members,
        fields,
        _budget: budget,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_unread_members_stay_raw_and_pass_through() {
        let big = format!("[{}0]", "0,".repeat(PARSE_ANY_UP_TO));
        let text = format!(r#"{{"model":"m","junk":{big},"messages":{big}}}"#);
        let b =
            parse(bytes::Bytes::from(text), &["messages"], None).unwrap_or_else(|e| panic!("{e}"));
        assert!(b.contains_key("messages") && !b.contains_key("junk"));
        let out = b.with_member("model", &Value::String("up".into()));
        let v: Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["model"], "up");
        assert_eq!(
            v["junk"].as_array().map(Vec::len),
            Some(PARSE_ANY_UP_TO + 1)
        );
        // a broken large member is still a 400
        let bad = format!(r#"{{"junk":[{}}}"#, "0,".repeat(PARSE_ANY_UP_TO));
        assert!(parse(bytes::Bytes::from(bad), &[], None).is_err());
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
            "application/jsonx",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
