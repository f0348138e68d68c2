//! The collections API: create / list / describe / delete collections,
//! ingest documents (through [`crate::ingest::ingest`]) and delete them,
//! and search (to debug retrieval).

use axum::Json;
use axum::extract::{Extension, Path, Request, State};
use axum::response::Response;
use ragmesh_retriever::{CollectionInfo, Distance, MetaFilter};
use serde_json::{Value, json};

use super::filter;
use super::profile::{MAX_TOP_K, RagSpec};
use super::retrieve::{retrieve, search_hit};
use crate::auth::Caller;
use crate::error::{ApiResult, bad_request, from_retriever, not_found};
use crate::fields::{self, Body};
pub use crate::ingest::Document;
use crate::metrics as m;
use crate::state::AppState;

/// Documents one ingest request may carry.
pub const MAX_DOCUMENTS: usize = 1000;

fn respond(route: &'static str, r: ApiResult<Value>) -> Response {
    m::reply(route, r.map(Json))
}

fn collection_json(c: &CollectionInfo) -> Value {
    json!({
        "object": "collection",
        "name": c.name,
        "dimensions": c.dimensions,
        "distance": c.distance.name(),
        "points": c.points,
    })
}

pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    respond("collections", create_inner(&st, &caller.tenant, req).await)
}

async fn create_inner(st: &AppState, tenant: &str, req: Request) -> ApiResult<Value> {
    let body = crate::body::read_json(st, req, &[]).await?;
    let name = fields::req_str(&body, "name")?;
    let distance = match fields::opt_str(&body, "distance")? {
        None => Distance::Cosine,
        Some(d) => Distance::from_name(&d).ok_or_else(|| {
            bad_request(
                format!("unknown distance '{d}' (cosine, dot, euclid)"),
                "distance",
            )
        })?,
    };
    let info = st
        .retriever
        .create_collection(tenant, &name, st.embed.dims(), distance)
        .await
        .map_err(from_retriever)?;
    Ok(collection_json(&info))
}

pub async fn list(State(st): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    let r = st
        .retriever
        .list_collections(&caller.tenant)
        .await
        .map_err(from_retriever)
        .map(|cs| json!({"object": "list", "data": cs.iter().map(collection_json).collect::<Vec<_>>()}));
    respond("collections", r)
}

pub async fn describe(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    let r = st
        .retriever
        .describe_collection(&caller.tenant, &name)
        .await
        .map_err(from_retriever)
        .map(|c| collection_json(&c));
    respond("collections", r)
}

pub async fn delete(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    let r = st
        .retriever
        .delete_collection(&caller.tenant, &name)
        .await
        .map_err(from_retriever)
        .map(|()| json!({"object": "collection.deleted", "name": name, "deleted": true}));
    respond("collections", r)
}

fn parse_document(v: &Value, i: usize) -> ApiResult<Document> {
    let Value::Object(o) = v else {
        return Err(bad_request(
            format!("documents[{i}] must be an object"),
            "documents",
        ));
    };
    let at = |e: crate::error::ApiError| {
        bad_request(format!("documents[{i}]: {}", e.message()), "documents")
    };
    let id = fields::req_str(o, "id").map_err(at)?;
    if id.is_empty() || id.len() > 512 {
        return Err(bad_request(
            format!("documents[{i}].id must be 1 to 512 bytes"),
            "documents",
        ));
    }
    let text = fields::req_str(o, "text").map_err(at)?;
    if text.trim().is_empty() {
        return Err(bad_request(
            format!("documents[{i}].text is empty"),
            "documents",
        ));
    }
    let metadata = fields::opt_object(o, "metadata")
        .map_err(at)?
        .cloned()
        .unwrap_or_default();
    let markdown = match fields::opt_str(o, "format").map_err(at)?.as_deref() {
        None => id.ends_with(".md") || id.ends_with(".markdown"),
        Some("markdown") => true,
        Some("text") => false,
        Some(f) => {
            return Err(bad_request(
                format!("documents[{i}].format '{f}' is not one of text, markdown"),
                "documents",
            ));
        }
    };
    Ok(Document {
        id,
        text,
        metadata,
        markdown,
    })
}

/// `{"documents": [...]}`, or one document as the whole body.
fn parse_documents(body: &Body) -> ApiResult<Vec<Document>> {
    let docs = match body.get("documents") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| parse_document(v, i))
            .collect::<ApiResult<Vec<_>>>()?,
        Some(_) => return Err(bad_request("'documents' must be an array", "documents")),
        None => vec![parse_document(&Value::Object(body.clone()), 0)?],
    };
    if docs.is_empty() {
        return Err(bad_request("'documents' is empty", "documents"));
    }
    if docs.len() > MAX_DOCUMENTS {
        return Err(bad_request(
            format!(
                "{} documents in one request; at most {MAX_DOCUMENTS}",
                docs.len()
            ),
            "documents",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for d in &docs {
        if !seen.insert(d.id.as_str()) {
            return Err(bad_request(
                format!("document id '{}' appears twice", d.id),
                "documents",
            ));
        }
    }
    Ok(docs)
}

pub async fn ingest(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let r = async {
        let body = crate::body::read_json(&st, req, &["documents"]).await?;
        let docs = parse_documents(&body)?;
        let out = crate::ingest::ingest(&st, &caller.tenant, &name, docs, st.chunking).await?;
        Ok(json!({
            "object": "ingest.result",
            "collection": name,
            "documents": out.documents.len(),
            "chunks": out.chunks,
            "data": out.documents.iter().map(|(id, n)| json!({"id": id, "chunks": n})).collect::<Vec<_>>(),
        }))
    }
    .await;
    respond("documents", r)
}

pub async fn delete_document(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let r = async {
        let n = st
            .retriever
            .delete_document(&caller.tenant, &name, &id)
            .await
            .map_err(from_retriever)?;
        if n == 0 {
            return Err(not_found(
                format!("document '{id}' not found in collection '{name}'"),
                None,
                "document_not_found",
            ));
        }
        Ok(json!({"object": "document.deleted", "id": id, "deleted": true, "chunks": n}))
    }
    .await;
    respond("documents", r)
}

pub async fn search(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let r = async {
        let body = crate::body::read_json(&st, req, &["query", "filter"]).await?;
        let query = fields::req_str(&body, "query")?;
        if query.trim().is_empty() {
            return Err(bad_request("'query' is empty", "query"));
        }
        let spec = RagSpec {
            collection: name.clone(),
            top_k: fields::opt_int_in(&body, "top_k", 1, MAX_TOP_K)?.unwrap_or(5) as usize,
            score_threshold: fields::opt_f32(&body, "score_threshold", -1.0, 1.0)?,
            hybrid: fields::opt_bool(&body, "hybrid")?.unwrap_or(true),
            filter: match body.get("filter") {
                Some(v) => filter::parse(Some(v))?,
                None => MetaFilter::default(),
            },
            template: st.builtin_template.clone(),
        };
        let got = retrieve(&st, &caller.tenant, &spec, &query).await?;
        Ok(json!({
            "object": "list",
            "data": got.chunks.iter().map(search_hit).collect::<Vec<_>>(),
            "timings": {"embed_ms": got.embed_ms, "search_ms": got.search_ms},
        }))
    }
    .await;
    respond("search", r)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fields::body;

    #[test]
    fn documents_single_or_list_and_format() {
        let d = parse_documents(&body(json!({"id": "a.md", "text": "x"}))).unwrap_or_default();
        assert_eq!(d.len(), 1);
        assert!(d[0].markdown);
        let d = parse_documents(&body(json!({"documents": [
            {"id": "a", "text": "x", "metadata": {"k": 1}},
            {"id": "b", "text": "y", "format": "markdown"}
        ]})))
        .unwrap_or_default();
        assert_eq!(d.len(), 2);
        assert!(!d[0].markdown && d[1].markdown);
        assert_eq!(d[0].metadata.get("k"), Some(&json!(1)));
    }

    #[test]
    fn documents_rejected_with_reasons() {
        for bad in [
            json!({}),
            json!({"documents": []}),
            json!({"documents": "x"}),
            json!({"documents": [1]}),
            json!({"id": "", "text": "x"}),
            json!({"id": "a", "text": "  "}),
            json!({"id": 3, "text": "x"}),
            json!({"id": "a", "text": "x", "metadata": [1]}),
            json!({"id": "a", "text": "x", "format": "pdf"}),
            json!({"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}),
        ] {
            let r = parse_documents(&body(bad.clone()));
            assert!(r.is_err(), "{bad}");
        }
    }
}
