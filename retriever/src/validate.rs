//! Validation of everything a caller sends, before it reaches an engine.

use crate::error::{Result, RetrieverError};
use crate::types::{Chunk, Condition, MetaFilter};

/// Most chunks accepted in one upsert.
pub const MAX_BATCH: usize = 4096;
/// Largest top_k.
pub const MAX_TOP_K: usize = 1000;
pub const MAX_DIMENSIONS: usize = 65_536;
/// Most values in one one-of condition.
pub const MAX_ANY_OF: usize = 1024;

/// Collection names: 1–64 of `[A-Za-z0-9_-]`, so they are safe as
/// directory names and in URLs.
pub fn collection_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RetrieverError::invalid(format!(
            "invalid collection name {name:?}: use 1-64 characters from [A-Za-z0-9_-]"
        )))
    }
}

pub fn tenant(tenant: &str) -> Result<()> {
    if tenant.is_empty() || tenant.len() > 128 || tenant.chars().any(char::is_control) {
        return Err(RetrieverError::invalid(
            "tenant must be 1-128 printable characters",
        ));
    }
    Ok(())
}

pub fn dimensions(dims: usize) -> Result<()> {
    if dims == 0 || dims > MAX_DIMENSIONS {
        return Err(RetrieverError::invalid(format!(
            "dimensions must be between 1 and {MAX_DIMENSIONS}, got {dims}"
        )));
    }
    Ok(())
}

pub fn vector(v: &[f32], dims: usize, what: &str) -> Result<()> {
    if v.len() != dims {
        return Err(RetrieverError::invalid(format!(
            "{what}: vector has {} dimensions, the collection expects {dims}",
            v.len()
        )));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(RetrieverError::invalid(format!(
            "{what}: vector element {i} is not a finite number"
        )));
    }
    Ok(())
}

pub fn chunks(chunks: &[Chunk], dims: usize) -> Result<()> {
    if chunks.is_empty() {
        return Err(RetrieverError::invalid("upsert needs at least one chunk"));
    }
    if chunks.len() > MAX_BATCH {
        return Err(RetrieverError::invalid(format!(
            "upsert of {} chunks exceeds the batch limit of {MAX_BATCH}",
            chunks.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in chunks.iter().enumerate() {
        let what = format!("chunks[{i}]");
        if c.id.is_empty() || c.doc_id.is_empty() {
            return Err(RetrieverError::invalid(format!(
                "{what}: id and doc_id must not be empty"
            )));
        }
        if !seen.insert(c.id.as_str()) {
            return Err(RetrieverError::invalid(format!(
                "{what}: duplicate chunk id {:?} in one batch",
                c.id
            )));
        }
        vector(&c.vector, dims, &what)?;
    }
    Ok(())
}

/// Longest query text (it is BM25-scored on the request's thread).
pub const MAX_QUERY_TEXT_BYTES: usize = 64 * 1024;

pub fn query_text(text: &str) -> Result<()> {
    if text.len() > MAX_QUERY_TEXT_BYTES {
        return Err(RetrieverError::invalid(format!(
            "query text is {} bytes; at most {MAX_QUERY_TEXT_BYTES}",
            text.len()
        )));
    }
    Ok(())
}

pub fn top_k(k: usize) -> Result<()> {
    if k == 0 || k > MAX_TOP_K {
        return Err(RetrieverError::invalid(format!(
            "top_k must be between 1 and {MAX_TOP_K}, got {k}"
        )));
    }
    Ok(())
}

/// Deepest nesting of `any` filters, and most conditions in one filter
/// (all levels): a filter is evaluated per candidate point.
pub const MAX_FILTER_DEPTH: usize = 4;
pub const MAX_FILTER_CONDITIONS: usize = 64;

pub fn filter(f: &MetaFilter) -> Result<()> {
    let mut count = 0;
    filter_at(f, 0, &mut count)
}

fn filter_at(f: &MetaFilter, depth: usize, count: &mut usize) -> Result<()> {
    for c in f.must.iter().chain(&f.must_not) {
        *count += 1;
        if *count > MAX_FILTER_CONDITIONS {
            return Err(RetrieverError::invalid(format!(
                "a filter holds at most {MAX_FILTER_CONDITIONS} conditions"
            )));
        }
        let key = match c {
            Condition::Any(filters) => {
                if depth + 1 > MAX_FILTER_DEPTH {
                    return Err(RetrieverError::invalid(format!(
                        "filters nest at most {MAX_FILTER_DEPTH} levels deep"
                    )));
                }
                if filters.is_empty() {
                    return Err(RetrieverError::invalid(
                        "an any-of-filters condition needs at least one filter",
                    ));
                }
                for sub in filters {
                    if sub.must.is_empty() && sub.must_not.is_empty() {
                        return Err(RetrieverError::invalid(
                            "each filter of an any-of-filters condition needs a condition",
                        ));
                    }
                    filter_at(sub, depth + 1, count)?;
                }
                continue;
            }
            Condition::Equals { key, value } => {
                if !(value.is_string() || value.is_number() || value.is_boolean()) {
                    return Err(RetrieverError::invalid(format!(
                        "filter on {key:?}: equality needs a string, number or bool"
                    )));
                }
                key
            }
            Condition::AnyOf { key, values } => {
                let strings = values.iter().all(|v| v.is_string());
                let numbers = values.iter().all(|v| v.is_number());
                if values.is_empty() || !(strings || numbers) {
                    return Err(RetrieverError::invalid(format!(
                        "filter on {key:?}: one-of needs a non-empty list of all strings or all numbers"
                    )));
                }
                if values.len() > MAX_ANY_OF {
                    return Err(RetrieverError::invalid(format!(
                        "filter on {key:?}: one-of takes at most {MAX_ANY_OF} values, got {}",
                        values.len()
                    )));
                }
                key
            }
            Condition::Range {
                key,
                gt,
                gte,
                lt,
                lte,
            } => {
                let bounds = [gt, gte, lt, lte];
                if bounds.iter().all(|b| b.is_none()) {
                    return Err(RetrieverError::invalid(format!(
                        "filter on {key:?}: a range needs at least one bound"
                    )));
                }
                if bounds.iter().any(|b| b.is_some_and(|x| !x.is_finite())) {
                    return Err(RetrieverError::invalid(format!(
                        "filter on {key:?}: range bounds must be finite"
                    )));
                }
                key
            }
        };
        let ok = !key.is_empty()
            && key.len() <= 128
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(RetrieverError::invalid(format!(
                "filter key {key:?}: use 1-128 characters from [A-Za-z0-9_-]"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(collection_name("docs_v2-x").is_ok());
        for bad in ["", "a/b", "..", "x y", &"a".repeat(65)] {
            assert!(collection_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vectors() {
        assert!(vector(&[0.0, 1.0], 2, "q").is_ok());
        assert!(vector(&[0.0], 2, "q").is_err());
        assert!(vector(&[f32::NAN, 1.0], 2, "q").is_err());
        assert!(vector(&[f32::INFINITY, 1.0], 2, "q").is_err());
    }

    #[test]
    fn filters() {
        let eq = |value| MetaFilter {
            must: vec![Condition::Equals {
                key: "lang".into(),
                value,
            }],
            must_not: vec![],
        };
        assert!(filter(&eq(json!("en"))).is_ok());
        assert!(filter(&eq(json!(3))).is_ok());
        // numbers are numbers: floats and u64s filter like integers
        assert!(filter(&eq(json!(1.5))).is_ok());
        assert!(filter(&eq(json!(u64::MAX))).is_ok());
        assert!(filter(&eq(json!({"a": 1}))).is_err());
        let bad_key = MetaFilter {
            must: vec![Condition::Equals {
                key: "a.b".into(),
                value: json!("x"),
            }],
            must_not: vec![],
        };
        assert!(filter(&bad_key).is_err());
        let empty_range = MetaFilter {
            must: vec![Condition::Range {
                key: "year".into(),
                gt: None,
                gte: None,
                lt: None,
                lte: None,
            }],
            must_not: vec![],
        };
        assert!(filter(&empty_range).is_err());
    }
}
