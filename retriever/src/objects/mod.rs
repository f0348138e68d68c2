//! Durable, tenant-scoped records and blobs: what the gateway's Files and
//! Vector Stores API keeps (file bytes, file and vector-store objects),
//! held by the retriever on its data volume so that every gateway replica
//! shares them and the gateway stays stateless.
//!
//! - [`ObjectStore`]: the trait; [`DiskObjects`] keeps records in an
//!   fsync'd append-only journal ([`journal`]) and blobs as one file each
//!   ([`blobs`]); the gateway's mesh client implements it over gRPC.
//! - [`grpc`]: `ragmesh.v1.Objects` over the core.
//!
//! A record is a JSON value with a version raised on every write, so two
//! gateway replicas updating the same record (a file's status, a batch's
//! cancellation) can compare-and-set instead of overwriting each other.

pub mod blobs;
mod disk;
pub mod grpc;
pub mod journal;
mod unavailable;

pub use disk::DiskObjects;
pub use unavailable::NoObjects;

use serde_json::Value;

use crate::error::{Result, RetrieverError};

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub tenant: String,
    pub kind: String,
    pub id: String,
    /// 1 on creation, raised by one on every write.
    pub version: u64,
    pub value: Value,
}

/// The condition a write needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Always write.
    Any,
    /// Only create: `AlreadyExists` if the key is taken.
    Absent,
    /// Only if the record is at this version: `Conflict` otherwise.
    Version(u64),
}

/// Which records a listing returns.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Tenant(&'a str),
    /// Every tenant's (restart recovery); never on a caller's behalf.
    AllTenants,
}

/// Largest record value, serialised.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
const MAX_NAME: usize = 200;

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    /// Durable when it returns; the record's new version.
    async fn put_record(
        &self,
        tenant: &str,
        kind: &str,
        id: &str,
        value: Value,
        expect: Expect,
    ) -> Result<u64>;
    async fn get_record(&self, tenant: &str, kind: &str, id: &str) -> Result<Option<Record>>;
    /// In key order (tenant, then id).
    async fn list_records(
        &self,
        scope: Scope<'_>,
        kind: &str,
        id_prefix: &str,
    ) -> Result<Vec<Record>>;
    async fn delete_record(&self, tenant: &str, kind: &str, id: &str) -> Result<bool>;
    /// Durable when it returns; replaces any blob with this id.
    async fn put_blob(&self, tenant: &str, id: &str, data: Vec<u8>) -> Result<u64>;
    async fn get_blob(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>>;
    async fn delete_blob(&self, tenant: &str, id: &str) -> Result<bool>;
}

/// Kinds and ids are names the gateway makes (`file`, `file-4f2a…`,
/// `vs_…/file-…`): short, printable ASCII, no path tricks, since a blob's
/// id becomes a file name.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b':'))
        && !name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if ok {
        Ok(())
    } else {
        Err(RetrieverError::invalid(format!(
            "{what} must be 1-{MAX_NAME} characters of [A-Za-z0-9_.:/-] without empty, '.' or '..' parts"
        )))
    }
}
