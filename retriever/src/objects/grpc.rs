//! gRPC transport: `ragmesh.v1.Objects` over an [`ObjectStore`], and the
//! conversions both ends of the contract use (the gateway's client too).

use std::sync::Arc;

use ragmesh_proto::v1 as pb;
use ragmesh_proto::v1::objects_server::{Objects, ObjectsServer};
use serde_json::Value;
use tonic::{Request, Response, Status};

use super::{Expect, ObjectStore, Record, Scope};
use crate::error::RetrieverError;

pub struct ObjectsGrpc {
    core: Arc<dyn ObjectStore>,
}

impl ObjectsGrpc {
    pub fn server(core: Arc<dyn ObjectStore>, max_message_bytes: usize) -> ObjectsServer<Self> {
        ObjectsServer::new(Self { core })
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(usize::MAX)
    }
}

pub fn record_to(r: Record) -> pb::Record {
    pb::Record {
        tenant: r.tenant,
        kind: r.kind,
        id: r.id,
        version: r.version,
        value_json: r.value.to_string(),
    }
}

pub fn record_from(r: pb::Record) -> Result<Record, RetrieverError> {
    let value = serde_json::from_str(&r.value_json)
        .map_err(|e| RetrieverError::Backend(format!("record {} is not JSON: {e}", r.id)))?;
    Ok(Record {
        tenant: r.tenant,
        kind: r.kind,
        id: r.id,
        version: r.version,
        value,
    })
}

pub fn expect_to(e: Expect) -> Option<pb::put_record_request::Expect> {
    use pb::put_record_request::Expect as E;
    match e {
        Expect::Any => None,
        Expect::Absent => Some(E::Absent(true)),
        Expect::Version(v) => Some(E::Version(v)),
    }
}

fn expect_from(e: Option<pb::put_record_request::Expect>) -> Expect {
    use pb::put_record_request::Expect as E;
    match e {
        None | Some(E::Absent(false)) => Expect::Any,
        Some(E::Absent(true)) => Expect::Absent,
        Some(E::Version(v)) => Expect::Version(v),
    }
}

fn key(k: Option<pb::RecordKey>) -> Result<pb::RecordKey, Status> {
    k.ok_or_else(|| Status::invalid_argument("key is required"))
}

#[tonic::async_trait]
impl Objects for ObjectsGrpc {
    async fn put_record(
        &self,
        request: Request<pb::PutRecordRequest>,
    ) -> Result<Response<pb::PutRecordResponse>, Status> {
        let r = request.into_inner();
        let k = key(r.key)?;
        let value: Value = serde_json::from_str(&r.value_json)
            .map_err(|e| Status::invalid_argument(format!("value_json is not JSON: {e}")))?;
        let version = self
            .core
            .put_record(&k.tenant, &k.kind, &k.id, value, expect_from(r.expect))
            .await?;
        Ok(Response::new(pb::PutRecordResponse { version }))
    }

    async fn get_record(
        &self,
        request: Request<pb::RecordKey>,
    ) -> Result<Response<pb::Record>, Status> {
        let k = request.into_inner();
        match self.core.get_record(&k.tenant, &k.kind, &k.id).await? {
            Some(r) => Ok(Response::new(record_to(r))),
            None => Err(Status::not_found(format!("no {} '{}'", k.kind, k.id))),
        }
    }

    async fn list_records(
        &self,
        request: Request<pb::ListRecordsRequest>,
    ) -> Result<Response<pb::ListRecordsResponse>, Status> {
        let r = request.into_inner();
        let scope = if r.all_tenants {
            Scope::AllTenants
        } else {
            Scope::Tenant(&r.tenant)
        };
        let records = self.core.list_records(scope, &r.kind, &r.id_prefix).await?;
        Ok(Response::new(pb::ListRecordsResponse {
            records: records.into_iter().map(record_to).collect(),
        }))
    }

    async fn delete_record(
        &self,
        request: Request<pb::RecordKey>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let k = request.into_inner();
        let deleted = self.core.delete_record(&k.tenant, &k.kind, &k.id).await?;
        Ok(Response::new(pb::DeleteResponse { deleted }))
    }

    async fn put_blob(
        &self,
        request: Request<pb::PutBlobRequest>,
    ) -> Result<Response<pb::PutBlobResponse>, Status> {
        let r = request.into_inner();
        let k = r
            .key
            .ok_or_else(|| Status::invalid_argument("key is required"))?;
        let bytes = self.core.put_blob(&k.tenant, &k.id, r.data).await?;
        Ok(Response::new(pb::PutBlobResponse { bytes }))
    }

    async fn get_blob(&self, request: Request<pb::BlobKey>) -> Result<Response<pb::Blob>, Status> {
        let k = request.into_inner();
        match self.core.get_blob(&k.tenant, &k.id).await? {
            Some(data) => Ok(Response::new(pb::Blob { data })),
            None => Err(Status::not_found(format!("no blob '{}'", k.id))),
        }
    }

    async fn delete_blob(
        &self,
        request: Request<pb::BlobKey>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let k = request.into_inner();
        let deleted = self.core.delete_blob(&k.tenant, &k.id).await?;
        Ok(Response::new(pb::DeleteResponse { deleted }))
    }
}
