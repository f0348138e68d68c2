//! The structured-output and tool fields of a chat request, read into the
//! runner's plain types: `response_format` (and the Responses API's
//! `text.format`), `tools`, `tool_choice`, `parallel_tool_calls`, and the
//! tool parts of `messages` (assistant `tool_calls`, `tool` results).
//!
//! What is checked here is the request's shape (names, ids, types); the
//! schemas themselves are compiled by the runner, which refuses an invalid
//! or unsupported one with a message naming the field.

use ragmesh_llm_runner::{FunctionTool, OutputFormat, ToolCall, ToolChoice, ToolHistory, Tools};
use serde_json::Value;

use crate::error::{ApiResult, bad_request};
use crate::fields::{self, Body};

/// Functions one request may offer.
const MAX_TOOLS: usize = 128;

/// OpenAI's rule for function and schema names.
fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// vLLM's guided-decoding fields, newest first: `structured_outputs`
/// (`{"json" | "regex" | "choice" | "grammar": ...}`) and the older
/// top-level `guided_json`, `guided_regex`, `guided_choice`,
/// `guided_grammar`. `grammar` is a Lark grammar in llguidance's dialect
/// (vLLM's xgrammar reads EBNF; simple Lark grammars are the same).
const GUIDED: [(&str, &str); 4] = [
    ("json", "guided_json"),
    ("regex", "guided_regex"),
    ("choice", "guided_choice"),
    ("grammar", "guided_grammar"),
];

/// `fields` and the members that carry an output format (a route's
/// large members: parsed even past the small-member bound).
pub fn with_format_fields(fields: &[&'static str]) -> Vec<&'static str> {
    let mut all = fields.to_vec();
    all.extend(["response_format", "structured_outputs"]);
    all.extend(GUIDED.iter().map(|(_, legacy)| *legacy));
    all
}

fn guided(b: &Body) -> ApiResult<Option<OutputFormat>> {
    let nested = fields::opt_object(b, "structured_outputs")?;
    let mut found = Vec::new();
    for (inner, legacy) in GUIDED {
        if let Some(v) = nested.and_then(|n| n.get(inner)).filter(|v| !v.is_null()) {
            found.push((inner, v));
        }
        if let Some(v) = b.get(legacy).filter(|v| !v.is_null()) {
            found.push((inner, v));
        }
    }
    let param = if nested.is_some() {
        "structured_outputs"
    } else {
        found
            .first()
            .map_or("structured_outputs", |(k, _)| match *k {
                "json" => "guided_json",
                "regex" => "guided_regex",
                "choice" => "guided_choice",
                _ => "guided_grammar",
            })
    };
    let (kind, v) = match found.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        _ => {
            return Err(bad_request(
                "give one guided-decoding constraint (json, regex, choice or grammar), not several",
                param,
            ));
        }
    };
    let text = |what: &str| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad_request(format!("{param}: {kind} must be {what}"), param))
    };
    Ok(Some(match kind {
        "json" => match v {
            Value::Object(_) | Value::Bool(_) => OutputFormat::JsonSchema {
                name: "guided_json".into(),
                schema: v.clone(),
                strict: false,
            },
            // vLLM also takes the schema as JSON text
            Value::String(s) => OutputFormat::JsonSchema {
                name: "guided_json".into(),
                schema: serde_json::from_str(s).map_err(|e| {
                    bad_request(format!("{param}: json is not valid JSON: {e}"), param)
                })?,
                strict: false,
            },
            _ => {
                return Err(bad_request(
                    format!("{param}: json must be a JSON Schema"),
                    param,
                ));
            }
        },
        "regex" => OutputFormat::Regex(text("a regular expression")?),
        "grammar" => OutputFormat::Lark(text("a Lark grammar")?),
        _ => {
            let choices = match v {
                Value::Array(a) if !a.is_empty() && a.len() <= 1024 => a
                    .iter()
                    .map(|c| c.as_str().map(|s| Value::from(s).to_string()))
                    .collect::<Option<Vec<_>>>(),
                _ => None,
            }
            .ok_or_else(|| {
                bad_request(format!("{param}: choice must be 1 to 1024 strings"), param)
            })?;
            // Lark string literals are JSON's
            OutputFormat::Lark(format!("start: {}", choices.join(" | ")))
        }
    }))
}

/// `response_format` of chat completions: `text`, `json_object`, or
/// `json_schema` with `{name, schema, strict}` under `json_schema`; or
/// one of vLLM's guided-decoding fields ([`GUIDED`]), not both.
pub fn response_format(b: &Body) -> ApiResult<OutputFormat> {
    let rf = fields::opt_object(b, "response_format")?;
    if let Some(g) = guided(b)? {
        if rf.is_some_and(|r| r.get("type").and_then(Value::as_str) != Some("text")) {
            return Err(bad_request(
                "send response_format or a guided-decoding field, not both",
                "response_format",
            ));
        }
        return Ok(g);
    }
    let Some(rf) = rf else {
        return Ok(OutputFormat::Text);
    };
    let spec = match rf.get("type").and_then(Value::as_str) {
        Some("json_schema") => Some(match rf.get("json_schema") {
            Some(Value::Object(o)) => o,
            _ => {
                return Err(bad_request(
                    "response_format.json_schema must be an object with 'name' and 'schema'",
                    "response_format",
                ));
            }
        }),
        _ => None,
    };
    format_of(rf, spec, "response_format")
}

/// The Responses API's `text.format`: the same formats, with the schema's
/// fields beside `type`.
pub fn text_format(b: &Body) -> ApiResult<OutputFormat> {
    let Some(t) = fields::opt_object(b, "text")? else {
        return Ok(OutputFormat::Text);
    };
    let Some(f) = fields::opt_object(t, "format")? else {
        return Ok(OutputFormat::Text);
    };
    format_of(f, Some(f), "text")
}

fn format_of(f: &Body, spec: Option<&Body>, param: &'static str) -> ApiResult<OutputFormat> {
    match f.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(OutputFormat::Text),
        Some("json_object") => Ok(OutputFormat::JsonObject),
        Some("json_schema") => {
            let spec = spec.unwrap_or(f);
            let name = match spec.get("name") {
                Some(Value::String(n)) if valid_name(n) => n.clone(),
                Some(Value::String(n)) => {
                    return Err(bad_request(
                        format!(
                            "{param}: json_schema name '{n}' must be 1-64 letters, digits, '_' or '-'"
                        ),
                        param,
                    ));
                }
                _ => {
                    return Err(bad_request(
                        format!("{param}: json_schema needs a 'name'"),
                        param,
                    ));
                }
            };
            let schema = match spec.get("schema") {
                None | Some(Value::Null) => Value::Object(Default::default()),
                Some(s @ (Value::Object(_) | Value::Bool(_))) => s.clone(),
                Some(_) => {
                    return Err(bad_request(
                        format!("{param}: json_schema.schema must be a JSON Schema object"),
                        param,
                    ));
                }
            };
            let strict = matches!(spec.get("strict"), Some(Value::Bool(true)));
            Ok(OutputFormat::JsonSchema {
                name,
                schema,
                strict,
            })
        }
        Some(other) => Err(bad_request(
            format!("{param}: format type '{other}' is not one of text, json_object, json_schema"),
            param,
        )),
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls` (`None`: no tools).
pub fn tools(b: &Body) -> ApiResult<Option<Tools>> {
    if b.get("functions").is_some_and(|f| !f.is_null()) {
        return Err(bad_request(
            "'functions' is deprecated and not supported: send 'tools'",
            "functions",
        ));
    }
    let functions = match b.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => functions(a)?,
        Some(_) => return Err(bad_request("'tools' must be an array", "tools")),
    };
    let parallel = fields::opt_bool(b, "parallel_tool_calls")?.unwrap_or(true);
    let choice = tool_choice(b)?;
    if functions.is_empty() {
        return match choice {
            None | Some(ToolChoice::None) => Ok(None),
            Some(_) => Err(bad_request(
                "'tool_choice' is only allowed when 'tools' are given",
                "tool_choice",
            )),
        };
    }
    let choice = choice.unwrap_or_default();
    if let ToolChoice::Function(n) = &choice
        && !functions.iter().any(|f| &f.name == n)
    {
        return Err(bad_request(
            format!("tool_choice names function '{n}', which is not in tools"),
            "tool_choice",
        ));
    }
    Ok(Some(Tools {
        functions,
        choice,
        parallel,
    }))
}

fn functions(a: &[Value]) -> ApiResult<Vec<FunctionTool>> {
    if a.len() > MAX_TOOLS {
        return Err(bad_request(
            format!("{} tools; at most {MAX_TOOLS}", a.len()),
            "tools",
        ));
    }
    let mut out: Vec<FunctionTool> = Vec::with_capacity(a.len());
    for (i, t) in a.iter().enumerate() {
        let bad = |m: String| bad_request(format!("tools[{i}]{m}"), "tools");
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(bad(format!(
                    ".type '{other}' is not supported; only 'function'"
                )));
            }
            None => return Err(bad(".type must be 'function'".into())),
        }
        let Some(Value::Object(f)) = t.get("function") else {
            return Err(bad(".function must be an object".into()));
        };
        let name = match f.get("name") {
            Some(Value::String(n)) if valid_name(n) => n.clone(),
            _ => {
                return Err(bad(
                    ".function.name must be 1-64 letters, digits, '_' or '-'".into(),
                ));
            }
        };
        if out.iter().any(|g| g.name == name) {
            return Err(bad(format!(": function '{name}' is defined twice")));
        }
        let description = match f.get("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(d)) => d.clone(),
            Some(_) => return Err(bad(".function.description must be a string".into())),
        };
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => None,
            Some(p @ Value::Object(_)) => Some(p.clone()),
            Some(_) => {
                return Err(bad(
                    ".function.parameters must be a JSON Schema object".into()
                ));
            }
        };
        let strict = matches!(f.get("strict"), Some(Value::Bool(true)));
        out.push(FunctionTool {
            name,
            description,
            parameters,
            strict,
        });
    }
    Ok(out)
}

fn tool_choice(b: &Body) -> ApiResult<Option<ToolChoice>> {
    let bad = || {
        bad_request(
            "tool_choice must be 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}",
            "tool_choice",
        )
    };
    match b.get("tool_choice") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "none" => Ok(Some(ToolChoice::None)),
            "auto" => Ok(Some(ToolChoice::Auto)),
            "required" => Ok(Some(ToolChoice::Required)),
            _ => Err(bad()),
        },
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
            {
                Some(n) => Ok(Some(ToolChoice::Function(n.to_owned()))),
                None => Err(bad()),
            }
        }
        Some(_) => Err(bad()),
    }
}

/// An assistant turn's `tool_calls`.
pub fn assistant_calls(v: Option<&Value>, i: usize) -> ApiResult<Vec<ToolCall>> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(bad_request(
                format!("messages[{i}].tool_calls must be an array"),
                "messages",
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let at = format!("messages[{i}].tool_calls[{j}]");
            let bad = |m: &str| bad_request(format!("{at}{m}"), "messages");
            let id = c
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad(".id must be a non-empty string"))?;
            let f = c
                .get("function")
                .ok_or_else(|| bad(".function is required"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(".function.name must be a string"))?;
            let arguments = f
                .get("arguments")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(".function.arguments must be a string of JSON"))?;
            if serde_json::from_str::<Value>(arguments).is_err() {
                return Err(bad(".function.arguments is not valid JSON"));
            }
            Ok(ToolCall {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments: arguments.to_owned(),
            })
        })
        .collect()
}

/// Checks that every `tool` turn answers a call an earlier assistant turn
/// made (by `tool_call_id`).
pub fn check_results(history: &ToolHistory) -> ApiResult<()> {
    for (turn, id) in &history.results {
        let made = history
            .calls
            .iter()
            .filter(|(t, _)| t < turn)
            .any(|(_, calls)| calls.iter().any(|c| &c.id == id));
        if !made {
            return Err(bad_request(
                format!(
                    "messages[{turn}].tool_call_id '{id}' does not match a tool call of an earlier assistant message"
                ),
                "messages",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::body;
    use serde_json::json;

    fn err(r: ApiResult<impl std::fmt::Debug>) -> String {
        match r {
            Err(e) => e.message().to_owned(),
            Ok(v) => panic!("accepted: {v:?}"),
        }
    }

    #[test]
    fn formats() {
        let f = response_format(&body(json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "p", "schema": {"type": "object"}, "strict": true}}})));
        assert!(matches!(f, Ok(OutputFormat::JsonSchema { ref name, .. }) if name == "p"));
        assert!(matches!(
            response_format(&body(json!({"response_format": {"type": "json_object"}}))),
            Ok(OutputFormat::JsonObject)
        ));
        assert!(matches!(
            text_format(&body(
                json!({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}})
            )),
            Ok(OutputFormat::JsonSchema { .. })
        ));
        assert!(
            err(response_format(&body(
                json!({"response_format": {"type": "yaml"}})
            )))
            .contains("yaml")
        );
        assert!(
            err(response_format(&body(
                json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}})
            )))
            .contains("name")
        );
        assert!(
            err(response_format(&body(
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}})
            )))
            .contains("name")
        );
    }

    #[test]
    fn vllm_guided_fields() {
        let f = |v| response_format(&body(v));
        assert!(
            matches!(f(json!({"structured_outputs": {"regex": "[0-9]+"}})), Ok(OutputFormat::Regex(ref r)) if r == "[0-9]+")
        );
        assert!(
            matches!(f(json!({"guided_choice": ["yes", "no \"maybe\""]})), Ok(OutputFormat::Lark(ref g)) if g == "start: \"yes\" | \"no \\\"maybe\\\"\"")
        );
        assert!(matches!(
            f(json!({"guided_json": "{\"type\": \"object\"}"})),
            Ok(OutputFormat::JsonSchema { .. })
        ));
        assert!(matches!(
            f(json!({"structured_outputs": {"grammar": "start: \"a\""}})),
            Ok(OutputFormat::Lark(_))
        ));
        assert!(
            err(f(json!({"guided_regex": "a", "guided_choice": ["b"]}))).contains("not several")
        );
        assert!(err(f(json!({"guided_choice": []}))).contains("1 to 1024"));
        assert!(
            err(f(
                json!({"guided_regex": "a", "response_format": {"type": "json_object"}})
            ))
            .contains("not both")
        );
        assert!(matches!(
            f(json!({"structured_outputs": {}})),
            Ok(OutputFormat::Text)
        ));
    }

    #[test]
    fn tools_and_choice() {
        let f = json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}});
        let t = tools(&body(
            json!({"tools": [f], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "parallel_tool_calls": false}),
        ));
        let t = t.ok().flatten().unwrap_or_default();
        assert_eq!(t.choice, ToolChoice::Function("get_weather".into()));
        assert!(!t.parallel);
        assert!(err(tools(&body(json!({"tools": [f], "tool_choice": {"type": "function", "function": {"name": "nope"}}})))).contains("'nope'"));
        assert!(err(tools(&body(json!({"tool_choice": "required"})))).contains("only allowed"));
        assert!(err(tools(&body(json!({"tools": [f, f]})))).contains("twice"));
        assert!(
            err(tools(&body(
                json!({"tools": [{"type": "code_interpreter"}]})
            )))
            .contains("not supported")
        );
        assert!(
            err(tools(&body(
                json!({"tools": [f], "tool_choice": "sometimes"})
            )))
            .contains("tool_choice")
        );
        assert!(matches!(
            tools(&body(json!({"tools": [], "tool_choice": "none"}))),
            Ok(None)
        ));
    }

    #[test]
    fn tool_results_must_answer_a_call() {
        let calls = assistant_calls(
            Some(
                &json!([{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]),
            ),
            1,
        );
        let calls = calls.unwrap_or_default();
        let ok = ToolHistory {
            calls: vec![(1, calls.clone())],
            results: vec![(2, "call_1".into())],
        };
        assert!(check_results(&ok).is_ok());
        let orphan = ToolHistory {
            calls: vec![(1, calls)],
            results: vec![(2, "call_9".into())],
        };
        assert!(err(check_results(&orphan)).contains("call_9"));
        let early = ToolHistory {
            calls: vec![],
            results: vec![(0, "call_1".into())],
        };
        assert!(check_results(&early).is_err());
        assert!(
            err(assistant_calls(
                Some(&json!([{"id": "c", "function": {"name": "f", "arguments": "{"}}])),
                0
            ))
            .contains("not valid JSON")
        );
    }
}
