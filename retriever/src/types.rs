//! Plain types of the retriever core (no transport, no engine).

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distance {
    Cosine,
    Dot,
    Euclid,
}

impl Distance {
    pub fn name(self) -> &'static str {
        match self {
            Distance::Cosine => "Cosine",
            Distance::Dot => "Dot",
            Distance::Euclid => "Euclid",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "Cosine" => Some(Self::Cosine),
            "Dot" => Some(Self::Dot),
            "Euclid" => Some(Self::Euclid),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    pub name: String,
    pub dimensions: usize,
    pub distance: Distance,
    /// Points of the calling tenant.
    pub points: u64,
}

/// One chunk of a document, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Unique within the tenant's collection (e.g. `"<doc_id>#3"`).
    pub id: String,
    pub doc_id: String,
    pub text: String,
    pub vector: Vec<f32>,
    /// A JSON object.
    pub metadata: Map<String, Value>,
}

/// A condition on one metadata key.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Equal to a scalar (string, integer or bool).
    Equals { key: String, value: Value },
    /// Equal to one of several strings or integers.
    AnyOf { key: String, values: Vec<Value> },
    /// Numeric range; at least one bound.
    Range {
        key: String,
        gt: Option<f64>,
        gte: Option<f64>,
        lt: Option<f64>,
        lte: Option<f64>,
    },
    /// At least one of these filters holds (OR; each may nest further).
    Any(Vec<MetaFilter>),
}

/// All `must` hold and no `must_not` holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetaFilter {
    pub must: Vec<Condition>,
    pub must_not: Vec<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fusion {
    /// Dense vector only.
    #[default]
    Dense,
    /// Dense + BM25 over the chunk text, fused by reciprocal rank.
    HybridRrf,
}

#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub vector: Vec<f32>,
    /// Text for the BM25 leg (hybrid only).
    pub text: String,
    pub filter: MetaFilter,
    pub top_k: usize,
    /// Minimum dense score (in hybrid mode, applied to the dense leg).
    pub score_threshold: Option<f32>,
    pub fusion: Fusion,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoredChunk {
    pub id: String,
    pub doc_id: String,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub score: f32,
}
