//! `/v1/vector_stores` and its `/files`, `/file_batches` and `/search`:
//! thin HTTP over [`crate::files::stores`] and [`crate::files::search`].
//! Bodies are read with [`crate::fields`], so a wrong field is a 400 that
//! names it.

use axum::Json;
use axum::extract::{Extension, Path, Request, State};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::paging::{Params, paging, params};
use crate::auth::Caller;
use crate::error::{ApiResult, bad_request};
use crate::fields::{self, Body};
use crate::files::attach::ChunkingRequest;
use crate::files::search::{self, SearchRequest};
use crate::files::stores::{self, CreateBatch, CreateStore, FileQuery, ModifyStore};
use crate::files::types::{ExpiresAfter, FileStatus};
use crate::metrics as m;
use crate::state::AppState;

const ROUTE: &str = "vector_stores";

async fn body(st: &AppState, req: Request) -> ApiResult<crate::body::JsonBody> {
    crate::body::read_json(
        st,
        req,
        &[
            "file_ids",
            "files",
            "filters",
            "query",
            "metadata",
            "attributes",
        ],
    )
    .await
}

fn chunking(b: &Body) -> ApiResult<Option<ChunkingRequest>> {
    let Some(c) = fields::opt_object(b, "chunking_strategy")? else {
        return Ok(None);
    };
    match c.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(Some(ChunkingRequest::Auto)),
        Some("static") => {
            let s = fields::opt_object(c, "static")?.ok_or_else(|| {
                bad_request(
                    "a static chunking_strategy needs a 'static' object",
                    "chunking_strategy",
                )
            })?;
            let num = |k: &'static str| -> ApiResult<u64> {
                fields::opt_i64(s, k)?
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(|| {
                        bad_request(
                            format!("chunking_strategy.static.{k} must be a non-negative integer"),
                            "chunking_strategy",
                        )
                    })
            };
            Ok(Some(ChunkingRequest::Static {
                max_tokens: num("max_chunk_size_tokens")?,
                overlap: num("chunk_overlap_tokens")?,
            }))
        }
        other => Err(bad_request(
            format!(
                "unsupported chunking_strategy type {}: use 'auto' or 'static'",
                other.map_or_else(
                    || "(none)".to_owned(),
                    |t| format!("'{}'", t.chars().take(40).collect::<String>())
                )
            ),
            "chunking_strategy",
        )),
    }
}

fn expires_after(v: &Body) -> ApiResult<ExpiresAfter> {
    let anchor = fields::req_str(v, "anchor")
        .map_err(|e| bad_request(format!("expires_after: {}", e.message()), "expires_after"))?;
    let days = fields::opt_i64(v, "days")?
        .and_then(|d| u64::try_from(d).ok())
        .ok_or_else(|| {
            bad_request(
                "expires_after.days must be a positive integer",
                "expires_after",
            )
        })?;
    Ok(ExpiresAfter { anchor, days })
}

fn string_list(b: &Body, key: &'static str) -> ApiResult<Vec<String>> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad_request(format!("'{key}' must be an array of strings"), key))
            })
            .collect(),
        Some(_) => Err(bad_request(
            format!("'{key}' must be an array of strings"),
            key,
        )),
    }
}

fn attributes(b: &Body) -> ApiResult<Map<String, Value>> {
    Ok(fields::opt_object(b, "attributes")?
        .cloned()
        .unwrap_or_default())
}

// ---- stores ---------------------------------------------------------------

pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    let r = async {
        let b = body(&st, req).await?;
        let create = CreateStore {
            name: fields::opt_str(&b, "name")?,
            file_ids: string_list(&b, "file_ids")?,
            chunking: chunking(&b)?,
            metadata: fields::opt_object(&b, "metadata")?.cloned(),
            expires_after: fields::opt_object(&b, "expires_after")?
                .map(expires_after)
                .transpose()?,
        };
        stores::create(&st, &caller.tenant, create).await.map(Json)
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
        stores::list(&st, &caller.tenant, &paging(&p, 20, 100)?)
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
    m::reply(ROUTE, stores::get(&st, &caller.tenant, &id).await.map(Json))
}

pub async fn modify(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let r = async {
        let b = body(&st, req).await?;
        let modify = ModifyStore {
            name: fields::opt_str(&b, "name")?,
            metadata: fields::opt_object(&b, "metadata")?.cloned(),
            expires_after: match b.get("expires_after") {
                None => None,
                Some(Value::Null) => Some(None),
                Some(Value::Object(o)) => Some(Some(expires_after(o)?)),
                Some(_) => {
                    return Err(bad_request(
                        "'expires_after' must be an object or null",
                        "expires_after",
                    ));
                }
            },
        };
        stores::modify(&st, &caller.tenant, &id, modify)
            .await
            .map(Json)
    }
    .await;
    m::reply(ROUTE, r)
}

pub async fn delete(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    m::reply(
        ROUTE,
        stores::delete(&st, &caller.tenant, &id).await.map(Json),
    )
}

pub async fn search(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let r = async {
        let b = body(&st, req).await?;
        let queries = match b.get("query") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    bad_request("'query' must be a string or an array of strings", "query")
                })?,
            None | Some(Value::Null) => return Err(bad_request("'query' is required", "query")),
            Some(_) => {
                return Err(bad_request(
                    "'query' must be a string or an array of strings",
                    "query",
                ));
            }
        };
        if queries.is_empty() || queries.len() > 10 || queries.iter().any(|q| q.trim().is_empty()) {
            return Err(bad_request(
                "'query' needs 1 to 10 non-empty queries",
                "query",
            ));
        }
        let max_num_results =
            fields::opt_int_in(&b, "max_num_results", 1, 50)?.unwrap_or(10) as usize;
        let filter = match b.get("filters") {
            None | Some(Value::Null) => Default::default(),
            Some(v) => search::parse_filter(v)?,
        };
        let score_threshold = match fields::opt_object(&b, "ranking_options")? {
            Some(r) => fields::opt_f32(r, "score_threshold", 0.0, 1.0)?,
            None => None,
        };
        // accepted; the query is searched as written (search_query says so)
        fields::opt_bool(&b, "rewrite_query")?;
        let req = SearchRequest {
            queries,
            max_num_results,
            filter,
            score_threshold,
        };
        search::search(&st, &caller.tenant, &id, req)
            .await
            .map(Json)
    }
    .await;
    m::reply(ROUTE, r)
}

// ---- attached files -------------------------------------------------------

pub async fn attach(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let r = async {
        let b = body(&st, req).await?;
        let file_id = fields::req_str(&b, "file_id")?;
        stores::attach_file(
            &st,
            &caller.tenant,
            &id,
            &file_id,
            attributes(&b)?,
            chunking(&b)?,
        )
        .await
        .map(Json)
    }
    .await;
    m::reply(ROUTE, r)
}

fn file_query(q: Params, batch_id: Option<String>) -> ApiResult<FileQuery> {
    let p = params(q)?;
    let status = match p.get("filter") {
        None => None,
        Some(s) => Some(FileStatus::from_name(s).ok_or_else(|| {
            bad_request(
                "filter must be one of in_progress, completed, failed, cancelled",
                "filter",
            )
        })?),
    };
    Ok(FileQuery {
        status,
        batch_id,
        paging: paging(&p, 20, 100)?,
    })
}

pub async fn list_files(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Params,
) -> Response {
    let r = async {
        stores::list_files(&st, &caller.tenant, &id, file_query(q, None)?)
            .await
            .map(Json)
    }
    .await;
    m::reply(ROUTE, r)
}

pub async fn get_file(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, file_id)): Path<(String, String)>,
) -> Response {
    let r = stores::get_file(&st, &caller.tenant, &id, &file_id)
        .await
        .map(|a| Json(a.value.file));
    m::reply(ROUTE, r)
}

pub async fn update_file(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, file_id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let r = async {
        let b = body(&st, req).await?;
        if !b.contains_key("attributes") {
            return Err(bad_request("'attributes' is required", "attributes"));
        }
        stores::update_file(&st, &caller.tenant, &id, &file_id, attributes(&b)?)
            .await
            .map(Json)
    }
    .await;
    m::reply(ROUTE, r)
}

pub async fn delete_file(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, file_id)): Path<(String, String)>,
) -> Response {
    m::reply(
        ROUTE,
        stores::delete_file(&st, &caller.tenant, &id, &file_id)
            .await
            .map(Json),
    )
}

pub async fn file_content(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, file_id)): Path<(String, String)>,
) -> Response {
    let r = stores::file_text(&st, &caller.tenant, &id, &file_id).await.map(|texts| {
        Json(json!({
            "object": "vector_store.file_content.page",
            "data": texts.into_iter().map(|t| json!({"type": "text", "text": t})).collect::<Vec<_>>(),
            "has_more": false,
            "next_page": null,
        }))
    });
    m::reply(ROUTE, r)
}

// ---- batches --------------------------------------------------------------

pub async fn create_batch(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let r = async {
        let b = body(&st, req).await?;
        let shared = attributes(&b)?;
        let mut files: Vec<(String, Map<String, Value>)> = string_list(&b, "file_ids")?
            .into_iter()
            .map(|f| (f, shared.clone()))
            .collect();
        if let Some(v) = b.get("files").filter(|v| !v.is_null()) {
            let Value::Array(items) = v else {
                return Err(bad_request(
                    "'files' must be an array of {file_id, attributes}",
                    "files",
                ));
            };
            for item in items {
                let Value::Object(o) = item else {
                    return Err(bad_request(
                        "each of 'files' must be an object with a file_id",
                        "files",
                    ));
                };
                let f = fields::req_str(o, "file_id")
                    .map_err(|e| bad_request(format!("files: {}", e.message()), "files"))?;
                files.push((f, attributes(o)?));
            }
        }
        if files.is_empty() {
            return Err(bad_request(
                "a batch needs 'file_ids' or 'files'",
                "file_ids",
            ));
        }
        let create = CreateBatch {
            files,
            chunking: chunking(&b)?,
        };
        stores::create_batch(&st, &caller.tenant, &id, create)
            .await
            .map(Json)
    }
    .await;
    m::reply(ROUTE, r)
}

pub async fn get_batch(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, batch)): Path<(String, String)>,
) -> Response {
    m::reply(
        ROUTE,
        stores::get_batch(&st, &caller.tenant, &id, &batch)
            .await
            .map(Json),
    )
}

pub async fn cancel_batch(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, batch)): Path<(String, String)>,
) -> Response {
    m::reply(
        ROUTE,
        stores::cancel_batch(&st, &caller.tenant, &id, &batch)
            .await
            .map(Json),
    )
}

pub async fn batch_files(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, batch)): Path<(String, String)>,
    q: Params,
) -> Response {
    let r = async {
        stores::get_batch(&st, &caller.tenant, &id, &batch).await?;
        stores::list_files(&st, &caller.tenant, &id, file_query(q, Some(batch))?)
            .await
            .map(Json)
    }
    .await;
    m::reply(ROUTE, r)
}
