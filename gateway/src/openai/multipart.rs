//! `multipart/form-data` uploads (`POST /v1/files`), parsed by `multer`
//! from a body already read within its limit and the in-flight budget
//! ([`crate::body::read_bytes`]).

use axum::extract::Request;
use axum::http::header;

use crate::error::{ApiError, ApiResult, bad_request};

/// One part of the form.
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub data: bytes::Bytes,
}

/// Room for the form's own bytes (part headers, boundaries, other fields)
/// on top of the file.
pub const FORM_OVERHEAD: usize = 64 * 1024;

fn unsupported(message: String) -> ApiError {
    ApiError::UnsupportedMediaType { message }
}

/// The boundary of a `multipart/form-data` request (else 415).
pub fn boundary(req: &Request) -> ApiResult<String> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    multer::parse_boundary(ct).map_err(|_| {
        unsupported(format!(
            "Content-Type '{}' is not multipart/form-data with a boundary: upload files as a form",
            ct.chars().take(100).collect::<String>()
        ))
    })
}

/// Every part of the form, in order.
pub async fn parts(body: bytes::Bytes, boundary: String) -> ApiResult<Vec<Part>> {
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut out = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(bad_request(
                    format!("the multipart form is malformed: {e}"),
                    "file",
                ));
            }
        };
        let name = field.name().unwrap_or("").to_owned();
        let filename = field.file_name().map(str::to_owned);
        let data = field.bytes().await.map_err(|e| {
            bad_request(format!("form part '{name}' could not be read: {e}"), "file")
        })?;
        out.push(Part {
            name,
            filename,
            data,
        });
        if out.len() > 32 {
            return Err(bad_request("the form has more than 32 parts", "file"));
        }
    }
    Ok(out)
}
