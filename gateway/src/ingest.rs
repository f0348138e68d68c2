//! `ingest()`: the one way documents enter a collection — the collections
//! API, the vector-store file attach and the demo ingest at start-up all
//! call it. Each document is chunked (token-aware, with overlap), its
//! chunks embedded in batches and upserted with `replace_documents`, so
//! re-ingesting an id atomically replaces its old chunks. It returns once
//! the retriever acknowledged the write (flushed to disk).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ragmesh_retriever::{Chunk, MAX_BATCH};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult, bad_request, from_retriever, internal};
use crate::metrics as m;
use crate::rag::chunk::{self, ChunkSettings, SplitError};
use crate::state::Inner;

/// Texts per embedding call during ingest.
const EMBED_BATCH: usize = 64;

/// One document to ingest.
pub struct Document {
    pub id: String,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub markdown: bool,
}

/// What one ingest stored.
#[derive(Debug, Clone, Default)]
pub struct Ingested {
    /// `(document id, chunks)` in request order.
    pub documents: Vec<(String, usize)>,
    pub chunks: usize,
    /// Bytes of chunk text and vectors written (a vector store's
    /// `usage_bytes`).
    pub bytes: u64,
}

/// Chunks, embeds and upserts `docs` into the tenant's `collection`.
pub async fn ingest(
    st: &Inner,
    tenant: &str,
    collection: &str,
    docs: Vec<Document>,
    settings: ChunkSettings,
) -> ApiResult<Ingested> {
    // the collection must exist before any work is spent
    st.retriever
        .describe_collection(tenant, collection)
        .await
        .map_err(from_retriever)?;
    // limits before work: a document that cannot fit is refused before it
    // is tokenized (see chunk::ChunkSettings::min_chunks)
    for d in &docs {
        let fewest = settings.min_chunks(&d.text);
        if fewest > MAX_BATCH {
            return Err(too_many_chunks(&d.id, fewest, settings));
        }
    }
    // set when this future is dropped (the client went away): the chunking
    // thread stops at its next chunk
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancelled.clone());
    let embed = st.embed.clone();
    let docs = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(docs.len());
        for d in docs {
            match chunk::split(
                &d.text,
                d.markdown,
                settings,
                embed.clone(),
                MAX_BATCH,
                &cancelled,
            ) {
                Ok(pieces) => out.push((d, pieces)),
                Err(e) => return Err((d.id, e)),
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| internal(format!("chunking task failed: {e}")))?
    .map_err(|(id, e)| match e {
        SplitError::TooManyChunks(n) => too_many_chunks(&id, n, settings),
        // nobody is listening; the status is for the log line
        SplitError::Cancelled => internal("ingest cancelled: the client went away"),
    })?;

    let mut out = Ingested::default();
    let mut batch: Vec<Chunk> = Vec::new();
    for (doc, pieces) in docs {
        // a document's chunks go in one upsert: `replace_documents` swaps
        // all of them at once
        if batch.len() + pieces.len() > MAX_BATCH {
            out.chunks += flush(st, tenant, collection, std::mem::take(&mut batch)).await?;
        }
        out.documents.push((doc.id.clone(), pieces.len()));
        let mut vectors = Vec::with_capacity(pieces.len());
        for group in pieces.chunks(EMBED_BATCH) {
            let (v, _) = st.embed.embed(group.to_vec()).await?;
            vectors.extend(v);
        }
        for (i, (text, vector)) in pieces.into_iter().zip(vectors).enumerate() {
            out.bytes += (text.len() + 4 * vector.len()) as u64;
            batch.push(Chunk {
                id: format!("{}#{i}", doc.id),
                doc_id: doc.id.clone(),
                text,
                vector,
                metadata: doc.metadata.clone(),
            });
        }
    }
    out.chunks += flush(st, tenant, collection, batch).await?;
    Ok(out)
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn too_many_chunks(id: &str, at_least: usize, s: ChunkSettings) -> ApiError {
    bad_request(
        format!(
            "document '{id}' makes at least {at_least} chunks; one document may make at most \
             {MAX_BATCH} (of up to {} tokens or {} characters each): split it into several documents",
            s.tokens,
            s.max_chars()
        ),
        "documents",
    )
}

async fn flush(st: &Inner, tenant: &str, collection: &str, batch: Vec<Chunk>) -> ApiResult<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let n = st
        .retriever
        .upsert(tenant, collection, batch, true)
        .await
        .map_err(from_retriever)?;
    metrics::counter!(m::INGESTED_CHUNKS).increment(n as u64);
    Ok(n)
}
