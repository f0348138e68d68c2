//! The embedded backend: Qdrant Edge (`qdrant-edge`), one persistent shard
//! per (tenant, collection) under the data directory:
//! `<data>/<hex(tenant)>/<collection>/`.
//!
//! Durability, locking and WAL upkeep live in [`crate::edge_shard`]: an
//! upsert or delete is acknowledged only after the shard is flushed.
//!
//! Collection creation and deletion are crash-safe by renaming: a shard is
//! built under `.creating-<name>-<n>` and renamed into place; a deleted one
//! is renamed to `.deleted-<name>-<n>` before removal. Dot-directories are
//! cleaned at start-up. While a create or delete of a name runs, the name
//! is *pending*: a second create or delete of it is refused at once
//! ([`RetrieverError::Conflict`]), so two operations never share a
//! directory.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use qdrant_edge::external::{ordered_float, uuid};
use qdrant_edge::{
    CountRequest, EdgeConfig, EdgeShard, EdgeSparseVectorParamsBuilder, EdgeVectorParamsBuilder,
    Filter, Fusion as EdgeFusion, Modifier, NamedQuery, PointInsertOperations, PointOperations,
    PointStruct, Prefetch, QueryEnum, QueryRequest, ScoredPoint, ScoringQuery, UpdateOperation,
    Vector, WithPayloadInterface, WithVector,
};
use serde_json::{Value, json};

use crate::backend::Backend;
use crate::edge_index;
use crate::edge_shard::Shard;
use crate::error::{Result, RetrieverError};
use crate::filter::{self, DOC_ID, TENANT};
use crate::types::{Chunk, CollectionInfo, Distance, Fusion, MetaFilter, ScoredChunk, SearchQuery};

pub(crate) const DENSE: &str = "dense";
const SPARSE: &str = "bm25";
/// RRF's constant (the usual 60): rank r contributes 1 / (60 + r).
const RRF_K: usize = 60;

struct Collection {
    dims: usize,
    distance: Distance,
    shard: Shard,
    /// Payload fields with an index, and what they hold (see `edge_index`).
    indexed: Arc<Mutex<edge_index::Indexed>>,
}

impl Collection {
    /// A read-only engine call on the blocking pool.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        name: &str,
        f: impl FnOnce(&EdgeShard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (me, name) = (self.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || me.shard.read_blocking(&name, f))
            .await
            .map_err(|e| RetrieverError::Backend(format!("storage task failed: {e}")))?
    }

    /// A write, durable when this returns.
    async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        name: &str,
        f: impl FnOnce(&EdgeShard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (me, name) = (self.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || me.shard.write_blocking(&name, f))
            .await
            .map_err(|e| RetrieverError::Backend(format!("storage task failed: {e}")))?
    }
}

type Key = (String, String);

type Collections = Mutex<HashMap<Key, Arc<Collection>>>;

/// How long a collection must go without writes before the background
/// optimizer indexes it (so a bulk ingest is not stalled by index builds).
pub const OPTIMIZE_QUIET: Duration = Duration::from_secs(2);

pub struct EdgeBackend {
    root: PathBuf,
    collections: Arc<Collections>,
    /// Names whose create or delete is running (locked after `collections`
    /// when both are held).
    pending: Arc<Mutex<HashSet<Key>>>,
    bm25: Arc<EdgeBm25>,
}

/// Takes a name out of `pending` when its create or delete ends, however
/// it ends.
struct PendingGuard {
    pending: Arc<Mutex<HashSet<Key>>>,
    key: Key,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.remove(&self.key);
    }
}

fn unique_suffix() -> u128 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    nanos ^ u128::from(SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

fn backend_err(e: impl std::fmt::Display) -> RetrieverError {
    RetrieverError::Backend(e.to_string())
}

fn tenant_dir(root: &Path, tenant: &str) -> PathBuf {
    let hex: String = tenant.bytes().map(|b| format!("{b:02x}")).collect();
    root.join(hex)
}

fn edge_distance(d: Distance) -> qdrant_edge::Distance {
    match d {
        Distance::Cosine => qdrant_edge::Distance::Cosine,
        Distance::Dot => qdrant_edge::Distance::Dot,
        Distance::Euclid => qdrant_edge::Distance::Euclid,
    }
}

fn our_distance(d: qdrant_edge::Distance) -> Option<Distance> {
    match d {
        qdrant_edge::Distance::Cosine => Some(Distance::Cosine),
        qdrant_edge::Distance::Dot => Some(Distance::Dot),
        qdrant_edge::Distance::Euclid => Some(Distance::Euclid),
        _ => None,
    }
}

fn parse_filter(v: Value) -> Result<Filter> {
    serde_json::from_value(v).map_err(|e| RetrieverError::invalid(format!("invalid filter: {e}")))
}

fn count_in(shard: &EdgeShard, filter: Filter) -> Result<u64> {
    let n = shard
        .count(CountRequest {
            filter: Some(filter),
            exact: true,
        })
        .map_err(backend_err)?;
    Ok(n as u64)
}

impl EdgeBackend {
    /// Opens (or creates) the data directory and loads every collection in
    /// it. A shard that fails to load is logged and skipped, never fatal.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(root, Some(OPTIMIZE_QUIET))
    }

    /// `optimize_after`: the quiet period after which the background
    /// optimizer indexes a collection; `None` leaves indexing to
    /// [`Self::optimize_now`] (benchmarks, bulk loads).
    pub fn open_with(root: impl Into<PathBuf>, optimize_after: Option<Duration>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| {
            RetrieverError::Backend(format!("cannot create {}: {e}", root.display()))
        })?;
        let bm25 = EdgeBm25::new(EdgeBm25Config::default()).map_err(backend_err)?;
        let mut collections = HashMap::new();
        for tdir in read_dirs(&root)? {
            let Some(tenant) = decode_hex(file_name(&tdir)) else {
                continue;
            };
            for cdir in read_dirs(&tdir)? {
                let name = file_name(&cdir).to_owned();
                if name.starts_with('.') {
                    // an interrupted create or delete
                    let _ = std::fs::remove_dir_all(&cdir);
                    continue;
                }
                match load_collection(&cdir) {
                    Ok(c) => {
                        collections.insert((tenant.clone(), name), Arc::new(c));
                    }
                    Err(e) => {
                        tracing::error!(dir = %cdir.display(), error = %e, "skipping collection that failed to load")
                    }
                }
            }
        }
        let collections = Arc::new(Mutex::new(collections));
        if let Some(quiet) = optimize_after {
            spawn_optimizer(Arc::downgrade(&collections), quiet)?;
        }
        Ok(Self {
            root,
            collections,
            pending: Arc::default(),
            bm25: Arc::new(bm25),
        })
    }

    fn lock_map(&self) -> Result<std::sync::MutexGuard<'_, HashMap<Key, Arc<Collection>>>> {
        self.collections
            .lock()
            .map_err(|_| RetrieverError::Backend("collection map lock poisoned".into()))
    }

    /// Marks `key` pending, or says why it cannot be: it exists (for a
    /// create) or another create/delete of it runs.
    fn begin(
        &self,
        map: &HashMap<Key, Arc<Collection>>,
        key: &Key,
        creating: bool,
    ) -> Result<PendingGuard> {
        if creating && map.contains_key(key) {
            return Err(RetrieverError::AlreadyExists(key.1.clone()));
        }
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !p.insert(key.clone()) {
            return Err(RetrieverError::Conflict(format!(
                "collection '{}' is being created or deleted by another request; retry",
                key.1
            )));
        }
        Ok(PendingGuard {
            pending: self.pending.clone(),
            key: key.clone(),
        })
    }

    /// Builds the collection's indexes now instead of waiting for the
    /// background optimizer; returns whether anything changed.
    pub async fn optimize_now(&self, tenant: &str, name: &str) -> Result<bool> {
        let c = self.get(tenant, name)?;
        tokio::task::spawn_blocking(move || c.shard.optimize_now_blocking())
            .await
            .map_err(backend_err)?
    }

    fn get(&self, tenant: &str, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .lock()
            .map_err(|_| RetrieverError::Backend("collection map lock poisoned".into()))?
            .get(&(tenant.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| RetrieverError::NotFound(name.to_owned()))
    }

    async fn info(&self, tenant: &str, name: &str, c: &Arc<Collection>) -> Result<CollectionInfo> {
        let scope = parse_filter(filter::scoped(tenant, &MetaFilter::default(), &[]))?;
        let points = c.read(name, move |s| count_in(s, scope)).await?;
        Ok(CollectionInfo {
            name: name.to_owned(),
            dimensions: c.dims,
            distance: c.distance,
            points,
        })
    }
}

/// One thread per backend runs the engine's optimizer over quiet, changed
/// collections; it ends when the backend is dropped.
fn spawn_optimizer(collections: std::sync::Weak<Collections>, quiet: Duration) -> Result<()> {
    std::thread::Builder::new()
        .name("edge-optimizer".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let Some(map) = collections.upgrade() else {
                    return;
                };
                let all: Vec<Arc<Collection>> = match map.lock() {
                    Ok(m) => m.values().cloned().collect(),
                    Err(_) => return,
                };
                drop(map);
                for c in all {
                    if let Err(e) = c.shard.optimize_blocking(quiet) {
                        tracing::warn!(dir = %c.shard.dir().display(), error = %e, "optimizing collection failed");
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| RetrieverError::Backend(format!("cannot start optimizer thread: {e}")))
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn decode_hex(s: &str) -> Option<String> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| RetrieverError::Backend(format!("cannot read {}: {e}", dir.display())))?;
    Ok(entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect())
}

fn load_collection(dir: &Path) -> Result<Collection> {
    let (shard, info) = Shard::load(dir)?;
    let (dims, distance) = info
        .dense
        .ok_or_else(|| RetrieverError::Backend("shard has no dense vector".into()))?;
    let distance = our_distance(distance)
        .ok_or_else(|| RetrieverError::Backend("unsupported distance".into()))?;
    // a write: loading may re-make old integer indexes (see edge_index)
    let indexed = shard.write_blocking("", edge_index::load)?;
    Ok(Collection {
        dims,
        distance,
        shard,
        indexed: Arc::new(Mutex::new(indexed)),
    })
}

fn create_shard(dir: &Path, dims: usize, distance: Distance) -> Result<()> {
    create_shard_with_wal(dir, dims, distance, None)
}

/// `wal`: the engine's WAL segment options (tests use tiny segments).
pub(crate) fn create_shard_with_wal(
    dir: &Path,
    dims: usize,
    distance: Distance,
    wal: Option<qdrant_edge::WalOptions>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(backend_err)?;
    let config = EdgeConfig::builder()
        .vector(
            DENSE,
            EdgeVectorParamsBuilder::new(dims, edge_distance(distance)).build(),
        )
        .sparse_vector(
            SPARSE,
            EdgeSparseVectorParamsBuilder::new()
                .modifier(Modifier::Idf)
                .build(),
        )
        .build();
    let config = EdgeConfig {
        wal_options: wal,
        ..config
    };
    let shard = EdgeShard::new(dir, config).map_err(backend_err)?;
    // Payload indexes: every read filters by tenant, deletes by doc_id.
    for field in [TENANT, DOC_ID] {
        edge_index::create(&shard, field, "keyword")?;
    }
    drop(shard); // flushes
    Ok(())
}

pub(crate) fn point_id(tenant: &str, chunk_id: &str) -> String {
    uuid::Uuid::from_u128(filter::point_uuid(tenant, chunk_id)).to_string()
}

fn to_scored(p: ScoredPoint) -> ScoredChunk {
    let payload = p.payload.map(|p| p.0).unwrap_or_default();
    filter::scored(payload.into_iter().collect(), p.score)
}

#[async_trait::async_trait]
impl Backend for EdgeBackend {
    async fn create_collection(
        &self,
        tenant: &str,
        name: &str,
        dims: usize,
        distance: Distance,
    ) -> Result<CollectionInfo> {
        let key: Key = (tenant.to_owned(), name.to_owned());
        let guard = {
            let map = self.lock_map()?;
            self.begin(&map, &key, true)?
        };
        let tdir = tenant_dir(&self.root, tenant);
        let staging = tdir.join(format!(".creating-{name}-{}", unique_suffix()));
        let target = tdir.join(name);
        let c = tokio::task::spawn_blocking(move || -> Result<Collection> {
            let built = create_shard(&staging, dims, distance)
                .and_then(|()| std::fs::rename(&staging, &target).map_err(backend_err));
            if let Err(e) = built {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
            load_collection(&target)
        })
        .await
        .map_err(backend_err)??;
        // the name stays pending until the map holds it, so no other create
        // or delete can slip in between
        self.lock_map()?.insert(key, Arc::new(c));
        drop(guard);
        Ok(CollectionInfo {
            name: name.to_owned(),
            dimensions: dims,
            distance,
            points: 0,
        })
    }

    async fn list_collections(&self, tenant: &str) -> Result<Vec<CollectionInfo>> {
        let mine: Vec<(String, Arc<Collection>)> = self
            .collections
            .lock()
            .map_err(|_| RetrieverError::Backend("collection map lock poisoned".into()))?
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, n), c)| (n.clone(), c.clone()))
            .collect();
        let mut out = Vec::with_capacity(mine.len());
        for (name, c) in mine {
            out.push(self.info(tenant, &name, &c).await?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn describe_collection(&self, tenant: &str, name: &str) -> Result<CollectionInfo> {
        let c = self.get(tenant, name)?;
        self.info(tenant, name, &c).await
    }

    async fn delete_collection(&self, tenant: &str, name: &str) -> Result<()> {
        let key: Key = (tenant.to_owned(), name.to_owned());
        let (c, guard) = {
            let mut map = self.lock_map()?;
            if !map.contains_key(&key) {
                // a create in flight answers the same: not there yet
                return Err(RetrieverError::NotFound(name.to_owned()));
            }
            let guard = self.begin(&map, &key, false)?;
            let c = map
                .remove(&key)
                .ok_or_else(|| RetrieverError::NotFound(name.to_owned()))?;
            (c, guard)
        };
        tokio::task::spawn_blocking(move || -> Result<()> {
            let _guard = guard; // pending until the directory is gone
            c.shard.close_blocking()?; // flush + release files while no operation runs
            let dir = c.shard.dir();
            let parent = dir.parent().map(Path::to_owned).unwrap_or_default();
            let doomed = parent.join(format!(".deleted-{}-{}", file_name(dir), unique_suffix()));
            std::fs::rename(dir, &doomed).map_err(backend_err)?;
            std::fs::remove_dir_all(&doomed).map_err(backend_err)
        })
        .await
        .map_err(backend_err)?
    }

    async fn dimensions(&self, tenant: &str, name: &str) -> Result<usize> {
        Ok(self.get(tenant, name)?.dims)
    }

    async fn upsert(
        &self,
        tenant: &str,
        collection: &str,
        chunks: Vec<Chunk>,
        replace_documents: bool,
    ) -> Result<usize> {
        let c = self.get(tenant, collection)?;
        let n = chunks.len();
        let tenant = tenant.to_owned();
        let bm25 = self.bm25.clone();
        let indexed = c.indexed.clone();
        c.write(collection, move |shard| {
            {
                let mut indexed = indexed
                    .lock()
                    .map_err(|_| RetrieverError::Backend("index set lock poisoned".into()))?;
                edge_index::ensure_metadata(shard, &mut indexed, &chunks)?;
            }
            let mut ids = Vec::with_capacity(n);
            let mut docs: Vec<String> = Vec::new();
            let mut points = Vec::with_capacity(n);
            for mut ch in chunks {
                let id = point_id(&tenant, &ch.id);
                let sparse = bm25.embed_document(&ch.text);
                let vectors = vec![
                    (
                        DENSE.to_owned(),
                        Vector::new_dense(std::mem::take(&mut ch.vector)),
                    ),
                    (SPARSE.to_owned(), Vector::from(sparse)),
                ];
                if !docs.contains(&ch.doc_id) {
                    docs.push(ch.doc_id.clone());
                }
                let payload = filter::payload(&tenant, ch);
                let uuid = uuid::Uuid::parse_str(&id).map_err(backend_err)?;
                points.push(PointStruct::new(qdrant_edge::PointId::Uuid(uuid), vectors, payload).0);
                ids.push(id);
            }
            shard
                .update(UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                    PointInsertOperations::PointsList(points),
                )))
                .map_err(backend_err)?;
            if replace_documents {
                // New chunks first, stale ones after: a crash in between
                // leaves extra chunks (removed on the client's retry), never
                // a document with none.
                let stale = parse_filter(json!({
                    "must": [filter::equals(TENANT, &tenant), {"key": DOC_ID, "match": {"any": docs}}],
                    "must_not": [{"has_id": ids}],
                }))?;
                shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::DeletePointsByFilter(stale),
                    ))
                    .map_err(backend_err)?;
            }
            Ok(n)
        })
        .await
    }

    async fn search(
        &self,
        tenant: &str,
        collection: &str,
        q: SearchQuery,
    ) -> Result<Vec<ScoredChunk>> {
        let c = self.get(tenant, collection)?;
        let scope = parse_filter(filter::scoped(tenant, &q.filter, &[]))?;
        let threshold = q.score_threshold.map(ordered_float::OrderedFloat);
        let dense = ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
            query: Vector::new_dense(q.vector).0,
            using: Some(DENSE.into()),
        }));
        let request = match q.fusion {
            Fusion::Dense => QueryRequest {
                prefetches: vec![],
                query: Some(dense),
                filter: Some(scope),
                score_threshold: threshold,
                limit: q.top_k,
                offset: 0,
                params: None,
                with_vector: WithVector::Bool(false),
                with_payload: WithPayloadInterface::Bool(true),
            },
            Fusion::HybridRrf => {
                let sparse = ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                    query: Vector::from(self.bm25.embed_query(&q.text)).0,
                    using: Some(SPARSE.into()),
                }));
                // Each leg fetches more than top_k so fusion has candidates.
                let leg = |query, threshold| Prefetch {
                    prefetches: vec![],
                    query: Some(query),
                    limit: q.top_k * 4,
                    params: None,
                    filter: Some(scope.clone()),
                    score_threshold: threshold,
                };
                QueryRequest {
                    prefetches: vec![leg(dense, threshold), leg(sparse, None)],
                    query: Some(ScoringQuery::Fusion(EdgeFusion::Rrf {
                        k: RRF_K,
                        weights: None,
                    })),
                    filter: Some(scope.clone()),
                    score_threshold: None,
                    limit: q.top_k,
                    offset: 0,
                    params: None,
                    with_vector: WithVector::Bool(false),
                    with_payload: WithPayloadInterface::Bool(true),
                }
            }
        };
        let points = c
            .read(collection, move |s| s.query(request).map_err(backend_err))
            .await?;
        Ok(points.into_iter().map(to_scored).collect())
    }

    async fn delete_document(&self, tenant: &str, collection: &str, doc_id: &str) -> Result<u64> {
        let c = self.get(tenant, collection)?;
        let f = filter::scoped(
            tenant,
            &MetaFilter::default(),
            &[filter::equals(DOC_ID, doc_id)],
        );
        let (count_f, delete_f) = (parse_filter(f.clone())?, parse_filter(f)?);
        c.write(collection, move |s| {
            let n = count_in(s, count_f)?;
            if n > 0 {
                s.update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(delete_f),
                ))
                .map_err(backend_err)?;
            }
            Ok(n)
        })
        .await
    }

    async fn count(&self, tenant: &str, collection: &str, meta: MetaFilter) -> Result<u64> {
        let c = self.get(tenant, collection)?;
        let f = parse_filter(filter::scoped(tenant, &meta, &[]))?;
        c.read(collection, move |s| count_in(s, f)).await
    }
}
