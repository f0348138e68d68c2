//! `/v1/files`: multipart upload, list, retrieve, delete, content — thin
//! HTTP over [`crate::files::uploads`].

use axum::Json;
use axum::extract::{Extension, Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::multipart::{self, FORM_OVERHEAD};
use super::paging::{Params, paging, params};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, bad_request};
use crate::files::uploads::{self, Upload};
use crate::metrics as m;
use crate::state::AppState;

const ROUTE: &str = "files";

fn too_large(limit: usize) -> ApiError {
    ApiError::TooLarge {
        message: format!("the file exceeds the limit of {limit} bytes (--max-file-bytes)"),
        param: Some("file"),
        code: "file_too_large",
    }
}

pub async fn upload(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    let r = async {
        let boundary = multipart::boundary(&req)?;
        let limit = st.max_file_bytes;
        let (body, _budget) = match crate::body::read_bytes(&st, req, limit + FORM_OVERHEAD).await {
            Err(ApiError::TooLarge { .. }) => return Err(too_large(limit)),
            r => r?,
        };
        let mut file = None;
        let (mut purpose, mut seconds, mut anchor) = (None, None, None);
        for p in multipart::parts(body, boundary).await? {
            match p.name.as_str() {
                "file" => file = Some((p.filename.unwrap_or_default(), p.data)),
                "purpose" => purpose = Some(String::from_utf8_lossy(&p.data).trim().to_owned()),
                "expires_after[seconds]" => {
                    seconds = Some(String::from_utf8_lossy(&p.data).trim().to_owned())
                }
                "expires_after[anchor]" => {
                    anchor = Some(String::from_utf8_lossy(&p.data).trim().to_owned())
                }
                _ => {}
            }
        }
        let (filename, data) =
            file.ok_or_else(|| bad_request("the form has no 'file' part", "file"))?;
        if data.len() > limit {
            return Err(too_large(limit));
        }
        let purpose =
            purpose.ok_or_else(|| bad_request("the form has no 'purpose' part", "purpose"))?;
        if anchor.as_deref().is_some_and(|a| a != "created_at") {
            return Err(bad_request(
                "expires_after[anchor] must be 'created_at'",
                "expires_after",
            ));
        }
        let expires_after_s = match seconds {
            None => None,
            Some(s) => Some(s.parse::<u64>().map_err(|_| {
                bad_request("expires_after[seconds] must be an integer", "expires_after")
            })?),
        };
        uploads::upload(
            &st,
            &caller.tenant,
            Upload {
                filename,
                purpose,
                bytes: data.to_vec(),
                expires_after_s,
            },
        )
        .await
        .map(Json)
    }
    .await;
    m::reply(ROUTE, r)
}

pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> Response {
    let r = async {
        let p = params(q)?;
        let paging = paging(&p, 10_000, 10_000)?;
        let purpose = p.get("purpose").map(String::as_str);
        uploads::list(&st.objects, &caller.tenant, purpose, &paging)
            .await
            .map(Json)
    }
    .await;
    m::reply(ROUTE, r)
}

pub async fn get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    m::reply(
        ROUTE,
        uploads::get(&st.objects, &caller.tenant, &id)
            .await
            .map(Json),
    )
}

pub async fn delete(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    m::reply(
        ROUTE,
        uploads::delete(&st, &caller.tenant, &id).await.map(Json),
    )
}

pub async fn content(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let r: ApiResult<Response> = async {
        let (_, bytes) = uploads::content(&st.objects, &caller.tenant, &id).await?;
        Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
    }
    .await;
    m::reply(ROUTE, r)
}
