//! `POST /v1/vector_stores/{id}/search`: OpenAI's search request (query or
//! queries, `filters` in the comparison/compound form, ranking options)
//! on the store's collection. Scores are the dense (cosine) similarity,
//! clamped to OpenAI's 0–1 range, so `score_threshold` means what it
//! says; several queries are searched one by one and merged by best score.

use std::collections::HashMap;

use ragmesh_retriever::{Condition, MetaFilter};
use serde_json::Value;

use super::types::{FileObject, SearchHit, SearchPage, TextPart};
use super::{stores, uploads};
use crate::error::{ApiError, ApiResult, bad_request};
use crate::rag::profile::RagSpec;
use crate::rag::retrieve::retrieve;
use crate::state::Inner;

pub struct SearchRequest {
    pub queries: Vec<String>,
    pub max_num_results: usize,
    pub filter: MetaFilter,
    pub score_threshold: Option<f32>,
}

fn bad(message: impl Into<String>) -> ApiError {
    bad_request(message, "filters")
}

/// Deepest nesting of compound filters accepted.
const MAX_DEPTH: usize = 4;

/// OpenAI's `filters` (a comparison or compound filter) as a retriever
/// filter.
pub fn parse_filter(v: &Value) -> ApiResult<MetaFilter> {
    let mut f = MetaFilter::default();
    add(&mut f, v, 0)?;
    Ok(f)
}

/// Adds `v` to `into` as one more condition that must hold.
fn add(into: &mut MetaFilter, v: &Value, depth: usize) -> ApiResult<()> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("filters nest at most {MAX_DEPTH} levels deep")));
    }
    let Value::Object(o) = v else {
        return Err(bad("each filter must be an object with a 'type'"));
    };
    let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "and" | "or" => {
            let Some(Value::Array(items)) = o.get("filters") else {
                return Err(bad(format!(
                    "a compound '{kind}' filter needs a 'filters' array"
                )));
            };
            if items.is_empty() {
                return Err(bad(format!(
                    "a compound '{kind}' filter needs at least one filter"
                )));
            }
            if kind == "and" {
                for item in items {
                    add(into, item, depth + 1)?;
                }
            } else {
                let mut any = Vec::with_capacity(items.len());
                for item in items {
                    let mut sub = MetaFilter::default();
                    add(&mut sub, item, depth + 1)?;
                    any.push(sub);
                }
                into.must.push(Condition::Any(any));
            }
            Ok(())
        }
        "eq" | "ne" | "gt" | "gte" | "lt" | "lte" | "in" | "nin" => comparison(into, kind, o),
        "" => Err(bad("a filter needs a 'type'")),
        other => Err(bad(format!(
            "unknown filter type '{}': comparison filters use eq, ne, gt, gte, lt, lte, in, nin; \
             compound filters use and, or",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

fn comparison(
    into: &mut MetaFilter,
    op: &str,
    o: &serde_json::Map<String, Value>,
) -> ApiResult<()> {
    let Some(key) = o.get("key").and_then(Value::as_str) else {
        return Err(bad(format!("a '{op}' filter needs a string 'key'")));
    };
    let key = key.to_owned();
    let value = o
        .get("value")
        .ok_or_else(|| bad(format!("the '{op}' filter on '{key}' needs a 'value'")))?;
    let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
    match op {
        "eq" | "ne" => {
            if !scalar(value) {
                return Err(bad(format!(
                    "'{op}' on '{key}' compares with a string, number or boolean"
                )));
            }
            let c = Condition::Equals {
                key,
                value: value.clone(),
            };
            if op == "eq" {
                into.must.push(c)
            } else {
                into.must_not.push(c)
            }
        }
        "in" | "nin" => {
            let Value::Array(values) = value else {
                return Err(bad(format!("'{op}' on '{key}' takes an array of values")));
            };
            let strings = values.iter().all(Value::is_string);
            let numbers = values.iter().all(Value::is_number);
            if values.is_empty() || !(strings || numbers) {
                return Err(bad(format!(
                    "'{op}' on '{key}' takes a non-empty array of all strings or all numbers"
                )));
            }
            let c = Condition::AnyOf {
                key,
                values: values.clone(),
            };
            if op == "in" {
                into.must.push(c)
            } else {
                into.must_not.push(c)
            }
        }
        _ => {
            let Some(n) = value.as_f64() else {
                return Err(bad(format!("'{op}' on '{key}' compares with a number")));
            };
            let (mut gt, mut gte, mut lt, mut lte) = (None, None, None, None);
            match op {
                "gt" => gt = Some(n),
                "gte" => gte = Some(n),
                "lt" => lt = Some(n),
                _ => lte = Some(n),
            }
            into.must.push(Condition::Range {
                key,
                gt,
                gte,
                lt,
                lte,
            });
        }
    }
    Ok(())
}

pub async fn search(
    st: &Inner,
    tenant: &str,
    id: &str,
    req: SearchRequest,
) -> ApiResult<SearchPage> {
    let r = stores::live(st, tenant, id).await?;
    stores::touch(st, tenant, r).await;
    let spec = RagSpec {
        collection: id.to_owned(),
        top_k: req.max_num_results,
        score_threshold: req.score_threshold,
        hybrid: false,
        filter: req.filter,
        template: st.builtin_template.clone(),
    };
    // best score per chunk over all queries
    let mut best: HashMap<String, ragmesh_retriever::ScoredChunk> = HashMap::new();
    for q in &req.queries {
        for c in retrieve(st, tenant, &spec, q).await?.chunks {
            match best.get(&c.id) {
                Some(have) if have.score >= c.score => {}
                _ => {
                    best.insert(c.id.clone(), c);
                }
            }
        }
    }
    let mut hits: Vec<_> = best.into_values().collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    hits.truncate(req.max_num_results);
    let mut names: HashMap<String, Option<FileObject>> = HashMap::new();
    let mut data = Vec::with_capacity(hits.len());
    for c in hits {
        if !names.contains_key(&c.doc_id) {
            let f = uploads::get(&st.objects, tenant, &c.doc_id).await.ok();
            names.insert(c.doc_id.clone(), f);
        }
        // a chunk whose file was deleted meanwhile is not shown
        let Some(Some(file)) = names.get(&c.doc_id) else {
            continue;
        };
        data.push(SearchHit {
            file_id: c.doc_id,
            filename: file.filename.clone(),
            score: c.score.clamp(0.0, 1.0),
            attributes: c.metadata,
            content: vec![TextPart {
                kind: "text",
                text: c.text,
            }],
        });
    }
    Ok(SearchPage {
        object: "vector_store.search_results.page",
        search_query: req.queries,
        data,
        has_more: false,
        next_page: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compound_filters_become_nested_conditions() {
        let f = parse_filter(&json!({"type": "and", "filters": [
            {"type": "eq", "key": "team", "value": "ops"},
            {"type": "or", "filters": [
                {"type": "gte", "key": "year", "value": 2020},
                {"type": "nin", "key": "tier", "value": ["x", "y"]}
            ]}
        ]}))
        .unwrap_or_default();
        assert_eq!(f.must.len(), 2);
        assert!(matches!(&f.must[0], Condition::Equals { key, .. } if key == "team"));
        let Condition::Any(any) = &f.must[1] else {
            panic!("expected an any-of condition: {f:?}");
        };
        assert_eq!(any.len(), 2);
        assert!(matches!(&any[0].must[0], Condition::Range { gte: Some(g), .. } if *g == 2020.0));
        assert!(matches!(&any[1].must_not[0], Condition::AnyOf { .. }));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        for (bad, says) in [
            (
                json!({"type": "regex", "key": "a", "value": "x"}),
                "unknown filter type 'regex'",
            ),
            (json!({"type": "eq", "value": "x"}), "needs a string 'key'"),
            (
                json!({"type": "gt", "key": "a", "value": "x"}),
                "compares with a number",
            ),
            (
                json!({"type": "in", "key": "a", "value": []}),
                "non-empty array",
            ),
            (json!({"type": "or", "filters": []}), "at least one filter"),
            (json!([1]), "must be an object"),
        ] {
            let e = parse_filter(&bad)
                .err()
                .map(ApiError::into_message)
                .unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
