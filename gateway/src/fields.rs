//! Typed reads of a JSON request body. Unknown fields are ignored (as the
//! OpenAI API does); a known field with the wrong type or an out-of-range
//! value is a 400 that names the field. `null` counts as absent.

use serde_json::{Map, Value};

use crate::error::{ApiResult, bad_request};

pub type Body = Map<String, Value>;

fn present<'a>(b: &'a Body, key: &str) -> Option<&'a Value> {
    b.get(key).filter(|v| !v.is_null())
}

pub fn opt_str(b: &Body, key: &'static str) -> ApiResult<Option<String>> {
    match present(b, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_request(format!("'{key}' must be a string"), key)),
    }
}

pub fn req_str(b: &Body, key: &'static str) -> ApiResult<String> {
    opt_str(b, key)?.ok_or_else(|| bad_request(format!("'{key}' is required"), key))
}

pub fn opt_bool(b: &Body, key: &'static str) -> ApiResult<Option<bool>> {
    match present(b, key) {
        None => Ok(None),
        Some(Value::Bool(v)) => Ok(Some(*v)),
        Some(_) => Err(bad_request(format!("'{key}' must be a boolean"), key)),
    }
}

/// A number within `[lo, hi]`.
pub fn opt_f32(b: &Body, key: &'static str, lo: f64, hi: f64) -> ApiResult<Option<f32>> {
    match present(b, key) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if (lo..=hi).contains(&v) => Ok(Some(v as f32)),
            _ => Err(bad_request(
                format!("'{key}' must be between {lo} and {hi}, got {n}"),
                key,
            )),
        },
        Some(_) => Err(bad_request(format!("'{key}' must be a number"), key)),
    }
}

/// An integer (a float with no fraction is accepted, as JSON clients send
/// `5.0`); range checks are the caller's, so the message can say why.
pub fn opt_i64(b: &Body, key: &'static str) -> ApiResult<Option<i64>> {
    match present(b, key) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_i64() {
                return Ok(Some(v));
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                _ if n.as_u64().is_some() => {
                    Err(bad_request(format!("'{key}' is too large: {n}"), key))
                }
                _ => Err(bad_request(
                    format!("'{key}' must be an integer, got {n}"),
                    key,
                )),
            }
        }
        Some(_) => Err(bad_request(format!("'{key}' must be an integer"), key)),
    }
}

/// An integer within `[lo, hi]`.
pub fn opt_int_in(b: &Body, key: &'static str, lo: i64, hi: i64) -> ApiResult<Option<i64>> {
    match opt_i64(b, key)? {
        Some(v) if !(lo..=hi).contains(&v) => Err(bad_request(
            format!("'{key}' must be between {lo} and {hi}, got {v}"),
            key,
        )),
        v => Ok(v),
    }
}

/// `stop`: a string or an array of strings (at most 16).
pub fn stop_sequences(b: &Body) -> ApiResult<Vec<String>> {
    match present(b, "stop") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad_request(format!("stop[{i}] must be a string"), "stop")),
            })
            .collect(),
        Some(_) => Err(bad_request(
            "'stop' must be a string or an array of strings",
            "stop",
        )),
    }
}

/// An optional JSON object.
pub fn opt_object<'a>(b: &'a Body, key: &'static str) -> ApiResult<Option<&'a Body>> {
    match present(b, key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(bad_request(format!("'{key}' must be an object"), key)),
    }
}

/// A JSON object literal as a request body (tests across the crate).
#[cfg(test)]
pub fn body(v: Value) -> Body {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_rejects_by_type() {
        let b = body(json!({"s": "x", "n": 3, "f": 0.5, "t": true, "z": null, "w": 2.0}));
        assert_eq!(opt_str(&b, "s").ok().flatten().as_deref(), Some("x"));
        assert!(opt_str(&b, "n").is_err());
        assert_eq!(opt_str(&b, "z").ok().flatten(), None);
        assert_eq!(opt_i64(&b, "n").ok().flatten(), Some(3));
        assert_eq!(opt_i64(&b, "w").ok().flatten(), Some(2));
        assert!(opt_i64(&b, "f").is_err());
        assert!(opt_i64(&b, "s").is_err());
        assert_eq!(opt_bool(&b, "t").ok().flatten(), Some(true));
        assert!(opt_bool(&b, "n").is_err());
        assert!(opt_f32(&b, "f", 0.0, 1.0).is_ok());
        assert!(opt_f32(&b, "n", 0.0, 1.0).is_err());
        assert!(opt_int_in(&b, "n", 0, 2).is_err());
        assert!(req_str(&b, "missing").is_err());
    }

    #[test]
    fn huge_integers_are_errors_not_wraps() {
        let b = body(json!({"m": 18446744073709551615u64, "e": 1e300}));
        let e = opt_i64(&b, "m")
            .err()
            .map(crate::error::ApiError::into_message)
            .unwrap_or_default();
        assert!(e.contains("too large"), "{e}");
        assert!(opt_i64(&b, "e").is_err());
    }

    #[test]
    fn stop_forms() {
        assert_eq!(
            stop_sequences(&body(json!({"stop": "x"}))).ok(),
            Some(vec!["x".into()])
        );
        assert_eq!(
            stop_sequences(&body(json!({"stop": ["a", "b"]}))).ok(),
            Some(vec!["a".into(), "b".into()])
        );
        assert!(stop_sequences(&body(json!({"stop": [1]}))).is_err());
        assert!(stop_sequences(&body(json!({"stop": 1}))).is_err());
    }
}
