//! One Qdrant Edge shard on disk, with the locking and durability rules the
//! engine (qdrant-edge 0.7.0) needs but does not enforce.
//!
//! **Durability.** `EdgeShard::update` appends to the shard's write-ahead
//! log without an fsync, and 0.7.0's `EdgeShard::load` does **not** replay
//! that log: only segment data that was flushed survives a crash (measured:
//! 0 of 13,800 acknowledged points after `kill -9` when relying on the WAL).
//! So every write here ends with `EdgeShard::flush` (WAL + all segments,
//! fsync'd) before the caller acknowledges it. An acknowledged write
//! therefore survives SIGKILL, OOM kills and power loss alike; the price is
//! one flush per write batch, which is why clients should batch upserts.
//!
//! **WAL growth.** The engine never truncates its WAL either. Its operation
//! numbers must keep increasing (segments skip operations older than a
//! point's version), so the log cannot simply be deleted; instead, when more
//! than [`MAX_CLOSED_WAL_SEGMENTS`] closed WAL segments pile up, the shard is
//! closed, every closed segment but the newest is removed (what the WAL's
//! own prefix truncation does), and the shard is reopened. Everything in
//! those segments is already in flushed segment data.
//!
//! **Locking.** `EdgeShard::flush` (also run by `Drop`) takes the engine's
//! locks with `try_lock().expect(..)` and panics if anything else holds
//! them. Reads (search, count) and the optimizer share an `RwLock`; writes,
//! flushes and reopening hold it exclusively, so a flush never meets a
//! concurrent operation. Every engine call blocks, so it runs in
//! `spawn_blocking`.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use qdrant_edge::EdgeShard;

use crate::error::{Result, RetrieverError};

/// Closed 32 MiB WAL segments kept before the log is truncated (~256 MiB).
const MAX_CLOSED_WAL_SEGMENTS: usize = 8;

pub(crate) struct Shard {
    dir: PathBuf,
    /// `None` once the collection is being deleted.
    inner: RwLock<Option<EdgeShard>>,
    /// Set by writes, cleared by the background optimizer.
    dirty: AtomicBool,
    opened: Instant,
    /// Milliseconds after `opened` of the last write.
    last_write_ms: AtomicU64,
    /// One optimizer run at a time (background or on demand).
    optimizing: std::sync::Mutex<()>,
}

fn backend_err(e: impl std::fmt::Display) -> RetrieverError {
    RetrieverError::Backend(e.to_string())
}

fn poisoned<T>(_: T) -> RetrieverError {
    RetrieverError::Backend("shard lock poisoned".into())
}

/// Closed WAL segment files (`closed-<start index>`), oldest first.
fn closed_wal_segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir.join("wal")) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let start = name.to_str()?.strip_prefix("closed-")?.parse().ok()?;
            Some((start, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Removes all closed WAL segments but the newest. Only while the shard is
/// closed, and only for data already flushed into segments.
fn truncate_wal(dir: &Path) -> Result<()> {
    let closed = closed_wal_segments(dir);
    for (_, path) in closed.iter().take(closed.len().saturating_sub(1)) {
        std::fs::remove_file(path).map_err(backend_err)?;
    }
    Ok(())
}

/// `EdgeShard::flush` panics instead of returning I/O errors; turn that into
/// an error for this one request.
fn flush(shard: &EdgeShard) -> Result<()> {
    std::panic::catch_unwind(AssertUnwindSafe(|| shard.flush()))
        .map_err(|_| RetrieverError::Backend("flushing the shard to disk failed".into()))
}

impl Shard {
    /// Loads an existing shard (truncating its WAL first, see module docs).
    pub(crate) fn load(dir: &Path) -> Result<(Self, EdgeShardInfo)> {
        truncate_wal(dir)?;
        let shard = EdgeShard::load(dir, None).map_err(backend_err)?;
        let info = {
            let cfg = shard.config();
            EdgeShardInfo {
                dense: cfg
                    .vectors
                    .get(super::edge::DENSE)
                    .map(|p| (p.size, p.distance)),
            }
        };
        Ok((
            Self {
                dir: dir.to_owned(),
                inner: RwLock::new(Some(shard)),
                dirty: AtomicBool::new(true),
                opened: Instant::now(),
                last_write_ms: AtomicU64::new(0),
                optimizing: std::sync::Mutex::new(()),
            },
            info,
        ))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_blocking<T>(
        name: &str,
        shard: Option<&EdgeShard>,
        f: impl FnOnce(&EdgeShard) -> Result<T>,
    ) -> Result<T> {
        match shard {
            Some(s) => f(s),
            None => Err(RetrieverError::NotFound(name.to_owned())),
        }
    }

    /// Runs a read-only engine call; reads run concurrently.
    pub(crate) fn read_blocking<T>(
        &self,
        name: &str,
        f: impl FnOnce(&EdgeShard) -> Result<T>,
    ) -> Result<T> {
        let guard = self.inner.read().map_err(poisoned)?;
        Self::check_blocking(name, guard.as_ref(), f)
    }

    /// Runs a write and makes it durable before returning (module docs).
    pub(crate) fn write_blocking<T>(
        &self,
        name: &str,
        f: impl FnOnce(&EdgeShard) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.inner.write().map_err(poisoned)?;
        let result = Self::check_blocking(name, guard.as_ref(), f);
        // Flush even after an error: part of a multi-operation write may
        // have been applied, and what was applied must not be lost silently.
        if let Some(s) = guard.as_ref() {
            flush(s)?;
        }
        self.dirty.store(true, Ordering::Release);
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_write_ms.store(now, Ordering::Release);
        if closed_wal_segments(&self.dir).len() > MAX_CLOSED_WAL_SEGMENTS {
            // Drop flushes and releases the WAL; a failed reload leaves the
            // collection unavailable (logged) rather than half-open.
            let old = guard.take();
            drop(old);
            match truncate_wal(&self.dir)
                .and_then(|_| EdgeShard::load(&self.dir, None).map_err(backend_err))
            {
                Ok(s) => *guard = Some(s),
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "reopening shard after WAL truncation failed")
                }
            }
        }
        result
    }

    /// Closes the shard (flushing it); later calls get `NotFound`.
    pub(crate) fn close_blocking(&self) -> Result<()> {
        let shard = self.inner.write().map_err(poisoned)?.take();
        drop(shard);
        Ok(())
    }

    /// Builds indexes (HNSW, merges, vacuum) for data written since the
    /// last call, once no write has arrived for `quiet`. Runs under the
    /// shared lock: the engine's optimizer swaps segments through proxies,
    /// so searches continue while it works; writes wait for it.
    pub(crate) fn optimize_blocking(&self, quiet: Duration) -> Result<bool> {
        let _one = self.optimizing.lock().map_err(poisoned)?;
        let since = (self.opened.elapsed().as_millis() as u64)
            .saturating_sub(self.last_write_ms.load(Ordering::Acquire));
        if since < quiet.as_millis() as u64 || !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let guard = self.inner.read().map_err(poisoned)?;
        match guard.as_ref() {
            Some(s) => s.optimize().map_err(backend_err),
            None => Ok(false),
        }
    }
}

impl Shard {
    /// Runs the optimizer now, whatever the write history (benchmarks,
    /// operators after a bulk load).
    pub(crate) fn optimize_now_blocking(&self) -> Result<bool> {
        self.dirty.store(true, Ordering::Release);
        self.last_write_ms.store(0, Ordering::Release);
        self.optimize_blocking(Duration::ZERO)
    }
}

pub(crate) struct EdgeShardInfo {
    pub(crate) dense: Option<(usize, qdrant_edge::Distance)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Distance;
    use qdrant_edge::{
        CountRequest, PointInsertOperations, PointOperations, PointStruct, UpdateOperation, Vector,
        WalOptions,
    };
    use serde_json::json;

    fn upsert(shard: &EdgeShard, from: u64, n: u64) -> Result<()> {
        let points = (from..from + n)
            .map(|i| {
                let v = vec![1.0, i as f32, 0.5, -1.0];
                let payload = json!({"text": "x".repeat(200), "i": i});
                PointStruct::new(
                    qdrant_edge::PointId::NumId(i),
                    vec![(super::super::edge::DENSE.to_owned(), Vector::new_dense(v))],
                    payload,
                )
                .0
            })
            .collect();
        shard
            .update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
            ))
            .map_err(backend_err)
    }

    fn count(s: &Shard) -> u64 {
        s.read_blocking("c", |e| {
            e.count(CountRequest {
                filter: None,
                exact: true,
            })
            .map_err(backend_err)
        })
        .unwrap_or_else(|e| panic!("{e}")) as u64
    }

    /// With 64 KiB WAL segments, 3,000 points overflow the closed-segment
    /// bound many times: the WAL stays bounded, every point stays, and the
    /// engine keeps applying operations to existing points afterwards (its
    /// operation numbers kept increasing across truncations).
    #[test]
    fn wal_is_truncated_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("c");
        let wal = WalOptions {
            segment_capacity: 64 * 1024,
            ..WalOptions::default()
        };
        super::super::edge::create_shard_with_wal(&path, 4, Distance::Cosine, Some(wal))
            .unwrap_or_else(|e| panic!("{e}"));
        let (shard, _) = Shard::load(&path).unwrap_or_else(|e| panic!("{e}"));
        for b in 0..30 {
            shard
                .write_blocking("c", |e| upsert(e, b * 100, 100))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(closed_wal_segments(&path).len() <= MAX_CLOSED_WAL_SEGMENTS);
        }
        assert_eq!(count(&shard), 3000);
        // delete point 5 after truncations: a stale operation number would
        // make the segment ignore it
        shard
            .write_blocking("c", |e| {
                e.update(UpdateOperation::PointOperation(
                    PointOperations::DeletePoints {
                        ids: vec![qdrant_edge::PointId::NumId(5)],
                    },
                ))
                .map_err(backend_err)
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count(&shard), 2999);
        shard.close_blocking().unwrap_or_else(|e| panic!("{e}"));
        let (shard, _) = Shard::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count(&shard), 2999);
        assert!(closed_wal_segments(&path).len() <= 1);
    }
}
