//! Typed access to the object store (records of the [`super::types`]
//! objects, and file bytes), for one tenant at a time. The store is the
//! retriever's ([`ragmesh_retriever::objects`]): in-process in the
//! all-in-one, over gRPC in the mesh.

use std::sync::Arc;

use ragmesh_retriever::RetrieverError;
use ragmesh_retriever::objects::{Expect, ObjectStore, Scope};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult, internal};

pub const FILE: &str = "file";
pub const VECTOR_STORE: &str = "vector_store";
/// id: `<vector store id>/<file id>`
pub const STORE_FILE: &str = "vector_store_file";
/// id: `<vector store id>/<batch id>`
pub const BATCH: &str = "file_batch";

pub type Objects = Arc<dyn ObjectStore>;

/// A record read back with the version a later write compares against.
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

fn store_error(e: RetrieverError) -> ApiError {
    crate::error::from_retriever(e)
}

fn decode<T: DeserializeOwned>(kind: &str, id: &str, v: serde_json::Value) -> ApiResult<T> {
    serde_json::from_value(v)
        .map_err(|e| internal(format!("stored {kind} '{id}' is unreadable: {e}")))
}

pub async fn get<T: DeserializeOwned>(
    o: &Objects,
    tenant: &str,
    kind: &str,
    id: &str,
) -> ApiResult<Option<Versioned<T>>> {
    let Some(r) = o.get_record(tenant, kind, id).await.map_err(store_error)? else {
        return Ok(None);
    };
    Ok(Some(Versioned {
        version: r.version,
        value: decode(kind, id, r.value)?,
    }))
}

/// Writes `value`; `expect` as in [`Expect`] (a lost race is a 409).
pub async fn put<T: Serialize>(
    o: &Objects,
    tenant: &str,
    kind: &str,
    id: &str,
    value: &T,
    expect: Expect,
) -> ApiResult<u64> {
    let v = serde_json::to_value(value).map_err(|e| internal(format!("encoding {kind}: {e}")))?;
    o.put_record(tenant, kind, id, v, expect)
        .await
        .map_err(store_error)
}

pub async fn list<T: DeserializeOwned>(
    o: &Objects,
    tenant: &str,
    kind: &str,
    prefix: &str,
) -> ApiResult<Vec<Versioned<T>>> {
    list_scoped(o, Scope::Tenant(tenant), kind, prefix)
        .await
        .map(|v| v.into_iter().map(|(_, r)| r).collect())
}

/// With the tenant of each record (restart recovery lists every tenant's).
pub async fn list_scoped<T: DeserializeOwned>(
    o: &Objects,
    scope: Scope<'_>,
    kind: &str,
    prefix: &str,
) -> ApiResult<Vec<(String, Versioned<T>)>> {
    let records = o
        .list_records(scope, kind, prefix)
        .await
        .map_err(store_error)?;
    records
        .into_iter()
        .map(|r| {
            let value = decode(kind, &r.id, r.value)?;
            Ok((
                r.tenant,
                Versioned {
                    version: r.version,
                    value,
                },
            ))
        })
        .collect()
}

pub async fn delete(o: &Objects, tenant: &str, kind: &str, id: &str) -> ApiResult<bool> {
    o.delete_record(tenant, kind, id).await.map_err(store_error)
}
