//! Query-time retrieval: embed the question, search the collection, and
//! describe what was used (citations, the `rag` summary with its timings).

use std::time::Instant;

use ragmesh_retriever::{Fusion, ScoredChunk, SearchQuery};
use ragmesh_telemetry::otel::genai;
use serde_json::{Value, json};
use tracing::Instrument;

use super::profile::RagSpec;
use crate::error::{ApiResult, from_retriever, internal};
use crate::metrics as m;
use crate::state::Inner;

/// Characters of chunk text a citation carries.
const EXCERPT_CHARS: usize = 240;

pub struct Retrieved {
    pub chunks: Vec<ScoredChunk>,
    pub embed_ms: f64,
    pub search_ms: f64,
}

pub async fn retrieve(
    st: &Inner,
    tenant: &str,
    spec: &RagSpec,
    query: &str,
) -> ApiResult<Retrieved> {
    // the embedder reads at most its input length of tokens, so text past
    // that bound cannot change the vector; cutting by characters first
    // keeps a huge message from being tokenized (and BM25-scored) whole
    let query = truncate_chars(
        query,
        st.embed.max_input_tokens() * super::chunk::MAX_CHARS_PER_TOKEN,
    );
    let t0 = Instant::now();
    let embed_span =
        crate::trace::genai_span("embeddings", st.embed.model_id(), genai::PROVIDER_RAGMESH);
    let (mut vectors, tokens) = st
        .embed
        .embed(vec![query.to_owned()])
        .instrument(embed_span.clone())
        .await?;
    genai::set(&embed_span, genai::INPUT_TOKENS, tokens as i64);
    drop(embed_span);
    let vector = vectors
        .pop()
        .ok_or_else(|| internal("the embedder returned no vector"))?;
    let embed = t0.elapsed();
    let t1 = Instant::now();
    let search_span = tracing::info_span!(
        "search",
        otel.name = %format!("search {}", spec.collection),
        db.system.name = "qdrant",
        db.collection.name = %spec.collection,
        rag.top_k = spec.top_k as i64,
        rag.hybrid = spec.hybrid,
        rag.hits = tracing::field::Empty,
    );
    let chunks = st
        .retriever
        .search(
            tenant,
            &spec.collection,
            SearchQuery {
                vector,
                text: query.to_owned(),
                filter: spec.filter.clone(),
                top_k: spec.top_k,
                score_threshold: spec.score_threshold,
                fusion: if spec.hybrid {
                    Fusion::HybridRrf
                } else {
                    Fusion::Dense
                },
            },
        )
        .instrument(search_span.clone())
        .await
        .map_err(from_retriever)?;
    search_span.record("rag.hits", chunks.len() as i64);
    let search = t1.elapsed();
    metrics::histogram!(m::RAG_STAGE, "stage" => "embed").record(embed.as_secs_f64());
    metrics::histogram!(m::RAG_STAGE, "stage" => "search").record(search.as_secs_f64());
    Ok(Retrieved {
        chunks,
        embed_ms: embed.as_secs_f64() * 1e3,
        search_ms: search.as_secs_f64() * 1e3,
    })
}

/// The first `max` characters of `text`.
pub fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// The `citations` extension: one entry per chunk placed in the prompt,
/// `index` being the number the prompt shows it under.
pub fn citations(used: &[ScoredChunk]) -> Value {
    Value::Array(
        used.iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "index": i + 1,
                    "doc_id": c.doc_id,
                    "chunk_id": c.id,
                    "score": c.score,
                    "text": excerpt(&c.text),
                    "metadata": c.metadata,
                })
            })
            .collect(),
    )
}

/// Chunk JSON for `/v1/collections/{name}/search`: the whole text.
pub fn search_hit(c: &ScoredChunk) -> Value {
    json!({
        "object": "chunk",
        "chunk_id": c.id,
        "doc_id": c.doc_id,
        "score": c.score,
        "text": c.text,
        "metadata": c.metadata,
    })
}
