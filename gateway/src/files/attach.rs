//! Attaching files to a vector store, asynchronously as OpenAI does: the
//! attached-file record is written `in_progress` (durable) and returned;
//! a background task then extracts the file's text, ingests it into the
//! store's collection and sets `completed` (with `usage_bytes`) or
//! `failed` (with `last_error`). At most `--attach-concurrency` files are
//! processed at once per gateway; the rest wait their turn.
//!
//! Every status change is a compare-and-set on the record's version, so
//! a cancel, a detach or a second gateway replica working on the same
//! record never has its change overwritten: the task that loses the race
//! reads the record again and, if the file was detached or cancelled
//! meanwhile, removes the chunks it wrote.

use ragmesh_retriever::RetrieverError;
use ragmesh_retriever::objects::{Expect, Scope};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::store::{self, BATCH, STORE_FILE};
use super::types::{
    ChunkingStrategy, FileBatch, FileStatus, LastError, StaticChunking, StaticTag, VectorStoreFile,
};
use super::{extract, uploads};
use crate::error::{ApiError, ApiResult, bad_request, from_retriever, internal};
use crate::ingest::Document;
use crate::rag::chunk::ChunkSettings;
use crate::state::{AppState, Inner, unix_now};

/// The stored form of an attached file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attached {
    pub file: VectorStoreFile,
    /// The batch that attached it, if any (its cancel applies).
    #[serde(default)]
    pub batch_id: Option<String>,
}

/// The stored form of a file batch: the object, plus what the API does not
/// send (OpenAI lists a batch's files at its `/files`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRecord {
    pub batch: FileBatch,
    pub file_ids: Vec<String>,
    /// Set by cancel: the batch's files still in progress end `cancelled`.
    #[serde(default)]
    pub cancel_requested: bool,
}

pub fn key(vector_store_id: &str, file_id: &str) -> String {
    format!("{vector_store_id}/{file_id}")
}

/// `chunking_strategy` of a request, before it is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkingRequest {
    Auto,
    Static { max_tokens: u64, overlap: u64 },
}

/// Resolves a chunking request against the embedding model: `auto` is the
/// gateway's configured chunking (`--chunk-tokens`, `--chunk-overlap`);
/// a static size must fit the embedding model's input, since a chunk
/// longer than that would be embedded only in part.
pub fn resolve_chunking(st: &Inner, req: Option<ChunkingRequest>) -> ApiResult<ChunkingStrategy> {
    let (max_tokens, overlap) = match req.unwrap_or(ChunkingRequest::Auto) {
        ChunkingRequest::Auto => (st.chunking.tokens as u64, st.chunking.overlap as u64),
        ChunkingRequest::Static {
            max_tokens,
            overlap,
        } => {
            let window = st.embed.max_input_tokens().saturating_sub(2) as u64;
            if !(100..=4096).contains(&max_tokens) {
                return Err(bad_request(
                    format!(
                        "chunking_strategy.static.max_chunk_size_tokens must be between 100 and 4096, got {max_tokens}"
                    ),
                    "chunking_strategy",
                ));
            }
            if max_tokens > window {
                return Err(bad_request(
                    format!(
                        "chunking_strategy.static.max_chunk_size_tokens {max_tokens} exceeds what the embedding \
                         model '{}' reads ({window} tokens): use at most {window}, or 'auto'",
                        st.embed.model_id()
                    ),
                    "chunking_strategy",
                ));
            }
            if overlap > max_tokens / 2 {
                return Err(bad_request(
                    format!(
                        "chunking_strategy.static.chunk_overlap_tokens must not exceed half of max_chunk_size_tokens ({})",
                        max_tokens / 2
                    ),
                    "chunking_strategy",
                ));
            }
            (max_tokens, overlap)
        }
    };
    Ok(ChunkingStrategy {
        kind: StaticTag::Static,
        sizes: StaticChunking {
            max_chunk_size_tokens: max_tokens,
            chunk_overlap_tokens: overlap,
        },
    })
}

/// OpenAI's rules for `attributes`: at most 16 keys of up to 64
/// characters; values strings (up to 512 characters), numbers or booleans.
pub fn validate_attributes(a: &Map<String, Value>) -> ApiResult<()> {
    if a.len() > 16 {
        return Err(bad_request(
            format!("attributes holds {} keys; at most 16", a.len()),
            "attributes",
        ));
    }
    for (k, v) in a {
        if k.is_empty() || k.chars().count() > 64 {
            return Err(bad_request(
                "attribute keys must be 1-64 characters",
                "attributes",
            ));
        }
        let ok = match v {
            Value::String(s) => s.chars().count() <= 512,
            Value::Number(_) | Value::Bool(_) => true,
            _ => false,
        };
        if !ok {
            return Err(bad_request(
                format!(
                    "attribute '{k}' must be a string of up to 512 characters, a number or a boolean"
                ),
                "attributes",
            ));
        }
    }
    Ok(())
}

/// Writes the attached-file record `in_progress` and starts its
/// processing. Re-attaching a file restarts it.
pub async fn attach(
    st: &AppState,
    tenant: &str,
    vector_store_id: &str,
    file_id: &str,
    attributes: Map<String, Value>,
    chunking: ChunkingStrategy,
    batch_id: Option<String>,
) -> ApiResult<VectorStoreFile> {
    validate_attributes(&attributes)?;
    uploads::get(&st.objects, tenant, file_id).await?;
    let file = VectorStoreFile {
        id: file_id.to_owned(),
        object: "vector_store.file".into(),
        usage_bytes: 0,
        created_at: unix_now(),
        vector_store_id: vector_store_id.to_owned(),
        status: FileStatus::InProgress,
        last_error: None,
        chunking_strategy: chunking,
        attributes,
    };
    let rec = Attached {
        file: file.clone(),
        batch_id,
    };
    let k = key(vector_store_id, file_id);
    store::put(&st.objects, tenant, STORE_FILE, &k, &rec, Expect::Any).await?;
    spawn(st, tenant, vector_store_id, file_id);
    Ok(file)
}

/// Processes the attached file in the background.
pub fn spawn(st: &AppState, tenant: &str, vector_store_id: &str, file_id: &str) {
    let (st, tenant, vs, file) = (
        st.clone(),
        tenant.to_owned(),
        vector_store_id.to_owned(),
        file_id.to_owned(),
    );
    let queued = metrics::gauge!(crate::metrics::ATTACHING);
    queued.increment(1.0);
    tokio::spawn(async move {
        let slot = st.attach_slots.clone().acquire_owned().await;
        if slot.is_ok()
            && let Err(e) = process(&st, &tenant, &vs, &file).await
        {
            tracing::warn!(vector_store = %vs, file = %file, error = %e.message(), "attaching a file failed");
        }
        queued.decrement(1.0);
    });
}

/// Removes a file from a store: its record, then its chunks.
pub async fn detach(
    st: &Inner,
    tenant: &str,
    vector_store_id: &str,
    file_id: &str,
) -> ApiResult<bool> {
    let existed = store::delete(
        &st.objects,
        tenant,
        STORE_FILE,
        &key(vector_store_id, file_id),
    )
    .await?;
    remove_chunks(st, tenant, vector_store_id, file_id).await?;
    Ok(existed)
}

async fn remove_chunks(
    st: &Inner,
    tenant: &str,
    vector_store_id: &str,
    file_id: &str,
) -> ApiResult<()> {
    match st
        .retriever
        .delete_document(tenant, vector_store_id, file_id)
        .await
    {
        Ok(_) | Err(RetrieverError::NotFound(_)) => Ok(()),
        Err(e) => Err(from_retriever(e)),
    }
}

/// Extracts, ingests and records the outcome of one attached file, if it
/// is still `in_progress`. A record changed while it was processed (new
/// attributes, a re-attach) and still `in_progress` is processed again,
/// so its outcome matches what it says now.
pub async fn process(
    st: &Inner,
    tenant: &str,
    vector_store_id: &str,
    file_id: &str,
) -> ApiResult<()> {
    let k = key(vector_store_id, file_id);
    for _ in 0..MAX_RUNS {
        let Some(rec) = store::get::<Attached>(&st.objects, tenant, STORE_FILE, &k).await? else {
            return Ok(());
        };
        if rec.value.file.status != FileStatus::InProgress {
            return Ok(());
        }
        let outcome = if cancel_requested(st, tenant, &rec.value).await? {
            Outcome::Cancelled
        } else {
            match read_and_ingest(st, tenant, &rec.value).await {
                Ok(bytes) => Outcome::Completed(bytes),
                Err(e) => Outcome::Failed(e),
            }
        };
        if finish(st, tenant, &k, rec.version, rec.value, outcome).await? == Finished::Recorded {
            return Ok(());
        }
    }
    Ok(())
}

/// Runs of one attached file in a row before it is left to a later
/// resume (a record rewritten that often is being edited meanwhile).
const MAX_RUNS: usize = 3;

/// Whether the batch that attached the file was cancelled.
async fn cancel_requested(st: &Inner, tenant: &str, a: &Attached) -> ApiResult<bool> {
    let Some(b) = &a.batch_id else {
        return Ok(false);
    };
    let bk = key(&a.file.vector_store_id, b);
    Ok(store::get::<BatchRecord>(&st.objects, tenant, BATCH, &bk)
        .await?
        .is_some_and(|r| r.value.cancel_requested))
}

#[derive(Debug, PartialEq, Eq)]
enum Finished {
    /// The outcome is written, or nothing is left to write.
    Recorded,
    /// The record changed and is still `in_progress`: run it again.
    Changed,
}

enum Outcome {
    Completed(u64),
    Failed(LastError),
    Cancelled,
}

fn last_error(code: &str, message: impl Into<String>) -> LastError {
    LastError {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// The file's bytes, through extraction and ingest: the bytes stored.
async fn read_and_ingest(st: &Inner, tenant: &str, a: &Attached) -> Result<u64, LastError> {
    let f = &a.file;
    let meta = match uploads::content(&st.objects, tenant, &f.id).await {
        Ok(x) => x,
        Err(ApiError::NotFound { .. }) => {
            return Err(last_error(
                "invalid_file",
                "the file was deleted before it was processed",
            ));
        }
        Err(e) => return Err(last_error("server_error", e.into_message())),
    };
    let (file, bytes) = meta;
    let name = file.filename.clone();
    let extracted = tokio::task::spawn_blocking(move || extract::extract(&name, &bytes))
        .await
        .map_err(|e| last_error("server_error", format!("the extraction task failed: {e}")))?
        .map_err(|e| last_error(e.code, e.message))?;
    let settings = ChunkSettings {
        tokens: f.chunking_strategy.sizes.max_chunk_size_tokens as usize,
        overlap: f.chunking_strategy.sizes.chunk_overlap_tokens as usize,
    };
    let doc = Document {
        id: f.id.clone(),
        text: extracted.text,
        metadata: f.attributes.clone(),
        markdown: extracted.markdown,
    };
    match crate::ingest::ingest(st, tenant, &f.vector_store_id, vec![doc], settings).await {
        Ok(out) => Ok(out.bytes),
        // too many chunks and the like: the file's fault
        Err(e) if e.status().is_client_error() => Err(last_error("invalid_file", e.into_message())),
        Err(e) => Err(last_error("server_error", e.into_message())),
    }
}

/// Records the outcome if nobody changed the record meanwhile. Otherwise
/// removes what this run wrote when the file was detached or cancelled,
/// and asks for another run when the record is still `in_progress`.
async fn finish(
    st: &Inner,
    tenant: &str,
    k: &str,
    version: u64,
    mut rec: Attached,
    outcome: Outcome,
) -> ApiResult<Finished> {
    let wrote_chunks = matches!(outcome, Outcome::Completed(_));
    match outcome {
        Outcome::Completed(bytes) => {
            rec.file.status = FileStatus::Completed;
            rec.file.usage_bytes = bytes;
        }
        Outcome::Failed(e) => {
            rec.file.status = FileStatus::Failed;
            rec.file.last_error = Some(e);
        }
        Outcome::Cancelled => rec.file.status = FileStatus::Cancelled,
    }
    let (vs, file) = (rec.file.vector_store_id.clone(), rec.file.id.clone());
    let written = store::put(
        &st.objects,
        tenant,
        STORE_FILE,
        k,
        &rec,
        Expect::Version(version),
    )
    .await;
    match written {
        Ok(_) => {
            metrics::counter!(crate::metrics::ATTACHED, "outcome" => rec.file.status.name())
                .increment(1);
            if let Some(e) = &rec.file.last_error {
                tracing::info!(vector_store = %vs, file = %file, code = %e.code, reason = %e.message, "attached file failed");
            }
            if rec.file.status != FileStatus::Completed {
                remove_chunks(st, tenant, &vs, &file).await?;
            }
            Ok(Finished::Recorded)
        }
        Err(ApiError::Conflict { .. }) => {
            let now = store::get::<Attached>(&st.objects, tenant, STORE_FILE, k).await?;
            match now.map(|r| r.value.file.status) {
                Some(FileStatus::InProgress) => Ok(Finished::Changed),
                None | Some(FileStatus::Cancelled) => {
                    if wrote_chunks {
                        remove_chunks(st, tenant, &vs, &file).await?;
                    }
                    Ok(Finished::Recorded)
                }
                // another replica recorded an outcome first
                Some(FileStatus::Completed | FileStatus::Failed) => Ok(Finished::Recorded),
            }
        }
        Err(e) => Err(e),
    }
}

/// Cancels a batch: its files not yet processed end `cancelled`.
pub async fn cancel_batch(
    st: &Inner,
    tenant: &str,
    vector_store_id: &str,
    batch_id: &str,
) -> ApiResult<()> {
    let bk = key(vector_store_id, batch_id);
    for _ in 0..8 {
        let Some(b) = store::get::<BatchRecord>(&st.objects, tenant, BATCH, &bk).await? else {
            return Err(super::not_found_store(batch_id));
        };
        let mut batch = b.value;
        batch.cancel_requested = true;
        match store::put(
            &st.objects,
            tenant,
            BATCH,
            &bk,
            &batch,
            Expect::Version(b.version),
        )
        .await
        {
            Ok(_) => {
                for f in &batch.file_ids {
                    cancel_file(st, tenant, &key(vector_store_id, f)).await?;
                }
                return Ok(());
            }
            Err(ApiError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(internal(
        "the batch kept changing while it was cancelled; retry",
    ))
}

async fn cancel_file(st: &Inner, tenant: &str, k: &str) -> ApiResult<()> {
    for _ in 0..8 {
        let Some(r) = store::get::<Attached>(&st.objects, tenant, STORE_FILE, k).await? else {
            return Ok(());
        };
        if r.value.file.status != FileStatus::InProgress {
            return Ok(());
        }
        let mut rec = r.value;
        rec.file.status = FileStatus::Cancelled;
        match store::put(
            &st.objects,
            tenant,
            STORE_FILE,
            k,
            &rec,
            Expect::Version(r.version),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(ApiError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// After a restart: processes every tenant's `in_progress` attached file
/// (work a stopped gateway left). Ingest is idempotent (chunk ids are the
/// file's), so two replicas resuming the same file only repeat work; the
/// compare-and-set keeps one outcome.
pub async fn resume(st: AppState) {
    let pending = match store::list_scoped::<Attached>(
        &st.objects,
        Scope::AllTenants,
        STORE_FILE,
        "",
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e.message(), "cannot list attached files to resume");
            return;
        }
    };
    let mut n = 0;
    for (tenant, r) in pending {
        if r.value.file.status == FileStatus::InProgress {
            spawn(
                &st,
                &tenant,
                &r.value.file.vector_store_id,
                &r.value.file.id,
            );
            n += 1;
        }
    }
    if n > 0 {
        tracing::info!(files = n, "resuming attached files left in progress");
    }
}
