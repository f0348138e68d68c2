//! Blobs (file bytes): one file per blob under
//! `<dir>/<hex(tenant)>/<id>`, written to a temporary file, fsync'd and
//! renamed into place, then the directory fsync'd, so an acknowledged
//! blob survives a crash and a torn one is never visible. The tenant is
//! hex-encoded because it may hold any printable character; ids are
//! checked names ([`super::validate_name`]) with `/` flattened.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::journal::sync_dir;

pub struct Blobs {
    dir: PathBuf,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

impl Blobs {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, tenant: &str, id: &str) -> PathBuf {
        self.dir.join(hex(tenant)).join(id.replace('/', "%"))
    }

    pub fn put(&self, tenant: &str, id: &str, data: &[u8]) -> std::io::Result<()> {
        let path = self.path(tenant, id);
        let parent = path.parent().unwrap_or(&self.dir);
        if !parent.exists() {
            std::fs::create_dir_all(parent)?;
            sync_dir(parent)?;
        }
        let tmp = path.with_extension("part");
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        sync_dir(&path)
    }

    pub fn get(&self, tenant: &str, id: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(tenant, id)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn delete(&self, tenant: &str, id: &str) -> std::io::Result<bool> {
        let path = self.path(tenant, id);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&path)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_per_tenant_and_survive_reopen() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let b = Blobs::open(dir.path())?;
        b.put("acme", "file-1", b"hello")?;
        b.put("acme/../x", "file-1", b"other tenant")?;
        let b = Blobs::open(dir.path())?;
        assert_eq!(b.get("acme", "file-1")?, Some(b"hello".to_vec()));
        assert_eq!(b.get("other", "file-1")?, None);
        assert_eq!(
            b.get("acme/../x", "file-1")?,
            Some(b"other tenant".to_vec())
        );
        assert!(b.delete("acme", "file-1")?);
        assert!(!b.delete("acme", "file-1")?);
        assert_eq!(b.get("acme", "file-1")?, None);
        Ok(())
    }
}
