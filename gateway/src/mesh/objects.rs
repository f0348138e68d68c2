//! The object store (files and vector-store records) over retriever
//! replicas (`ragmesh.v1.Objects`), sharing the retriever's pool. The
//! store lives on the retriever's data volume, so the mesh needs one
//! retriever that holds it (the chart's StatefulSet of one), whichever
//! backend holds the vectors.

use std::sync::Arc;

use async_trait::async_trait;
use ragmesh_proto::v1 as pb;
use ragmesh_proto::v1::objects_client::ObjectsClient;
use ragmesh_retriever::Result;
use ragmesh_retriever::objects::grpc::{expect_to, record_from};
use ragmesh_retriever::objects::{Expect, ObjectStore, Record, Scope};
use ragmesh_retriever::wire::error_from;
use serde_json::Value;
use tonic::transport::Channel;

use super::pool::Pool;

pub struct RemoteObjects {
    pool: Arc<Pool>,
}

impl RemoteObjects {
    pub fn new(pool: Arc<Pool>) -> Self {
        Self { pool }
    }
}

fn client(ch: Channel) -> ObjectsClient<ragmesh_telemetry::otel::Traced> {
    ObjectsClient::new(ragmesh_telemetry::otel::traced(ch))
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn key(tenant: &str, kind: &str, id: &str) -> pb::RecordKey {
    pb::RecordKey {
        tenant: tenant.into(),
        kind: kind.into(),
        id: id.into(),
    }
}

/// NOT_FOUND from a get is "no such record", not an error.
fn missing<T>(r: std::result::Result<T, tonic::Status>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(error_from(s, "")),
    }
}

#[async_trait]
impl ObjectStore for RemoteObjects {
    async fn put_record(
        &self,
        tenant: &str,
        kind: &str,
        id: &str,
        value: Value,
        expect: Expect,
    ) -> Result<u64> {
        let req = pb::PutRecordRequest {
            key: Some(key(tenant, kind, id)),
            value_json: value.to_string(),
            expect: expect_to(expect),
        };
        self.pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).put_record(req).await }
            })
            .await
            .map(|r| r.into_inner().version)
            .map_err(|s| error_from(s, ""))
    }

    async fn get_record(&self, tenant: &str, kind: &str, id: &str) -> Result<Option<Record>> {
        let req = key(tenant, kind, id);
        let r = self
            .pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).get_record(req).await }
            })
            .await;
        missing(r)?.map(|r| record_from(r.into_inner())).transpose()
    }

    async fn list_records(
        &self,
        scope: Scope<'_>,
        kind: &str,
        id_prefix: &str,
    ) -> Result<Vec<Record>> {
        let (tenant, all_tenants) = match scope {
            Scope::Tenant(t) => (t.to_owned(), false),
            Scope::AllTenants => (String::new(), true),
        };
        let req = pb::ListRecordsRequest {
            tenant,
            kind: kind.into(),
            id_prefix: id_prefix.into(),
            all_tenants,
        };
        let r = self
            .pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).list_records(req).await }
            })
            .await
            .map_err(|s| error_from(s, ""))?;
        r.into_inner()
            .records
            .into_iter()
            .map(record_from)
            .collect()
    }

    async fn delete_record(&self, tenant: &str, kind: &str, id: &str) -> Result<bool> {
        let req = key(tenant, kind, id);
        self.pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).delete_record(req).await }
            })
            .await
            .map(|r| r.into_inner().deleted)
            .map_err(|s| error_from(s, ""))
    }

    async fn put_blob(&self, tenant: &str, id: &str, data: Vec<u8>) -> Result<u64> {
        let req = pb::PutBlobRequest {
            key: Some(pb::BlobKey {
                tenant: tenant.into(),
                id: id.into(),
            }),
            data,
        };
        self.pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).put_blob(req).await }
            })
            .await
            .map(|r| r.into_inner().bytes)
            .map_err(|s| error_from(s, ""))
    }

    async fn get_blob(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>> {
        let req = pb::BlobKey {
            tenant: tenant.into(),
            id: id.into(),
        };
        let r = self
            .pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).get_blob(req).await }
            })
            .await;
        Ok(missing(r)?.map(|b| b.into_inner().data))
    }

    async fn delete_blob(&self, tenant: &str, id: &str) -> Result<bool> {
        let req = pb::BlobKey {
            tenant: tenant.into(),
            id: id.into(),
        };
        self.pool
            .call(|ch| {
                let req = req.clone();
                async move { client(ch).delete_blob(req).await }
            })
            .await
            .map(|r| r.into_inner().deleted)
            .map_err(|s| error_from(s, ""))
    }
}
