//! The JSON filter a caller sends (`rag.filter`, search `filter`) and its
//! translation to the retriever's [`MetaFilter`]. One compact form:
//!
//! ```json
//! {"lang": "en", "team": ["a", "b"], "year": {"gte": 2020}, "must_not": {"draft": true}}
//! ```
//! a scalar is equality, an array is one-of, an object of `gt`/`gte`/`lt`/
//! `lte` is a numeric range; `must_not` holds conditions in the same form.
//! Keys address the document metadata given at ingest.

use ragmesh_retriever::{Condition, MetaFilter};
use serde_json::{Map, Value};

use crate::error::{ApiResult, bad_request};

pub fn parse(v: Option<&Value>) -> ApiResult<MetaFilter> {
    let mut out = MetaFilter::default();
    let obj = match v {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad_request("'filter' must be an object", "filter")),
    };
    for (key, value) in obj {
        if key == "must_not" {
            match value {
                Value::Object(inner) => {
                    for (k, v) in inner {
                        out.must_not.push(condition(k, v)?);
                    }
                }
                _ => return Err(bad_request("'filter.must_not' must be an object", "filter")),
            }
        } else {
            out.must.push(condition(key, value)?);
        }
    }
    Ok(out)
}

fn condition(key: &str, v: &Value) -> ApiResult<Condition> {
    let key = key.to_owned();
    match v {
        Value::String(_) | Value::Bool(_) | Value::Number(_) => Ok(Condition::Equals {
            key,
            value: v.clone(),
        }),
        Value::Array(values) if !values.is_empty() => Ok(Condition::AnyOf {
            key,
            values: values.clone(),
        }),
        Value::Object(m) => range(key, m),
        _ => Err(bad_request(
            format!("filter '{key}': use a scalar, a non-empty array or a range object"),
            "filter",
        )),
    }
}

fn range(key: String, m: &Map<String, Value>) -> ApiResult<Condition> {
    let mut bounds = [None; 4];
    for (k, v) in m {
        let slot = match k.as_str() {
            "gt" => 0,
            "gte" => 1,
            "lt" => 2,
            "lte" => 3,
            other => {
                return Err(bad_request(
                    format!("filter '{key}': unknown range bound '{other}' (gt, gte, lt, lte)"),
                    "filter",
                ));
            }
        };
        bounds[slot] = Some(v.as_f64().ok_or_else(|| {
            bad_request(format!("filter '{key}.{k}' must be a number"), "filter")
        })?);
    }
    if bounds.iter().all(Option::is_none) {
        return Err(bad_request(
            format!("filter '{key}': a range needs at least one of gt, gte, lt, lte"),
            "filter",
        ));
    }
    Ok(Condition::Range {
        key,
        gt: bounds[0],
        gte: bounds[1],
        lt: bounds[2],
        lte: bounds[3],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_form() {
        let f = parse(Some(&json!({
            "lang": "en", "team": ["a", "b"], "year": {"gte": 2020},
            "must_not": {"draft": true}
        })))
        .unwrap_or_default();
        assert_eq!(f.must.len(), 3);
        assert_eq!(f.must_not.len(), 1);
        assert!(
            f.must
                .iter()
                .any(|c| matches!(c, Condition::Range { gte: Some(g), .. } if *g == 2020.0))
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            json!(3),
            json!({"k": null}),
            json!({"k": []}),
            json!({"k": {"from": 1}}),
            json!({"k": {"gt": "x"}}),
            json!({"k": {}}),
            json!({"must_not": 1}),
        ] {
            assert!(parse(Some(&bad)).is_err(), "{bad}");
        }
    }
}
