//! Proto ⇄ core conversions of `ragmesh.v1.Retriever`, both directions:
//! the server (`grpc.rs`) reads requests with the `*_from` half, and a
//! remote client (the mesh gateway) writes them with the `*_to` half, so
//! one file owns the wire layout (JSON metadata as strings, filters as
//! conditions).

use ragmesh_proto::v1 as pb;
use serde_json::{Map, Value};
use tonic::Status;

use crate::error::RetrieverError;
use crate::types::{
    Chunk, CollectionInfo, Condition, Distance, Fusion, MetaFilter, ScoredChunk, SearchQuery,
};

pub fn invalid(msg: String) -> Status {
    Status::invalid_argument(msg)
}

pub fn distance_from(d: i32) -> Result<Distance, Status> {
    match pb::Distance::try_from(d) {
        Ok(pb::Distance::Unspecified | pb::Distance::Cosine) => Ok(Distance::Cosine),
        Ok(pb::Distance::Dot) => Ok(Distance::Dot),
        Ok(pb::Distance::Euclid) => Ok(Distance::Euclid),
        Err(_) => Err(invalid(format!("unknown distance {d}"))),
    }
}

pub fn distance_to(d: Distance) -> i32 {
    match d {
        Distance::Cosine => pb::Distance::Cosine as i32,
        Distance::Dot => pb::Distance::Dot as i32,
        Distance::Euclid => pb::Distance::Euclid as i32,
    }
}

pub fn info_to(i: CollectionInfo) -> pb::CollectionInfo {
    pb::CollectionInfo {
        name: i.name,
        dimensions: u32::try_from(i.dimensions).unwrap_or(u32::MAX),
        distance: distance_to(i.distance),
        points: i.points,
    }
}

pub fn metadata_from(json: &str, what: &str) -> Result<Map<String, Value>, Status> {
    if json.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid(format!(
            "{what}: metadata_json must be a JSON object"
        ))),
        Err(e) => Err(invalid(format!(
            "{what}: metadata_json is not valid JSON: {e}"
        ))),
    }
}

fn scalar(json: &str, key: &str) -> Result<Value, Status> {
    serde_json::from_str(json)
        .map_err(|e| invalid(format!("filter on {key:?}: value is not valid JSON: {e}")))
}

fn condition_from(c: pb::Condition) -> Result<Condition, Status> {
    let key = c.key;
    match c.r#match {
        Some(pb::condition::Match::EqualsJson(v)) => Ok(Condition::Equals {
            value: scalar(&v, &key)?,
            key,
        }),
        Some(pb::condition::Match::AnyOf(a)) => Ok(Condition::AnyOf {
            values: a
                .values_json
                .iter()
                .map(|v| scalar(v, &key))
                .collect::<Result<_, _>>()?,
            key,
        }),
        Some(pb::condition::Match::Range(r)) => Ok(Condition::Range {
            key,
            gt: r.gt,
            gte: r.gte,
            lt: r.lt,
            lte: r.lte,
        }),
        Some(pb::condition::Match::AnyFilter(list)) => Ok(Condition::Any(
            list.filters
                .into_iter()
                .map(|f| filter_from(Some(f)))
                .collect::<Result<_, _>>()?,
        )),
        None => Err(invalid(format!("filter on {key:?}: no match given"))),
    }
}

pub fn filter_from(f: Option<pb::Filter>) -> Result<MetaFilter, Status> {
    let f = f.unwrap_or_default();
    Ok(MetaFilter {
        must: f
            .must
            .into_iter()
            .map(condition_from)
            .collect::<Result<_, _>>()?,
        must_not: f
            .must_not
            .into_iter()
            .map(condition_from)
            .collect::<Result<_, _>>()?,
    })
}

pub fn info_from(i: pb::CollectionInfo) -> CollectionInfo {
    CollectionInfo {
        name: i.name,
        dimensions: i.dimensions as usize,
        // an unknown value from a newer server reads as the default
        distance: distance_from(i.distance).unwrap_or(Distance::Cosine),
        points: i.points,
    }
}

fn condition_to(c: &Condition) -> pb::Condition {
    use pb::condition::Match;
    let (key, m) = match c {
        Condition::Equals { key, value } => (key, Match::EqualsJson(value.to_string())),
        Condition::AnyOf { key, values } => (
            key,
            Match::AnyOf(pb::AnyOf {
                values_json: values.iter().map(Value::to_string).collect(),
            }),
        ),
        Condition::Range {
            key,
            gt,
            gte,
            lt,
            lte,
        } => (
            key,
            Match::Range(pb::Range {
                gt: *gt,
                gte: *gte,
                lt: *lt,
                lte: *lte,
            }),
        ),
        Condition::Any(filters) => {
            return pb::Condition {
                key: String::new(),
                r#match: Some(Match::AnyFilter(pb::FilterList {
                    filters: filters
                        .iter()
                        .map(|f| filter_to(f).unwrap_or_default())
                        .collect(),
                })),
            };
        }
    };
    pb::Condition {
        key: key.clone(),
        r#match: Some(m),
    }
}

pub fn filter_to(f: &MetaFilter) -> Option<pb::Filter> {
    if f.must.is_empty() && f.must_not.is_empty() {
        return None;
    }
    Some(pb::Filter {
        must: f.must.iter().map(condition_to).collect(),
        must_not: f.must_not.iter().map(condition_to).collect(),
    })
}

pub fn chunk_to(c: Chunk) -> pb::Chunk {
    pb::Chunk {
        id: c.id,
        doc_id: c.doc_id,
        text: c.text,
        vector: c.vector,
        metadata_json: Value::Object(c.metadata).to_string(),
    }
}

pub fn search_to(tenant: &str, collection: &str, q: SearchQuery) -> pb::SearchRequest {
    pb::SearchRequest {
        tenant: tenant.into(),
        collection: collection.into(),
        filter: filter_to(&q.filter),
        vector: q.vector,
        query_text: q.text,
        top_k: u32::try_from(q.top_k).unwrap_or(u32::MAX),
        score_threshold: q.score_threshold,
        fusion: match q.fusion {
            Fusion::Dense => pb::Fusion::Dense as i32,
            Fusion::HybridRrf => pb::Fusion::HybridRrf as i32,
        },
    }
}

/// A server's hit; metadata that is not a JSON object (a broken server)
/// is a backend error rather than silently dropped.
pub fn scored_from(h: pb::ScoredChunk) -> Result<ScoredChunk, RetrieverError> {
    let metadata = metadata_from(&h.metadata_json, &format!("hit {}", h.id))
        .map_err(|s| RetrieverError::Backend(s.message().to_owned()))?;
    Ok(ScoredChunk {
        id: h.id,
        doc_id: h.doc_id,
        text: h.text,
        metadata,
        score: h.score,
    })
}

/// A status from a remote retriever as the core's error. `name` is the
/// collection the call was about (NotFound / AlreadyExists name it).
pub fn error_from(s: Status, name: &str) -> RetrieverError {
    use tonic::Code;
    let msg = s.message().to_owned();
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            RetrieverError::InvalidArgument(msg)
        }
        Code::NotFound => RetrieverError::NotFound(name.into()),
        Code::AlreadyExists => RetrieverError::AlreadyExists(name.into()),
        Code::Aborted => RetrieverError::Conflict(msg),
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => {
            RetrieverError::Unavailable(msg)
        }
        _ => RetrieverError::Backend(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_survive_the_round_trip() {
        let f = MetaFilter {
            must: vec![
                Condition::Equals {
                    key: "lang".into(),
                    value: Value::from("en"),
                },
                Condition::AnyOf {
                    key: "year".into(),
                    values: vec![Value::from(2024), Value::from(2025)],
                },
            ],
            must_not: vec![Condition::Range {
                key: "pages".into(),
                gt: None,
                gte: Some(10.0),
                lt: Some(20.5),
                lte: None,
            }],
        };
        let back = filter_from(filter_to(&f)).map_err(|s| s.message().to_owned());
        assert_eq!(back, Ok(f));
        assert_eq!(filter_to(&MetaFilter::default()), None);
    }
}
