//! `Retriever`: the transport-free core. Validates every request, then
//! hands it to the configured backend, timing it for `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use crate::backend::Backend;
use crate::error::Result;
use crate::metrics as m;
use crate::types::{Chunk, CollectionInfo, Distance, MetaFilter, ScoredChunk, SearchQuery};
use crate::validate;

#[derive(Clone)]
pub struct Retriever {
    backend: Arc<dyn Backend>,
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
        self.backend
            .create_collection(tenant, name, dims, distance)
            .await
    }

    pub async fn list_collections(&self, tenant: &str) -> Result<Vec<CollectionInfo>> {
        validate::tenant(tenant)?;
        self.backend.list_collections(tenant).await
    }

    pub async fn describe_collection(&self, tenant: &str, name: &str) -> Result<CollectionInfo> {
        validate::tenant(tenant)?;
        validate::collection_name(name)?;
        self.backend.describe_collection(tenant, name).await
    }

    pub async fn delete_collection(&self, tenant: &str, name: &str) -> Result<()> {
        validate::tenant(tenant)?;
        validate::collection_name(name)?;
        self.backend.delete_collection(tenant, name).await
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
        let dims = self.backend.dimensions(tenant, collection).await?;
        validate::chunks(&chunks, dims)?;
        let started = Instant::now();
        let n = self
            .backend
            .upsert(tenant, collection, chunks, replace_documents)
            .await?;
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
        validate::filter(&query.filter)?;
        let dims = self.backend.dimensions(tenant, collection).await?;
        validate::vector(&query.vector, dims, "query")?;
        let started = Instant::now();
        let out = self.backend.search(tenant, collection, query).await?;
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
            return Err(crate::RetrieverError::invalid("doc_id must not be empty"));
        }
        self.backend
            .delete_document(tenant, collection, doc_id)
            .await
    }

    pub async fn count(&self, tenant: &str, collection: &str, filter: MetaFilter) -> Result<u64> {
        validate::tenant(tenant)?;
        validate::collection_name(collection)?;
        validate::filter(&filter)?;
        self.backend.count(tenant, collection, filter).await
    }
}
