//! The object store of a retriever that has none: the qdrant backend
//! without `--objects-dir` (its pods may be several and have no volume,
//! and files split over pods would be lost to some gateways). Every call
//! says so; the collections work as before.

use serde_json::Value;

use super::{Expect, ObjectStore, Record, Scope};
use crate::error::{Result, RetrieverError};

pub struct NoObjects;

fn refused<T>() -> Result<T> {
    Err(RetrieverError::Unavailable(
        "this retriever keeps no files or vector stores: the Files and Vector Stores API needs the \
         edge backend, or --objects-dir on a single retriever replica with a volume"
            .into(),
    ))
}

#[async_trait::async_trait]
impl ObjectStore for NoObjects {
    async fn put_record(&self, _: &str, _: &str, _: &str, _: Value, _: Expect) -> Result<u64> {
        refused()
    }
    async fn get_record(&self, _: &str, _: &str, _: &str) -> Result<Option<Record>> {
        refused()
    }
    async fn list_records(&self, _: Scope<'_>, _: &str, _: &str) -> Result<Vec<Record>> {
        refused()
    }
    async fn delete_record(&self, _: &str, _: &str, _: &str) -> Result<bool> {
        refused()
    }
    async fn put_blob(&self, _: &str, _: &str, _: Vec<u8>) -> Result<u64> {
        refused()
    }
    async fn get_blob(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>> {
        refused()
    }
    async fn delete_blob(&self, _: &str, _: &str) -> Result<bool> {
        refused()
    }
}
