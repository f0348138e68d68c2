//! `GET /v1/models[/{id}]` (the chat model, the embedding model and every
//! RAG profile) and `POST /v1/embeddings`.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use ragmesh_embedder::http::{embeddings_response, parse_request};
use ragmesh_telemetry::otel::genai;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::error::{ApiResult, bad_request, unknown_model};
use crate::metrics as m;
use crate::routing::Backend;
use crate::state::AppState;

fn model(id: &str, created: u64, owned_by: &str, extra: Value) -> Value {
    let mut v = json!({"id": id, "object": "model", "created": created, "owned_by": owned_by});
    if let (Value::Object(v), Value::Object(e)) = (&mut v, extra) {
        v.extend(e);
    }
    v
}

fn all(st: &AppState) -> Vec<Value> {
    let mut out = Vec::new();
    for (name, b) in st.models.iter() {
        out.push(match b {
            Backend::Runner(l) => model(
                name,
                st.started,
                "ragmesh",
                json!({"type": "chat", "root": l.model_id(), "context_length": l.context_length()}),
            ),
            Backend::Upstream(u) => model(
                name,
                st.started,
                "upstream",
                json!({"type": "chat", "upstreams": u.targets.iter().map(|t| t.base.as_str()).collect::<Vec<_>>()}),
            ),
        });
    }
    out.extend([model(
        st.embed.model_id(),
        st.started,
        "ragmesh",
        json!({"type": "embedding", "dimensions": st.embed.dims()}),
    )]);
    let mut names: Vec<_> = st.profiles.keys().collect();
    names.sort();
    for n in names {
        let p = &st.profiles[n];
        out.push(model(
            &p.name,
            st.started,
            "ragmesh",
            json!({"type": "rag", "root": p.model, "collection": p.spec.collection}),
        ));
    }
    let mut aliases: Vec<_> = st.aliases.iter().collect();
    aliases.sort();
    for (alias, target) in aliases {
        out.push(model(
            alias,
            st.started,
            "ragmesh",
            json!({"type": "alias", "root": target}),
        ));
    }
    out
}

pub async fn list(State(st): State<AppState>) -> Response {
    m::request("models", 200);
    Json(json!({"object": "list", "data": all(&st)})).into_response()
}

pub async fn get(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match all(&st).into_iter().find(|m| m["id"] == id.as_str()) {
        Some(m) => Json(m).into_response(),
        None => unknown_model(&id).into_response(),
    }
}

pub async fn embeddings(State(st): State<AppState>, req: Request) -> Response {
    m::reply("embeddings", inner(&st, req).await.map(Json))
}

async fn inner(st: &AppState, req: Request) -> ApiResult<Value> {
    let body = crate::body::read_json(st, req, &["input"]).await?;
    let parsed = parse_request(&body, st.embed.dims()).map_err(crate::error::from_embed_request)?;
    if !st.embed.accepts(&parsed.model) {
        if st.models.get(&parsed.model).is_some() || st.profiles.contains_key(&parsed.model) {
            return Err(bad_request(
                format!("'{}' is not an embedding model", parsed.model),
                "model",
            ));
        }
        return Err(unknown_model(&parsed.model));
    }
    let span = crate::trace::genai_span("embeddings", &parsed.model, genai::PROVIDER_RAGMESH);
    let out = st.embed.embed(parsed.input).instrument(span.clone()).await;
    crate::trace::on_error(&span, &out);
    let (vectors, tokens) = out?;
    genai::set(&span, genai::RESPONSE_MODEL, st.embed.model_id().to_owned());
    genai::set(&span, genai::INPUT_TOKENS, tokens as i64);
    genai::set(
        &span,
        genai::EMBEDDING_DIMENSIONS,
        vectors.first().map_or(0, Vec::len) as i64,
    );
    Ok(embeddings_response(
        st.embed.model_id(),
        &vectors,
        tokens,
        parsed.base64,
    ))
}
