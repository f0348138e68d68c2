//! The cluster backend: a Qdrant server or cluster over its gRPC API
//! (`qdrant-client`), for installations that outgrow one machine.
//!
//! Layout: one Qdrant collection per (tenant, collection), named
//! `<prefix>_<hex(tenant)>_<name>`, with the same named vectors as the edge
//! backend (`dense` + `bm25` sparse with IDF) and keyword payload indexes on
//! `tenant` (marked as the tenant key) and `doc_id`. Every read and write
//! still carries the tenant condition, as in the edge backend. BM25 vectors
//! are computed here with the same encoder as the edge backend, so hybrid
//! search ranks identically on both.
//!
//! **Durability**: writes use `wait=true` and the configured write
//! consistency factor: an upsert is acknowledged once that many replicas have
//! written it to their WAL and applied it. Qdrant's WAL is not fsync'd per
//! operation, so surviving a node's power loss relies on replication
//! (`replication_factor` ≥ 2); a killed Qdrant process loses nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use qdrant_client::qdrant::{
    self as q, Condition as QCondition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, FieldType, Filter as QFilter,
    KeywordIndexParamsBuilder, PointStruct, PrefetchQueryBuilder, Query, QueryPointsBuilder,
    RrfBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpsertPointsBuilder,
    VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use serde_json::Value;

use crate::backend::Backend;
use crate::error::{Result, RetrieverError};
use crate::filter::{DOC_ID, METADATA, TENANT};
use crate::types::{
    Chunk, CollectionInfo, Condition, Distance, Fusion, MetaFilter, ScoredChunk, SearchQuery,
};

const DENSE: &str = "dense";
const SPARSE: &str = "bm25";
const RRF_K: u32 = 60;

/// Connection and placement settings (all from flags / env in `server.rs`).
#[derive(Debug, Clone)]
pub struct QdrantConfig {
    /// gRPC URL, e.g. `http://qdrant:6334` (`https://` for TLS).
    pub url: String,
    pub api_key: Option<String>,
    /// Prefix of every Qdrant collection this retriever owns.
    pub prefix: String,
    pub shard_number: u32,
    pub replication_factor: u32,
    pub write_consistency_factor: u32,
    pub timeout_secs: u64,
}

impl Default for QdrantConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:6334".into(),
            api_key: None,
            prefix: "ragmesh".into(),
            shard_number: 1,
            replication_factor: 1,
            write_consistency_factor: 1,
            timeout_secs: 30,
        }
    }
}

pub struct QdrantBackend {
    client: Qdrant,
    cfg: QdrantConfig,
    bm25: Arc<EdgeBm25>,
    /// (qdrant collection) -> (dims, distance), filled on first use.
    schema: Mutex<HashMap<String, (usize, Distance)>>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn map_err(name: &str, e: QdrantError) -> RetrieverError {
    if let QdrantError::ResponseError { status } = &e {
        match status.code() {
            tonic::Code::NotFound => return RetrieverError::NotFound(name.to_owned()),
            tonic::Code::AlreadyExists => return RetrieverError::AlreadyExists(name.to_owned()),
            tonic::Code::InvalidArgument => {
                let msg = status.message();
                if msg.contains("already exists") {
                    return RetrieverError::AlreadyExists(name.to_owned());
                }
                if msg.contains("Not found") || msg.contains("doesn't exist") {
                    return RetrieverError::NotFound(name.to_owned());
                }
                return RetrieverError::InvalidArgument(msg.to_owned());
            }
            _ => {}
        }
    }
    RetrieverError::Backend(format!("qdrant: {e}"))
}

fn q_distance(d: Distance) -> q::Distance {
    match d {
        Distance::Cosine => q::Distance::Cosine,
        Distance::Dot => q::Distance::Dot,
        Distance::Euclid => q::Distance::Euclid,
    }
}

fn our_distance(d: i32) -> Option<Distance> {
    match q::Distance::try_from(d).ok()? {
        q::Distance::Cosine => Some(Distance::Cosine),
        q::Distance::Dot => Some(Distance::Dot),
        q::Distance::Euclid => Some(Distance::Euclid),
        _ => None,
    }
}

fn match_condition(key: String, v: &Value) -> Result<QCondition> {
    Ok(match v {
        Value::String(s) => QCondition::matches(key, s.clone()),
        Value::Bool(b) => QCondition::matches(key, *b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => QCondition::matches(key, i),
            None => return Err(RetrieverError::invalid("equality needs an integer")),
        },
        _ => return Err(RetrieverError::invalid("equality needs a scalar")),
    })
}

fn condition(c: &Condition) -> Result<QCondition> {
    Ok(match c {
        Condition::Equals { key, value } => match_condition(format!("{METADATA}.{key}"), value)?,
        Condition::AnyOf { key, values } => {
            let key = format!("{METADATA}.{key}");
            if values.iter().all(Value::is_string) {
                let v: Vec<String> = values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                QCondition::matches(key, v)
            } else {
                let v: Vec<i64> = values.iter().filter_map(Value::as_i64).collect();
                if v.len() != values.len() {
                    return Err(RetrieverError::invalid(
                        "one-of takes all strings or all integers",
                    ));
                }
                QCondition::matches(key, v)
            }
        }
        Condition::Range {
            key,
            gt,
            gte,
            lt,
            lte,
        } => QCondition::range(
            format!("{METADATA}.{key}"),
            q::Range {
                gt: *gt,
                gte: *gte,
                lt: *lt,
                lte: *lte,
            },
        ),
        Condition::Any(filters) => {
            let mut any = Vec::with_capacity(filters.len());
            for f in filters {
                any.push(QCondition::from(nested(f)?));
            }
            QCondition::from(QFilter::should(any))
        }
    })
}

fn nested(meta: &MetaFilter) -> Result<QFilter> {
    let mut f = QFilter::must(
        meta.must
            .iter()
            .map(condition)
            .collect::<Result<Vec<_>>>()?,
    );
    for c in &meta.must_not {
        f.must_not.push(condition(c)?);
    }
    Ok(f)
}

/// The tenant condition first, then the caller's filter and `extra`.
fn scoped(tenant: &str, meta: &MetaFilter, extra: Vec<QCondition>) -> Result<QFilter> {
    let mut must = vec![QCondition::matches(TENANT, tenant.to_owned())];
    must.extend(extra);
    for c in &meta.must {
        must.push(condition(c)?);
    }
    let mut f = QFilter::must(must);
    for c in &meta.must_not {
        f.must_not.push(condition(c)?);
    }
    Ok(f)
}

fn to_scored(p: q::ScoredPoint) -> ScoredChunk {
    let payload = p
        .payload
        .into_iter()
        .map(|(k, v)| (k, v.into_json()))
        .collect();
    crate::filter::scored(payload, p.score)
}

impl QdrantBackend {
    /// Connects (lazily: the first request dials) and checks the server
    /// answers, so a wrong URL fails at start-up with a readable line.
    pub async fn connect(cfg: QdrantConfig) -> Result<Self> {
        let client = Qdrant::from_url(&cfg.url)
            .api_key(cfg.api_key.clone())
            .timeout(std::time::Duration::from_secs(cfg.timeout_secs))
            .skip_compatibility_check()
            .build()
            .map_err(|e| RetrieverError::Backend(format!("qdrant client: {e}")))?;
        client
            .health_check()
            .await
            .map_err(|e| RetrieverError::Backend(format!("qdrant at {}: {e}", cfg.url)))?;
        let bm25 = EdgeBm25::new(EdgeBm25Config::default())
            .map_err(|e| RetrieverError::Backend(e.to_string()))?;
        Ok(Self {
            client,
            cfg,
            bm25: Arc::new(bm25),
            schema: Mutex::new(HashMap::new()),
        })
    }

    fn qname(&self, tenant: &str, name: &str) -> String {
        format!("{}_{}_{name}", self.cfg.prefix, hex(tenant))
    }

    async fn schema_of(&self, tenant: &str, name: &str) -> Result<(usize, Distance)> {
        let qn = self.qname(tenant, name);
        if let Some(s) = self.schema.lock().ok().and_then(|m| m.get(&qn).copied()) {
            return Ok(s);
        }
        let info = self
            .client
            .collection_info(&qn)
            .await
            .map_err(|e| map_err(name, e))?
            .result
            .ok_or_else(|| RetrieverError::NotFound(name.to_owned()))?;
        let params = info
            .config
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        let dense = match params {
            Some(q::vectors_config::Config::ParamsMap(m)) => m.map.get(DENSE).cloned(),
            _ => None,
        }
        .ok_or_else(|| {
            RetrieverError::Backend(format!("qdrant collection {qn} has no '{DENSE}' vector"))
        })?;
        let d = (
            dense.size as usize,
            our_distance(dense.distance)
                .ok_or_else(|| RetrieverError::Backend("unsupported distance".into()))?,
        );
        if let Ok(mut m) = self.schema.lock() {
            m.insert(qn, d);
        }
        Ok(d)
    }

    async fn count_filtered(&self, name: &str, qn: &str, f: QFilter) -> Result<u64> {
        let r = self
            .client
            .count(CountPointsBuilder::new(qn).filter(f).exact(true))
            .await
            .map_err(|e| map_err(name, e))?;
        Ok(r.result.map(|r| r.count).unwrap_or(0))
    }

    async fn info(&self, tenant: &str, name: &str) -> Result<CollectionInfo> {
        let (dims, distance) = self.schema_of(tenant, name).await?;
        let points = self
            .count_filtered(
                name,
                &self.qname(tenant, name),
                scoped(tenant, &MetaFilter::default(), vec![])?,
            )
            .await?;
        Ok(CollectionInfo {
            name: name.to_owned(),
            dimensions: dims,
            distance,
            points,
        })
    }
}

#[async_trait::async_trait]
impl Backend for QdrantBackend {
    async fn create_collection(
        &self,
        tenant: &str,
        name: &str,
        dims: usize,
        distance: Distance,
    ) -> Result<CollectionInfo> {
        let qn = self.qname(tenant, name);
        let mut vectors = VectorsConfigBuilder::default();
        vectors.add_named_vector_params(
            DENSE,
            VectorParamsBuilder::new(dims as u64, q_distance(distance)),
        );
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            SPARSE,
            SparseVectorParamsBuilder::default().modifier(q::Modifier::Idf as i32),
        );
        self.client
            .create_collection(
                CreateCollectionBuilder::new(&qn)
                    .vectors_config(vectors)
                    .sparse_vectors_config(sparse)
                    .shard_number(self.cfg.shard_number)
                    .replication_factor(self.cfg.replication_factor)
                    .write_consistency_factor(self.cfg.write_consistency_factor),
            )
            .await
            .map_err(|e| map_err(name, e))?;
        for (field, is_tenant) in [(TENANT, true), (DOC_ID, false)] {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(&qn, field, FieldType::Keyword)
                        .field_index_params(
                            KeywordIndexParamsBuilder::default().is_tenant(is_tenant),
                        )
                        .wait(true),
                )
                .await
                .map_err(|e| map_err(name, e))?;
        }
        Ok(CollectionInfo {
            name: name.to_owned(),
            dimensions: dims,
            distance,
            points: 0,
        })
    }

    async fn list_collections(&self, tenant: &str) -> Result<Vec<CollectionInfo>> {
        let prefix = format!("{}_{}_", self.cfg.prefix, hex(tenant));
        let all = self
            .client
            .list_collections()
            .await
            .map_err(|e| RetrieverError::Backend(format!("qdrant: {e}")))?;
        let mut out = Vec::new();
        for c in all.collections {
            if let Some(name) = c.name.strip_prefix(&prefix) {
                out.push(self.info(tenant, name).await?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn describe_collection(&self, tenant: &str, name: &str) -> Result<CollectionInfo> {
        self.info(tenant, name).await
    }

    async fn delete_collection(&self, tenant: &str, name: &str) -> Result<()> {
        let qn = self.qname(tenant, name);
        let existed = self
            .client
            .collection_exists(&qn)
            .await
            .map_err(|e| map_err(name, e))?;
        if !existed {
            return Err(RetrieverError::NotFound(name.to_owned()));
        }
        self.client
            .delete_collection(&qn)
            .await
            .map_err(|e| map_err(name, e))?;
        if let Ok(mut m) = self.schema.lock() {
            m.remove(&qn);
        }
        Ok(())
    }

    async fn dimensions(&self, tenant: &str, name: &str) -> Result<usize> {
        Ok(self.schema_of(tenant, name).await?.0)
    }

    async fn upsert(
        &self,
        tenant: &str,
        collection: &str,
        chunks: Vec<Chunk>,
        replace_documents: bool,
    ) -> Result<usize> {
        let qn = self.qname(tenant, collection);
        let n = chunks.len();
        let mut ids: Vec<q::PointId> = Vec::with_capacity(n);
        let mut docs: Vec<String> = Vec::new();
        let mut points = Vec::with_capacity(n);
        for mut ch in chunks {
            let id = crate::edge::point_id(tenant, &ch.id);
            let sparse = self.bm25.embed_document(&ch.text);
            let vectors: HashMap<String, q::Vector> = [
                (
                    DENSE.to_owned(),
                    q::Vector::new_dense(std::mem::take(&mut ch.vector)),
                ),
                (
                    SPARSE.to_owned(),
                    q::Vector::new_sparse(sparse.indices, sparse.values),
                ),
            ]
            .into();
            if !docs.contains(&ch.doc_id) {
                docs.push(ch.doc_id.clone());
            }
            let payload = Payload::try_from(crate::filter::payload(tenant, ch))
                .map_err(|e| RetrieverError::Backend(e.to_string()))?;
            ids.push(id.clone().into());
            points.push(PointStruct::new(id, vectors, payload));
        }
        self.client
            .upsert_points(UpsertPointsBuilder::new(&qn, points).wait(true))
            .await
            .map_err(|e| map_err(collection, e))?;
        if replace_documents {
            // new chunks first, stale ones after (as in the edge backend)
            let mut stale = scoped(
                tenant,
                &MetaFilter::default(),
                vec![QCondition::matches(DOC_ID, docs)],
            )?;
            stale.must_not.push(QCondition::has_id(ids));
            self.client
                .delete_points(DeletePointsBuilder::new(&qn).points(stale).wait(true))
                .await
                .map_err(|e| map_err(collection, e))?;
        }
        Ok(n)
    }

    async fn search(
        &self,
        tenant: &str,
        collection: &str,
        sq: SearchQuery,
    ) -> Result<Vec<ScoredChunk>> {
        let qn = self.qname(tenant, collection);
        let f = scoped(tenant, &sq.filter, vec![])?;
        let mut req = QueryPointsBuilder::new(&qn)
            .filter(f.clone())
            .limit(sq.top_k as u64)
            .with_payload(true);
        match sq.fusion {
            Fusion::Dense => {
                req = req.query(Query::new_nearest(sq.vector)).using(DENSE);
                if let Some(t) = sq.score_threshold {
                    req = req.score_threshold(t);
                }
            }
            Fusion::HybridRrf => {
                let mut dense = PrefetchQueryBuilder::default()
                    .query(Query::new_nearest(sq.vector))
                    .using(DENSE)
                    .filter(f.clone())
                    .limit((sq.top_k * 4) as u64);
                if let Some(t) = sq.score_threshold {
                    dense = dense.score_threshold(t);
                }
                let s = self.bm25.embed_query(&sq.text);
                let sparse = PrefetchQueryBuilder::default()
                    .query(Query::new_nearest(q::VectorInput::new_sparse(
                        s.indices, s.values,
                    )))
                    .using(SPARSE)
                    .filter(f)
                    .limit((sq.top_k * 4) as u64);
                req = req
                    .add_prefetch(dense)
                    .add_prefetch(sparse)
                    .query(Query::new_rrf(RrfBuilder::with_k(RRF_K)));
            }
        }
        let r = self
            .client
            .query(req)
            .await
            .map_err(|e| map_err(collection, e))?;
        Ok(r.result.into_iter().map(to_scored).collect())
    }

    async fn delete_document(&self, tenant: &str, collection: &str, doc_id: &str) -> Result<u64> {
        let qn = self.qname(tenant, collection);
        let f = scoped(
            tenant,
            &MetaFilter::default(),
            vec![QCondition::matches(DOC_ID, doc_id.to_owned())],
        )?;
        let n = self.count_filtered(collection, &qn, f.clone()).await?;
        if n > 0 {
            self.client
                .delete_points(DeletePointsBuilder::new(&qn).points(f).wait(true))
                .await
                .map_err(|e| map_err(collection, e))?;
        }
        Ok(n)
    }

    async fn count(&self, tenant: &str, collection: &str, meta: MetaFilter) -> Result<u64> {
        let qn = self.qname(tenant, collection);
        self.count_filtered(collection, &qn, scoped(tenant, &meta, vec![])?)
            .await
    }
}
