//! The retriever's `Backend` over retriever replicas
//! (`ragmesh.v1.Retriever`), so the gateway's `Retriever` core validates
//! as always and the storage lives in the retriever pods. The wire layout
//! is the retriever crate's own (`ragmesh_retriever::wire`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ragmesh_proto::v1 as pb;
use ragmesh_proto::v1::retriever_client::RetrieverClient;
use ragmesh_retriever::wire::{
    chunk_to, distance_to, error_from, filter_to, info_from, scored_from, search_to,
};
use ragmesh_retriever::{
    Backend, Chunk, CollectionInfo, Distance, MetaFilter, Result, ScoredChunk, SearchQuery,
};
use tonic::transport::Channel;

use super::pool::{Pool, PoolConfig, Probe};

pub struct RemoteBackend {
    pool: Arc<Pool>,
}

fn health_probe() -> Probe {
    Arc::new(|ch| {
        Box::pin(async move {
            use tonic_health::pb::HealthCheckRequest;
            use tonic_health::pb::health_client::HealthClient;
            HealthClient::new(ch)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
            Ok(None)
        })
    })
}

fn client(ch: Channel) -> RetrieverClient<ragmesh_telemetry::otel::Traced> {
    RetrieverClient::new(ragmesh_telemetry::otel::traced(ch))
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

impl RemoteBackend {
    pub async fn connect(cfg: PoolConfig, wait: Duration) -> anyhow::Result<Self> {
        let pool = Pool::start(cfg, health_probe()).await?;
        super::wait_for(&pool, wait, |ch| async move {
            client(ch)
                .list_collections(pb::ListCollectionsRequest {
                    tenant: "default".into(),
                })
                .await
        })
        .await?;
        tracing::info!(
            replicas = pool.replicas().len(),
            "retriever replicas connected"
        );
        Ok(Self { pool })
    }

    /// The replicas' pool (the object store shares it).
    pub fn pool(&self) -> Arc<Pool> {
        self.pool.clone()
    }
}

#[async_trait]
impl Backend for RemoteBackend {
    async fn create_collection(
        &self,
        tenant: &str,
        name: &str,
        dims: usize,
        distance: Distance,
    ) -> Result<CollectionInfo> {
        let req = pb::CreateCollectionRequest {
            tenant: tenant.into(),
            name: name.into(),
            dimensions: u32::try_from(dims).unwrap_or(u32::MAX),
            distance: distance_to(distance),
        };
        self.pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).create_collection(req).await }
            })
            .await
            .map(|r| info_from(r.into_inner()))
            .map_err(|s| error_from(s, name))
    }

    async fn list_collections(&self, tenant: &str) -> Result<Vec<CollectionInfo>> {
        let req = pb::ListCollectionsRequest {
            tenant: tenant.into(),
        };
        self.pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).list_collections(req).await }
            })
            .await
            .map(|r| {
                r.into_inner()
                    .collections
                    .into_iter()
                    .map(info_from)
                    .collect()
            })
            .map_err(|s| error_from(s, ""))
    }

    async fn describe_collection(&self, tenant: &str, name: &str) -> Result<CollectionInfo> {
        let req = pb::DescribeCollectionRequest {
            tenant: tenant.into(),
            name: name.into(),
        };
        self.pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).describe_collection(req).await }
            })
            .await
            .map(|r| info_from(r.into_inner()))
            .map_err(|s| error_from(s, name))
    }

    async fn delete_collection(&self, tenant: &str, name: &str) -> Result<()> {
        let req = pb::DeleteCollectionRequest {
            tenant: tenant.into(),
            name: name.into(),
        };
        self.pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).delete_collection(req).await }
            })
            .await
            .map(|_| ())
            .map_err(|s| error_from(s, name))
    }

    async fn dimensions(&self, tenant: &str, name: &str) -> Result<usize> {
        Ok(self.describe_collection(tenant, name).await?.dimensions)
    }

    async fn upsert(
        &self,
        tenant: &str,
        collection: &str,
        chunks: Vec<Chunk>,
        replace_documents: bool,
    ) -> Result<usize> {
        let req = pb::UpsertRequest {
            tenant: tenant.into(),
            collection: collection.into(),
            chunks: chunks.into_iter().map(chunk_to).collect(),
            replace_documents,
        };
        self.pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).upsert(req).await }
            })
            .await
            .map(|r| r.into_inner().upserted as usize)
            .map_err(|s| error_from(s, collection))
    }

    async fn search(
        &self,
        tenant: &str,
        collection: &str,
        query: SearchQuery,
    ) -> Result<Vec<ScoredChunk>> {
        let req = search_to(tenant, collection, query);
        let hits = self
            .pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).search(req).await }
            })
            .await
            .map_err(|s| error_from(s, collection))?
            .into_inner()
            .chunks;
        hits.into_iter().map(scored_from).collect()
    }

    async fn delete_document(&self, tenant: &str, collection: &str, doc_id: &str) -> Result<u64> {
        let req = pb::DeleteDocumentRequest {
            tenant: tenant.into(),
            collection: collection.into(),
            doc_id: doc_id.into(),
        };
        self.pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).delete_document(req).await }
            })
            .await
            .map(|r| r.into_inner().deleted)
            .map_err(|s| error_from(s, collection))
    }

    async fn count(&self, tenant: &str, collection: &str, filter: MetaFilter) -> Result<u64> {
        let req = pb::CountRequest {
            tenant: tenant.into(),
            collection: collection.into(),
            filter: filter_to(&filter),
        };
        self.pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).count(req).await }
            })
            .await
            .map(|r| r.into_inner().count)
            .map_err(|s| error_from(s, collection))
    }
}
