//! The top-level members of a JSON object, found without parsing their
//! values: each value is a byte range of the body. The body reader parses
//! only the members a route reads and keeps the rest as raw text (for an
//! upstream that passes them on), so an unknown field holding millions of
//! array elements costs its bytes, not a tree of `Value`s 30× larger.
//!
//! This scanner only finds boundaries; whether each value is valid JSON is
//! serde_json's to say (every value is either parsed or validated with
//! `IgnoredAny`, which does not recurse). It is iterative, so nesting depth
//! costs nothing here.

use std::ops::Range;

/// One member: the key (unescaped) and the value's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub key: String,
    pub value: Range<usize>,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The index just past the string starting at `b[i] == '"'`.
fn end_of_string(b: &[u8], mut i: usize) -> Result<usize, String> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err("unterminated string".into())
}

/// The index just past the value starting at `b[start]` (a string, a
/// container with its brackets balanced, or a scalar up to the next
/// delimiter).
fn end_of_value(b: &[u8], start: usize) -> Result<usize, String> {
    match b.get(start) {
        None => Err("unexpected end of the body where a value was expected".into()),
        Some(b'"') => end_of_string(b, start),
        Some(b'{' | b'[') => {
            let (mut depth, mut i) = (0usize, start);
            loop {
                match b.get(i) {
                    None => return Err("unexpected end of the body inside a value".into()),
                    Some(b'"') => i = end_of_string(b, i)?,
                    Some(b'{' | b'[') => {
                        depth += 1;
                        i += 1;
                    }
                    Some(b'}' | b']') => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            return Ok(i);
                        }
                    }
                    Some(_) => i += 1,
                }
            }
        }
        Some(_) => {
            let mut i = start;
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            Ok(i)
        }
    }
}

/// The members of the object `b` holds, in order (duplicates kept).
/// Errors say what is wrong in a line a client can read.
pub fn members(b: &[u8]) -> Result<Vec<Member>, String> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err("request body must be a JSON object".into());
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return trailing(b, i + 1).map(|()| out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err(format!("expected a member name at byte {i}"));
        }
        let end = end_of_string(b, i)?;
        let key: String = serde_json::from_slice(&b[i..end])
            .map_err(|e| format!("invalid member name at byte {i}: {e}"))?;
        i = skip_ws(b, end);
        if b.get(i) != Some(&b':') {
            return Err(format!("expected ':' after \"{key}\""));
        }
        let start = skip_ws(b, i + 1);
        let stop = end_of_value(b, start)?;
        if stop == start {
            return Err(format!("member \"{key}\" has no value"));
        }
        out.push(Member {
            key,
            value: start..stop,
        });
        i = skip_ws(b, stop);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return trailing(b, i + 1).map(|()| out),
            _ => return Err(format!("expected ',' or '}}' at byte {i}")),
        }
    }
}

fn trailing(b: &[u8], i: usize) -> Result<(), String> {
    if skip_ws(b, i) == b.len() {
        Ok(())
    } else {
        Err("trailing characters after the JSON object".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_and_values(s: &str) -> Result<Vec<(String, String)>, String> {
        members(s.as_bytes()).map(|ms| {
            ms.into_iter()
                .map(|m| (m.key, s[m.value].to_owned()))
                .collect()
        })
    }

    #[test]
    fn finds_member_boundaries() {
        let got = keys_and_values(
            r#" {"a": 1, "b" : [1, {"x": "}]"}], "c\"d":"e,}" , "n":null,"o":{"p":[]}} "#,
        );
        let want: Vec<(String, String)> = [
            ("a", "1"),
            ("b", r#"[1, {"x": "}]"}]"#),
            ("c\"d", r#""e,}""#),
            ("n", "null"),
            ("o", r#"{"p":[]}"#),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, Ok(want));
        assert_eq!(keys_and_values("{}"), Ok(vec![]));
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        for bad in [
            "",
            "[]",
            "1",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":1} x",
            "{\"a\":\"x",
            "{a:1}",
            "{\"a\":[1,2}",
        ] {
            assert!(members(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_linear_and_does_not_recurse() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let ms = members(deep.as_bytes()).unwrap_or_default();
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].value.len(), 200_000);
    }
}
