//! Payload indexes of an edge shard. `tenant` and `doc_id` are indexed at
//! creation. Metadata keys are indexed the first time a chunk carries them,
//! typed by the first value seen (string → keyword, integer → integer,
//! other number → float, bool → bool): without an index, a filtered search
//! reads and parses every candidate's whole payload (measured: 30 ms instead
//! of 2 ms at 10,000 points for a 10% filter). Keys outside
//! `[A-Za-z0-9_-]{1,64}` and keys past [`MAX_METADATA_INDEXES`] per
//! collection stay unindexed: filters on them still work, only slower.

use std::collections::HashSet;

use qdrant_edge::{EdgeShard, FieldIndexOperations, UpdateOperation};
use serde_json::{Value, json};

use crate::error::{Result, RetrieverError};
use crate::filter::METADATA;
use crate::types::Chunk;

pub(crate) const MAX_METADATA_INDEXES: usize = 32;

fn backend_err(e: impl std::fmt::Display) -> RetrieverError {
    RetrieverError::Backend(e.to_string())
}

pub(crate) fn create(shard: &EdgeShard, field: &str, schema: &str) -> Result<()> {
    let op: qdrant_edge::CreateIndex =
        serde_json::from_value(json!({"field_name": field, "field_schema": schema}))
            .map_err(backend_err)?;
    shard
        .update(UpdateOperation::FieldIndexOperation(
            FieldIndexOperations::CreateIndex(op),
        ))
        .map_err(backend_err)
}

/// The payload fields a shard already indexes.
pub(crate) fn existing(shard: &EdgeShard) -> HashSet<String> {
    shard
        .info()
        .payload_schema
        .keys()
        .map(|k| k.to_string())
        .collect()
}

fn schema_of(v: &Value) -> Option<&'static str> {
    match v {
        Value::String(_) => Some("keyword"),
        Value::Bool(_) => Some("bool"),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some("integer"),
        Value::Number(_) => Some("float"),
        _ => None,
    }
}

fn indexable_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Creates the indexes `chunks` call for; `indexed` is updated.
pub(crate) fn ensure_metadata(
    shard: &EdgeShard,
    indexed: &mut HashSet<String>,
    chunks: &[Chunk],
) -> Result<()> {
    let prefix = format!("{METADATA}.");
    for ch in chunks {
        for (k, v) in &ch.metadata {
            let field = format!("{prefix}{k}");
            let metadata_count = indexed.iter().filter(|f| f.starts_with(&prefix)).count();
            if indexed.contains(&field)
                || metadata_count >= MAX_METADATA_INDEXES
                || !indexable_key(k)
            {
                continue;
            }
            if let Some(schema) = schema_of(v) {
                create(shard, &field, schema)?;
                indexed.insert(field);
            }
        }
    }
    Ok(())
}
