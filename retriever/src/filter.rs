//! Translation of a caller's metadata filter into Qdrant's filter JSON,
//! shared by both backends (Qdrant Edge deserialises the same JSON shape the
//! Qdrant server speaks).
//!
//! Payload layout of every point:
//! `{"tenant", "doc_id", "chunk_id", "text", "metadata": {..caller's keys..}}`.
//! Caller keys are only ever addressed under `metadata.`, and the tenant
//! condition is always added by the retriever itself, so no filter a caller
//! sends can widen the search to another tenant's points.

use serde_json::{Value, json};

use serde_json::Map;

use crate::types::{Chunk, Condition, MetaFilter, ScoredChunk};

pub const TENANT: &str = "tenant";
pub const DOC_ID: &str = "doc_id";
pub const CHUNK_ID: &str = "chunk_id";
pub const TEXT: &str = "text";
pub const METADATA: &str = "metadata";

/// A closed range on one number: numeric equality goes through the float
/// index (see `edge_index`), and integers and floats compare as numbers.
fn number_is(key: &str, n: f64) -> Value {
    json!({"key": key, "range": {"gte": n, "lte": n}})
}

fn condition(c: &Condition) -> Value {
    match c {
        Condition::Equals { key, value } => {
            let key = format!("{METADATA}.{key}");
            match value.as_f64() {
                Some(n) if value.is_number() => number_is(&key, n),
                _ => json!({"key": key, "match": {"value": value}}),
            }
        }
        Condition::AnyOf { key, values } => {
            let key = format!("{METADATA}.{key}");
            if values.iter().all(Value::is_number) {
                let any: Vec<Value> = values
                    .iter()
                    .filter_map(Value::as_f64)
                    .map(|n| number_is(&key, n))
                    .collect();
                json!({"should": any})
            } else {
                json!({"key": key, "match": {"any": values}})
            }
        }
        Condition::Range {
            key,
            gt,
            gte,
            lt,
            lte,
        } => {
            json!({"key": format!("{METADATA}.{key}"), "range": {"gt": gt, "gte": gte, "lt": lt, "lte": lte}})
        }
        // a filter is itself a condition in Qdrant's filter language
        Condition::Any(filters) => {
            json!({"should": filters.iter().map(nested).collect::<Vec<_>>()})
        }
    }
}

/// A caller's filter as a nested condition (no tenant: the outer filter
/// has it).
fn nested(f: &MetaFilter) -> Value {
    json!({
        "must": f.must.iter().map(condition).collect::<Vec<_>>(),
        "must_not": f.must_not.iter().map(condition).collect::<Vec<_>>(),
    })
}

pub fn equals(key: &str, value: &str) -> Value {
    json!({"key": key, "match": {"value": value}})
}

/// The filter for one tenant's points, narrowed by the caller's metadata
/// filter and any `extra` conditions (e.g. a doc_id).
pub fn scoped(tenant: &str, meta: &MetaFilter, extra: &[Value]) -> Value {
    let mut must = vec![equals(TENANT, tenant)];
    must.extend(extra.iter().cloned());
    must.extend(meta.must.iter().map(condition));
    let must_not: Vec<Value> = meta.must_not.iter().map(condition).collect();
    if must_not.is_empty() {
        json!({"must": must})
    } else {
        json!({"must": must, "must_not": must_not})
    }
}

/// The payload stored with a chunk (layout in the module docs); the vector
/// goes separately.
pub fn payload(tenant: &str, ch: Chunk) -> Value {
    json!({
        TENANT: tenant,
        DOC_ID: ch.doc_id,
        CHUNK_ID: ch.id,
        TEXT: ch.text,
        METADATA: Value::Object(ch.metadata),
    })
}

/// A search hit back from a stored payload.
pub fn scored(mut payload: Map<String, Value>, score: f32) -> ScoredChunk {
    let mut take_str = |k: &str| match payload.remove(k) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    let (id, doc_id, text) = (take_str(CHUNK_ID), take_str(DOC_ID), take_str(TEXT));
    let metadata = match payload.remove(METADATA) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    ScoredChunk {
        id,
        doc_id,
        text,
        metadata,
        score,
    }
}

/// A stable point id for a tenant's chunk: re-upserting the same chunk id
/// overwrites the same point. 128-bit FNV-1a over tenant, NUL, chunk id.
pub fn point_uuid(tenant: &str, chunk_id: &str) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for b in tenant.bytes().chain([0u8]).chain(chunk_id.bytes()) {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_always_first_and_metadata_prefixed() {
        let f = MetaFilter {
            must: vec![Condition::Equals {
                key: "tenant".into(),
                value: json!("other"),
            }],
            must_not: vec![],
        };
        let v = scoped("a", &f, &[]);
        assert_eq!(
            v["must"][0],
            json!({"key": "tenant", "match": {"value": "a"}})
        );
        // the caller's "tenant" key addresses its own metadata, not ours
        assert_eq!(v["must"][1]["key"], "metadata.tenant");
    }

    #[test]
    fn ids_stable_and_tenant_scoped() {
        assert_eq!(point_uuid("a", "d#1"), point_uuid("a", "d#1"));
        assert_ne!(point_uuid("a", "d#1"), point_uuid("b", "d#1"));
        assert_ne!(point_uuid("ab", "c"), point_uuid("a", "bc"));
    }
}
