//! `Retriever`: the transport-free core. Validates every request, then
//! hands it to the configured backend, timing it for `/metrics`. A storage
//! engine's own error text (which names files under the data directory) is
//! logged here with an incident number and replaced by a message that
//! names only the number.

use std::sync::Arc;
use std::time::Instant;

use crate::backend::Backend;
use crate::error::{Result, RetrieverError};
use crate::metrics as m;
use crate::types::{Chunk, CollectionInfo, Distance, MetaFilter, ScoredChunk, SearchQuery};
use crate::validate;

#[derive(Clone)]
pub struct Retriever {
    backend: Arc<dyn Backend>,
}

/// Logs a backend failure and hides its text from the caller.
fn redact<T>(op: &'static str, r: Result<T>) -> Result<T> {
    match r {
        Err(RetrieverError::Backend(detail)) => {
            static INCIDENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            let n = INCIDENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(incident = n, op, error = %detail, "storage engine failed");
            Err(RetrieverError::Backend(format!(
                "the storage engine failed during {op} (incident {n} in the retriever's log)"
            )))
        }
        other => other,
    }
}

impl Retriever {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        m::describe();
        Self { backend }
    }

    pub async fn create_collection(
        &self,
        tenant: &str,
        name: &str,
        dims: usize,
        distance: Distance,
    ) -> Result<CollectionInfo> {
        validate::tenant(tenant)?;
        validate::collection_name(name)?;
        validate::dimensions(dims)?;
        let r = self
            .backend
            .create_collection(tenant, name, dims, distance)
            .await;
        redact("create_collection", r)
    }

    pub async fn list_collections(&self, tenant: &str) -> Result<Vec<CollectionInfo>> {
        validate::tenant(tenant)?;
        redact(
            "list_collections",
            self.backend.list_collections(tenant).await,
        )
    }

    pub async fn describe_collection(&self, tenant: &str, name: &str) -> Result<CollectionInfo> {
        validate::tenant(tenant)?;
        validate::collection_name(name)?;
        let r = self.backend.describe_collection(tenant, name).await;
        redact("describe_collection", r)
    }

    pub async fn delete_collection(&self, tenant: &str, name: &str) -> Result<()> {
        validate::tenant(tenant)?;
        validate::collection_name(name)?;
        let r = self.backend.delete_collection(tenant, name).await;
        redact("delete_collection", r)
    }

    pub async fn upsert(
        &self,
        tenant: &str,
        collection: &str,
        chunks: Vec<Chunk>,
        replace_documents: bool,
    ) -> Result<usize> {
        validate::tenant(tenant)?;
        validate::collection_name(collection)?;
        let dims = redact("upsert", self.backend.dimensions(tenant, collection).await)?;
        validate::chunks(&chunks, dims)?;
        let started = Instant::now();
        let r = self
            .backend
            .upsert(tenant, collection, chunks, replace_documents)
            .await;
        let n = redact("upsert", r)?;
        metrics::histogram!(m::UPSERT_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::UPSERTED_POINTS).increment(n as u64);
        Ok(n)
    }

    pub async fn search(
        &self,
        tenant: &str,
        collection: &str,
        query: SearchQuery,
    ) -> Result<Vec<ScoredChunk>> {
        validate::tenant(tenant)?;
        validate::collection_name(collection)?;
        validate::top_k(query.top_k)?;
        validate::query_text(&query.text)?;
        validate::filter(&query.filter)?;
        let dims = redact("search", self.backend.dimensions(tenant, collection).await)?;
        validate::vector(&query.vector, dims, "query")?;
        let started = Instant::now();
        let out = redact(
            "search",
            self.backend.search(tenant, collection, query).await,
        )?;
        metrics::histogram!(m::SEARCH_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(out)
    }

    pub async fn delete_document(
        &self,
        tenant: &str,
        collection: &str,
        doc_id: &str,
    ) -> Result<u64> {
        validate::tenant(tenant)?;
        validate::collection_name(collection)?;
        if doc_id.is_empty() {
            return Err(RetrieverError::invalid("doc_id must not be empty"));
        }
        let r = self
            .backend
            .delete_document(tenant, collection, doc_id)
            .await;
        redact("delete_document", r)
    }

    pub async fn count(&self, tenant: &str, collection: &str, filter: MetaFilter) -> Result<u64> {
        validate::tenant(tenant)?;
        validate::collection_name(collection)?;
        validate::filter(&filter)?;
        redact(
            "count",
            self.backend.count(tenant, collection, filter).await,
        )
    }
}
