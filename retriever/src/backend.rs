//! The one trait both storage backends implement. Callers (the gRPC
//! transport, the gateway in-process) go through [`crate::Retriever`], which
//! validates input before a backend sees it.

use crate::error::Result;
use crate::types::{Chunk, CollectionInfo, Distance, MetaFilter, ScoredChunk, SearchQuery};

#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    async fn create_collection(
        &self,
        tenant: &str,
        name: &str,
        dims: usize,
        distance: Distance,
    ) -> Result<CollectionInfo>;
    async fn list_collections(&self, tenant: &str) -> Result<Vec<CollectionInfo>>;
    async fn describe_collection(&self, tenant: &str, name: &str) -> Result<CollectionInfo>;
    async fn delete_collection(&self, tenant: &str, name: &str) -> Result<()>;
    /// Vector size of a collection (for validation); `NotFound` if absent.
    async fn dimensions(&self, tenant: &str, name: &str) -> Result<usize>;
    /// Durable when it returns (see the backend's docs for the guarantee).
    /// With `replace_documents`, every other chunk of the batch's doc_ids
    /// is removed after the new chunks are written.
    async fn upsert(
        &self,
        tenant: &str,
        collection: &str,
        chunks: Vec<Chunk>,
        replace_documents: bool,
    ) -> Result<usize>;
    async fn search(
        &self,
        tenant: &str,
        collection: &str,
        query: SearchQuery,
    ) -> Result<Vec<ScoredChunk>>;
    async fn delete_document(&self, tenant: &str, collection: &str, doc_id: &str) -> Result<u64>;
    async fn count(&self, tenant: &str, collection: &str, filter: MetaFilter) -> Result<u64>;
}
