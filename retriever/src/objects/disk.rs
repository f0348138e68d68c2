//! [`DiskObjects`]: the object store on the retriever's data volume
//! (`<data-dir>/objects`): records in [`Journal`], blobs in [`Blobs`].
//! Writes are serialised by the journal's lock (each is one append and one
//! fsync, off the async threads); reads take the records' read lock only,
//! so they never wait for a write's fsync.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use super::blobs::Blobs;
use super::journal::{Journal, Records};
use super::{Expect, MAX_RECORD_BYTES, ObjectStore, Record, Scope, validate_name};
use crate::error::{Result, RetrieverError};
use crate::validate;

#[derive(Clone)]
pub struct DiskObjects {
    journal: Arc<Mutex<Journal>>,
    records: Arc<RwLock<Records>>,
    blobs: Arc<Blobs>,
}

/// Logs a file-system failure with an incident number and answers with
/// the number only (the text names paths under the data directory).
fn io_failed(op: &'static str, e: std::io::Error) -> RetrieverError {
    static INCIDENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = INCIDENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::error!(incident = n, op, error = %e, "object store failed");
    RetrieverError::Backend(format!(
        "the object store failed during {op} (incident {n} in the retriever's log)"
    ))
}

async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| io_failed(op, e)),
        Err(e) => Err(RetrieverError::Backend(format!("{op} task failed: {e}"))),
    }
}

fn check_key(tenant: &str, kind: &str, id: &str) -> Result<()> {
    validate::tenant(tenant)?;
    validate_name("kind", kind)?;
    validate_name("id", id)
}

impl DiskObjects {
    /// Opens (creating) the store under `dir`, replaying the journal.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let (journal, records) = Journal::open(&dir.join("records"))?;
        let blobs = Blobs::open(&dir.join("blobs"))?;
        Ok(Self {
            journal: Arc::new(Mutex::new(journal)),
            records: Arc::new(RwLock::new(records)),
            blobs: Arc::new(blobs),
        })
    }

    /// The writers' lock (held across the append and its fsync).
    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        // a panic while holding the lock leaves the map as the journal
        // says (memory is updated after the fsync), so go on
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Records> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl ObjectStore for DiskObjects {
    async fn put_record(
        &self,
        tenant: &str,
        kind: &str,
        id: &str,
        value: Value,
        expect: Expect,
    ) -> Result<u64> {
        check_key(tenant, kind, id)?;
        let size = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
        if size > MAX_RECORD_BYTES {
            return Err(RetrieverError::invalid(format!(
                "a record holds at most {MAX_RECORD_BYTES} bytes of JSON, got {size}"
            )));
        }
        let key = (tenant.to_owned(), kind.to_owned(), id.to_owned());
        let this = self.clone();
        let outcome = blocking("put_record", move || {
            let mut j = this.lock();
            let current = this.read().get(&key).map(|(v, _)| *v);
            let refused = match (expect, current) {
                (Expect::Any, _) => None,
                (Expect::Absent, None) => None,
                (Expect::Absent, Some(_)) => Some(format!("{} '{}' already exists", key.1, key.2)),
                (Expect::Version(want), Some(have)) if want == have => None,
                (Expect::Version(want), have) => Some(format!(
                    "{} '{}' changed meanwhile (version {} now, {want} expected): read it again",
                    key.1,
                    key.2,
                    have.unwrap_or(0)
                )),
            };
            if let Some(msg) = refused {
                return Ok(Err(msg));
            }
            let version = current.unwrap_or(0) + 1;
            j.put(&this.records, key, version, value)?;
            Ok(Ok(version))
        })
        .await?;
        outcome.map_err(RetrieverError::Conflict)
    }

    async fn get_record(&self, tenant: &str, kind: &str, id: &str) -> Result<Option<Record>> {
        check_key(tenant, kind, id)?;
        let key = (tenant.to_owned(), kind.to_owned(), id.to_owned());
        Ok(self.read().get(&key).map(|(version, value)| Record {
            tenant: key.0.clone(),
            kind: key.1.clone(),
            id: key.2.clone(),
            version: *version,
            value: value.clone(),
        }))
    }

    async fn list_records(
        &self,
        scope: Scope<'_>,
        kind: &str,
        id_prefix: &str,
    ) -> Result<Vec<Record>> {
        validate_name("kind", kind)?;
        if let Scope::Tenant(t) = scope {
            validate::tenant(t)?;
        }
        let to_record =
            |((t, k, id), (version, value)): (&super::journal::Key, &(u64, Value))| Record {
                tenant: t.clone(),
                kind: k.clone(),
                id: id.clone(),
                version: *version,
                value: value.clone(),
            };
        let records = self.read();
        let out = match scope {
            // keys sort by tenant, kind, id: one tenant's records of a kind
            // with the prefix are one contiguous range
            Scope::Tenant(t) => {
                let from = (t.to_owned(), kind.to_owned(), id_prefix.to_owned());
                records
                    .range(from..)
                    .take_while(|((rt, rk, id), _)| {
                        rt == t && rk == kind && id.starts_with(id_prefix)
                    })
                    .map(to_record)
                    .collect()
            }
            Scope::AllTenants => records
                .iter()
                .filter(|((_, k, id), _)| k == kind && id.starts_with(id_prefix))
                .map(to_record)
                .collect(),
        };
        Ok(out)
    }

    async fn delete_record(&self, tenant: &str, kind: &str, id: &str) -> Result<bool> {
        check_key(tenant, kind, id)?;
        let key = (tenant.to_owned(), kind.to_owned(), id.to_owned());
        let this = self.clone();
        blocking("delete_record", move || {
            this.lock().delete(&this.records, &key)
        })
        .await
    }

    async fn put_blob(&self, tenant: &str, id: &str, data: Vec<u8>) -> Result<u64> {
        validate::tenant(tenant)?;
        validate_name("blob id", id)?;
        let (blobs, tenant, id) = (self.blobs.clone(), tenant.to_owned(), id.to_owned());
        let n = data.len() as u64;
        blocking("put_blob", move || blobs.put(&tenant, &id, &data)).await?;
        Ok(n)
    }

    async fn get_blob(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>> {
        validate::tenant(tenant)?;
        validate_name("blob id", id)?;
        let (blobs, tenant, id) = (self.blobs.clone(), tenant.to_owned(), id.to_owned());
        blocking("get_blob", move || blobs.get(&tenant, &id)).await
    }

    async fn delete_blob(&self, tenant: &str, id: &str) -> Result<bool> {
        validate::tenant(tenant)?;
        validate_name("blob id", id)?;
        let (blobs, tenant, id) = (self.blobs.clone(), tenant.to_owned(), id.to_owned());
        blocking("delete_blob", move || blobs.delete(&tenant, &id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn versions_compare_and_set_and_tenants_stay_apart() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| io_failed("test", e))?;
        let s = DiskObjects::open(dir.path()).map_err(|e| io_failed("test", e))?;
        assert_eq!(
            s.put_record("a", "file", "f1", json!(1), Expect::Absent)
                .await?,
            1
        );
        assert!(matches!(
            s.put_record("a", "file", "f1", json!(2), Expect::Absent)
                .await,
            Err(RetrieverError::Conflict(_))
        ));
        assert!(matches!(
            s.put_record("a", "file", "f1", json!(2), Expect::Version(7))
                .await,
            Err(RetrieverError::Conflict(_))
        ));
        assert_eq!(
            s.put_record("a", "file", "f1", json!(2), Expect::Version(1))
                .await?,
            2
        );
        // the same key under another tenant is another record
        assert_eq!(
            s.put_record("b", "file", "f1", json!(9), Expect::Absent)
                .await?,
            1
        );
        assert_eq!(
            s.get_record("b", "file", "f1").await?.map(|r| r.value),
            Some(json!(9))
        );
        assert_eq!(
            s.list_records(Scope::Tenant("a"), "file", "").await?.len(),
            1
        );
        assert_eq!(
            s.list_records(Scope::AllTenants, "file", "").await?.len(),
            2
        );
        assert!(s.get_record("c", "file", "f1").await?.is_none());
        // a prefix lists one store's attached files, not another's
        for id in ["vs1/f1", "vs1/f2", "vs2/f1"] {
            s.put_record("a", "vector_store_file", id, json!(1), Expect::Any)
                .await?;
        }
        s.put_record("b", "vector_store_file", "vs1/f9", json!(1), Expect::Any)
            .await?;
        let ids: Vec<String> = s
            .list_records(Scope::Tenant("a"), "vector_store_file", "vs1/")
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["vs1/f1", "vs1/f2"]);
        assert!(matches!(
            s.put_record("a", "file", "../x", json!(1), Expect::Any)
                .await,
            Err(RetrieverError::InvalidArgument(_))
        ));
        // reopened, everything acknowledged is there
        drop(s);
        let s = DiskObjects::open(dir.path()).map_err(|e| io_failed("test", e))?;
        let r = s.get_record("a", "file", "f1").await?;
        assert_eq!(r.map(|r| (r.version, r.value)), Some((2, json!(2))));
        Ok(())
    }
}
