//! The Vector Stores core: create, list, retrieve, modify, delete, and the
//! attached files and batches under a store. A store is a record plus a
//! retriever collection named by its id.

use ragmesh_retriever::objects::Expect;
use ragmesh_retriever::{Distance, RetrieverError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::attach::{self, Attached, BatchRecord, ChunkingRequest};
use super::store::{self, BATCH, STORE_FILE, VECTOR_STORE, Versioned};
use super::types::{
    Deleted, ExpiresAfter, FileBatch, FileCounts, FileStatus, ListPage, VectorStore,
    VectorStoreFile,
};
use super::uploads::{Paging, page};
use super::{ids, not_found_file, not_found_store, uploads};
use crate::error::{ApiError, ApiResult, bad_request, from_retriever, not_found};
use crate::state::{AppState, Inner, unix_now};

/// What the store keeps of a vector store (the rest is computed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreRecord {
    pub id: String,
    pub created_at: u64,
    pub name: String,
    pub expires_after: Option<ExpiresAfter>,
    pub last_active_at: u64,
    pub metadata: Map<String, Value>,
}

pub struct CreateStore {
    pub name: Option<String>,
    pub file_ids: Vec<String>,
    pub chunking: Option<ChunkingRequest>,
    pub metadata: Option<Map<String, Value>>,
    pub expires_after: Option<ExpiresAfter>,
}

/// OpenAI's `metadata`: at most 16 keys of up to 64 characters, string
/// values of up to 512.
pub fn validate_metadata(m: &Map<String, Value>) -> ApiResult<()> {
    if m.len() > 16 {
        return Err(bad_request(
            format!("metadata holds {} keys; at most 16", m.len()),
            "metadata",
        ));
    }
    for (k, v) in m {
        let ok = !k.is_empty()
            && k.chars().count() <= 64
            && v.as_str().is_some_and(|s| s.chars().count() <= 512);
        if !ok {
            return Err(bad_request(
                "metadata keys must be 1-64 characters and values strings of up to 512",
                "metadata",
            ));
        }
    }
    Ok(())
}

pub fn validate_expiry(e: &ExpiresAfter) -> ApiResult<()> {
    if e.anchor != "last_active_at" {
        return Err(bad_request(
            format!(
                "expires_after.anchor must be 'last_active_at', got '{}'",
                e.anchor
            ),
            "expires_after",
        ));
    }
    if !(1..=365).contains(&e.days) {
        return Err(bad_request(
            "expires_after.days must be between 1 and 365",
            "expires_after",
        ));
    }
    Ok(())
}

fn expires_at(r: &StoreRecord) -> Option<u64> {
    r.expires_after
        .as_ref()
        .map(|e| r.last_active_at + e.days * 86_400)
}

/// The API object: the record plus what its attached files say.
fn object(r: StoreRecord, files: &[VectorStoreFile]) -> VectorStore {
    let mut counts = FileCounts::default();
    let mut usage = 0;
    for f in files {
        counts.add(f.status);
        usage += f.usage_bytes;
    }
    let expires_at = expires_at(&r);
    let status = if expires_at.is_some_and(|t| t <= unix_now()) {
        "expired"
    } else if counts.in_progress > 0 {
        "in_progress"
    } else {
        "completed"
    };
    VectorStore {
        id: r.id,
        object: "vector_store".into(),
        created_at: r.created_at,
        name: r.name,
        usage_bytes: usage,
        file_counts: counts,
        status: status.into(),
        expires_after: r.expires_after,
        expires_at,
        last_active_at: Some(r.last_active_at),
        metadata: r.metadata,
    }
}

async fn attached(st: &Inner, tenant: &str, id: &str) -> ApiResult<Vec<Versioned<Attached>>> {
    store::list::<Attached>(&st.objects, tenant, STORE_FILE, &format!("{id}/")).await
}

pub async fn record(st: &Inner, tenant: &str, id: &str) -> ApiResult<Versioned<StoreRecord>> {
    if !ids::plausible(id) {
        return Err(not_found_store(id));
    }
    store::get::<StoreRecord>(&st.objects, tenant, VECTOR_STORE, id)
        .await?
        .ok_or_else(|| not_found_store(id))
}

pub async fn get(st: &Inner, tenant: &str, id: &str) -> ApiResult<VectorStore> {
    let r = record(st, tenant, id).await?;
    let files: Vec<VectorStoreFile> = attached(st, tenant, id)
        .await?
        .into_iter()
        .map(|a| a.value.file)
        .collect();
    Ok(object(r.value, &files))
}

pub async fn create(st: &AppState, tenant: &str, req: CreateStore) -> ApiResult<VectorStore> {
    if let Some(m) = &req.metadata {
        validate_metadata(m)?;
    }
    if let Some(e) = &req.expires_after {
        validate_expiry(e)?;
    }
    let name = req.name.unwrap_or_default();
    if name.chars().count() > 256 {
        return Err(bad_request("name must be at most 256 characters", "name"));
    }
    if req.file_ids.len() > 500 {
        return Err(bad_request(
            "file_ids holds more than 500 files",
            "file_ids",
        ));
    }
    let chunking = attach::resolve_chunking(st, req.chunking)?;
    // every file must exist before anything is created
    for f in &req.file_ids {
        uploads::get(&st.objects, tenant, f).await?;
    }
    let id = ids::vector_store();
    st.retriever
        .create_collection(tenant, &id, st.embed.dims(), Distance::Cosine)
        .await
        .map_err(from_retriever)?;
    let now = unix_now();
    let rec = StoreRecord {
        id: id.clone(),
        created_at: now,
        name,
        expires_after: req.expires_after,
        last_active_at: now,
        metadata: req.metadata.unwrap_or_default(),
    };
    store::put(&st.objects, tenant, VECTOR_STORE, &id, &rec, Expect::Absent).await?;
    let mut files = Vec::with_capacity(req.file_ids.len());
    for f in &req.file_ids {
        files.push(attach::attach(st, tenant, &id, f, Map::new(), chunking, None).await?);
    }
    Ok(object(rec, &files))
}

pub async fn list(st: &Inner, tenant: &str, q: &Paging) -> ApiResult<ListPage<VectorStore>> {
    let records = store::list::<StoreRecord>(&st.objects, tenant, VECTOR_STORE, "").await?;
    let all_files = store::list::<Attached>(&st.objects, tenant, STORE_FILE, "").await?;
    let stores = records
        .into_iter()
        .map(|r| {
            let files: Vec<VectorStoreFile> = all_files
                .iter()
                .filter(|a| a.value.file.vector_store_id == r.value.id)
                .map(|a| a.value.file.clone())
                .collect();
            object(r.value, &files)
        })
        .collect();
    Ok(page(stores, |s| &s.id, q))
}

pub struct ModifyStore {
    pub name: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// `Some(None)`: remove the expiry.
    pub expires_after: Option<Option<ExpiresAfter>>,
}

pub async fn modify(st: &Inner, tenant: &str, id: &str, m: ModifyStore) -> ApiResult<VectorStore> {
    if let Some(md) = &m.metadata {
        validate_metadata(md)?;
    }
    if let Some(Some(e)) = &m.expires_after {
        validate_expiry(e)?;
    }
    if m.name.as_ref().is_some_and(|n| n.chars().count() > 256) {
        return Err(bad_request("name must be at most 256 characters", "name"));
    }
    for _ in 0..8 {
        let r = record(st, tenant, id).await?;
        let mut rec = r.value;
        if let Some(n) = &m.name {
            rec.name = n.clone();
        }
        if let Some(md) = &m.metadata {
            rec.metadata = md.clone();
        }
        if let Some(e) = &m.expires_after {
            rec.expires_after = e.clone();
        }
        match store::put(
            &st.objects,
            tenant,
            VECTOR_STORE,
            id,
            &rec,
            Expect::Version(r.version),
        )
        .await
        {
            Ok(_) => return get(st, tenant, id).await,
            Err(ApiError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(crate::error::internal(
        "the vector store kept changing; retry",
    ))
}

pub async fn delete(st: &Inner, tenant: &str, id: &str) -> ApiResult<Deleted> {
    record(st, tenant, id).await?;
    for a in attached(st, tenant, id).await? {
        store::delete(
            &st.objects,
            tenant,
            STORE_FILE,
            &attach::key(id, &a.value.file.id),
        )
        .await?;
    }
    for b in store::list::<BatchRecord>(&st.objects, tenant, BATCH, &format!("{id}/")).await? {
        store::delete(
            &st.objects,
            tenant,
            BATCH,
            &attach::key(id, &b.value.batch.id),
        )
        .await?;
    }
    match st.retriever.delete_collection(tenant, id).await {
        Ok(()) | Err(RetrieverError::NotFound(_)) => {}
        Err(e) => return Err(from_retriever(e)),
    }
    store::delete(&st.objects, tenant, VECTOR_STORE, id).await?;
    Ok(Deleted {
        id: id.to_owned(),
        object: "vector_store.deleted",
        deleted: true,
    })
}

/// Marks the store active now (for `expires_after` anchored on
/// `last_active_at`); at most one write a minute, and a lost race is
/// fine (another request just did it).
pub async fn touch(st: &Inner, tenant: &str, r: Versioned<StoreRecord>) {
    let now = unix_now();
    if now < r.value.last_active_at + 60 {
        return;
    }
    let mut rec = r.value;
    rec.last_active_at = now;
    let _ = store::put(
        &st.objects,
        tenant,
        VECTOR_STORE,
        &rec.id.clone(),
        &rec,
        Expect::Version(r.version),
    )
    .await;
}

/// A store that can be read and written (not expired).
pub async fn live(st: &Inner, tenant: &str, id: &str) -> ApiResult<Versioned<StoreRecord>> {
    let r = record(st, tenant, id).await?;
    if expires_at(&r.value).is_some_and(|t| t <= unix_now()) {
        return Err(bad_request(
            format!("vector store '{id}' has expired"),
            "vector_store_id",
        ));
    }
    Ok(r)
}

// ---- attached files -------------------------------------------------------

pub async fn attach_file(
    st: &AppState,
    tenant: &str,
    id: &str,
    file_id: &str,
    attributes: Map<String, Value>,
    chunking: Option<ChunkingRequest>,
) -> ApiResult<VectorStoreFile> {
    live(st, tenant, id).await?;
    let chunking = attach::resolve_chunking(st, chunking)?;
    attach::attach(st, tenant, id, file_id, attributes, chunking, None).await
}

pub async fn get_file(
    st: &Inner,
    tenant: &str,
    id: &str,
    file_id: &str,
) -> ApiResult<Versioned<Attached>> {
    record(st, tenant, id).await?;
    if !ids::plausible(file_id) {
        return Err(not_found_file(file_id));
    }
    store::get::<Attached>(&st.objects, tenant, STORE_FILE, &attach::key(id, file_id))
        .await?
        .ok_or_else(|| {
            not_found(
                format!("No file '{file_id}' in vector store '{id}'"),
                Some("file_id"),
                "not_found",
            )
        })
}

pub struct FileQuery {
    pub status: Option<FileStatus>,
    pub batch_id: Option<String>,
    pub paging: Paging,
}

pub async fn list_files(
    st: &Inner,
    tenant: &str,
    id: &str,
    q: FileQuery,
) -> ApiResult<ListPage<VectorStoreFile>> {
    record(st, tenant, id).await?;
    let files = attached(st, tenant, id)
        .await?
        .into_iter()
        .map(|a| a.value)
        .filter(|a| q.status.is_none_or(|s| a.file.status == s))
        .filter(|a| {
            q.batch_id
                .as_ref()
                .is_none_or(|b| a.batch_id.as_ref() == Some(b))
        })
        .map(|a| a.file)
        .collect();
    Ok(page(files, |f| &f.id, &q.paging))
}

/// New attributes: the file's chunks are re-ingested with them (filters
/// read attributes from the chunks), before the answer.
pub async fn update_file(
    st: &AppState,
    tenant: &str,
    id: &str,
    file_id: &str,
    attributes: Map<String, Value>,
) -> ApiResult<VectorStoreFile> {
    attach::validate_attributes(&attributes)?;
    let r = get_file(st, tenant, id, file_id).await?;
    let mut rec = r.value;
    rec.file.attributes = attributes;
    let reprocess = rec.file.status == FileStatus::Completed;
    if reprocess {
        rec.file.status = FileStatus::InProgress;
    }
    let k = attach::key(id, file_id);
    store::put(
        &st.objects,
        tenant,
        STORE_FILE,
        &k,
        &rec,
        Expect::Version(r.version),
    )
    .await?;
    if reprocess {
        attach::process(st, tenant, id, file_id).await?;
    }
    Ok(get_file(st, tenant, id, file_id).await?.value.file)
}

pub async fn delete_file(st: &Inner, tenant: &str, id: &str, file_id: &str) -> ApiResult<Deleted> {
    get_file(st, tenant, id, file_id).await?;
    attach::detach(st, tenant, id, file_id).await?;
    Ok(Deleted {
        id: file_id.to_owned(),
        object: "vector_store.file.deleted",
        deleted: true,
    })
}

/// The text the store read from a file (what its chunks were cut from),
/// for OpenAI's `vector_store.file_content.page`.
pub async fn file_text(
    st: &Inner,
    tenant: &str,
    id: &str,
    file_id: &str,
) -> ApiResult<Vec<String>> {
    get_file(st, tenant, id, file_id).await?;
    let (file, bytes) = uploads::content(&st.objects, tenant, file_id).await?;
    let name = file.filename;
    let text = tokio::task::spawn_blocking(move || super::extract::extract(&name, &bytes))
        .await
        .map_err(|e| crate::error::internal(format!("extraction task failed: {e}")))?
        .map_err(|e| bad_request(e.message, "file_id"))?;
    Ok(vec![text.text])
}

// ---- batches --------------------------------------------------------------

pub struct CreateBatch {
    /// `(file id, attributes)`
    pub files: Vec<(String, Map<String, Value>)>,
    pub chunking: Option<ChunkingRequest>,
}

pub async fn create_batch(
    st: &AppState,
    tenant: &str,
    id: &str,
    req: CreateBatch,
) -> ApiResult<FileBatch> {
    live(st, tenant, id).await?;
    if req.files.is_empty() || req.files.len() > 500 {
        return Err(bad_request("a batch takes 1 to 500 files", "file_ids"));
    }
    let chunking = attach::resolve_chunking(st, req.chunking)?;
    for (f, attrs) in &req.files {
        uploads::get(&st.objects, tenant, f).await?;
        attach::validate_attributes(attrs)?;
    }
    let batch_id = ids::batch();
    let batch = BatchRecord {
        batch: FileBatch {
            id: batch_id.clone(),
            object: "vector_store.files_batch".into(),
            created_at: unix_now(),
            vector_store_id: id.to_owned(),
            status: FileStatus::InProgress,
            file_counts: FileCounts::default(),
        },
        file_ids: req.files.iter().map(|(f, _)| f.clone()).collect(),
        cancel_requested: false,
    };
    store::put(
        &st.objects,
        tenant,
        BATCH,
        &attach::key(id, &batch_id),
        &batch,
        Expect::Absent,
    )
    .await?;
    for (f, attrs) in req.files {
        attach::attach(st, tenant, id, &f, attrs, chunking, Some(batch_id.clone())).await?;
    }
    get_batch(st, tenant, id, &batch_id).await
}

pub async fn get_batch(st: &Inner, tenant: &str, id: &str, batch_id: &str) -> ApiResult<FileBatch> {
    record(st, tenant, id).await?;
    let missing = || {
        not_found(
            format!("No file batch '{batch_id}' in vector store '{id}'"),
            Some("batch_id"),
            "not_found",
        )
    };
    if !ids::plausible(batch_id) {
        return Err(missing());
    }
    let b = store::get::<BatchRecord>(&st.objects, tenant, BATCH, &attach::key(id, batch_id))
        .await?
        .ok_or_else(missing)?;
    let cancel_requested = b.value.cancel_requested;
    let mut batch = b.value.batch;
    let mut counts = FileCounts::default();
    for a in attached(st, tenant, id).await? {
        if a.value.batch_id.as_deref() == Some(batch_id) {
            counts.add(a.value.file.status);
        }
    }
    batch.file_counts = counts;
    batch.status = if counts.in_progress > 0 {
        FileStatus::InProgress
    } else if cancel_requested {
        FileStatus::Cancelled
    } else {
        FileStatus::Completed
    };
    Ok(batch)
}

pub async fn cancel_batch(
    st: &Inner,
    tenant: &str,
    id: &str,
    batch_id: &str,
) -> ApiResult<FileBatch> {
    get_batch(st, tenant, id, batch_id).await?;
    attach::cancel_batch(st, tenant, id, batch_id).await?;
    get_batch(st, tenant, id, batch_id).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::types::{ChunkingStrategy, StaticChunking, StaticTag};

    fn file(status: FileStatus, bytes: u64) -> VectorStoreFile {
        VectorStoreFile {
            id: "file-1".into(),
            object: "vector_store.file".into(),
            usage_bytes: bytes,
            created_at: 0,
            vector_store_id: "vs_1".into(),
            status,
            last_error: None,
            chunking_strategy: ChunkingStrategy {
                kind: StaticTag::Static,
                sizes: StaticChunking {
                    max_chunk_size_tokens: 160,
                    chunk_overlap_tokens: 32,
                },
            },
            attributes: Map::new(),
        }
    }

    fn record(last_active_at: u64, days: Option<u64>) -> StoreRecord {
        StoreRecord {
            id: "vs_1".into(),
            created_at: 0,
            name: "n".into(),
            expires_after: days.map(|days| ExpiresAfter {
                anchor: "last_active_at".into(),
                days,
            }),
            last_active_at,
            metadata: Map::new(),
        }
    }

    #[test]
    fn counts_usage_and_status_come_from_the_files() {
        let now = unix_now();
        let files = [
            file(FileStatus::Completed, 100),
            file(FileStatus::Failed, 0),
            file(FileStatus::InProgress, 0),
            file(FileStatus::Completed, 50),
        ];
        let vs = object(record(now, None), &files);
        assert_eq!(vs.file_counts.total, 4);
        assert_eq!(
            (
                vs.file_counts.completed,
                vs.file_counts.failed,
                vs.file_counts.in_progress
            ),
            (2, 1, 1)
        );
        assert_eq!(vs.usage_bytes, 150);
        assert_eq!(vs.status, "in_progress");
        assert_eq!(object(record(now, None), &files[..2]).status, "completed");
        // expiry is anchored on the last activity
        let fresh = object(record(now, Some(1)), &[]);
        assert_eq!(
            (fresh.status.as_str(), fresh.expires_at),
            ("completed", Some(now + 86_400))
        );
        let stale = object(record(now - 2 * 86_400, Some(1)), &[]);
        assert_eq!(stale.status, "expired");
    }

    #[test]
    fn metadata_and_expiry_follow_openai_rules() {
        let mut m = Map::new();
        m.insert("team".into(), Value::String("ops".into()));
        assert!(validate_metadata(&m).is_ok());
        m.insert("n".into(), Value::from(1));
        assert!(validate_metadata(&m).is_err());
        let bad_anchor = ExpiresAfter {
            anchor: "created_at".into(),
            days: 3,
        };
        assert!(validate_expiry(&bad_anchor).is_err());
        let too_long = ExpiresAfter {
            anchor: "last_active_at".into(),
            days: 366,
        };
        assert!(validate_expiry(&too_long).is_err());
    }
}
