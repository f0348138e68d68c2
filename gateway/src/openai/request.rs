//! The bodies of `/v1/chat/completions` and `/v1/completions` as plain
//! types, read from the members the body reader parsed
//! ([`crate::body`]: large members are parsed only when a route reads
//! them). The readers are written by hand rather than derived, so that
//! each refusal names its field (`param`) and says what is wrong in the
//! API's terms (`messages[2].content[0]: content type 'image_url' is not
//! supported`), as OpenAI's own errors do; unknown fields are ignored, as
//! OpenAI ignores them.

use ragmesh_llm_runner::{OutputFormat, ToolHistory, Tools};
use serde_json::Value;

use super::params::GenParams;
use crate::error::{ApiResult, bad_request};
use crate::fields::{self, Body};

/// A chat completion request (an upstream target is passed through
/// unparsed; this is what the runners answer).
pub struct ChatRequest {
    /// `(role, text)` turns, the runner's own chat input: `developer` is
    /// read as `system`, text parts joined.
    pub messages: Vec<(String, String)>,
    pub params: GenParams,
    /// The `rag` extension object, applied over a profile's settings by
    /// [`crate::answer::Plan::new`].
    pub rag: Option<Body>,
    /// `response_format`, `tools` and the tool parts of `messages`.
    pub shape: Shape,
}

/// What constrains an answer and the tool parts of its conversation
/// ([`super::tools`]).
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub format: OutputFormat,
    pub tools: Option<Tools>,
    pub history: ToolHistory,
}

impl ChatRequest {
    pub fn parse(b: &Body) -> ApiResult<Self> {
        let rag = fields::opt_object(b, "rag")?.cloned();
        let (messages, history) = parse_turns(b)?;
        let params = GenParams::parse(b, true)?;
        let shape = Shape {
            format: super::tools::response_format(b)?,
            tools: super::tools::tools(b)?,
            history,
        };
        Ok(Self {
            messages,
            params,
            rag,
            shape,
        })
    }
}

/// A text completion request.
pub struct CompletionRequest {
    pub prompt: String,
    pub params: GenParams,
}

impl CompletionRequest {
    pub fn parse(b: &Body) -> ApiResult<Self> {
        let prompt = prompt(b)?;
        let params = GenParams::parse(b, false)?;
        if fields::opt_bool(b, "echo")?.unwrap_or(false) {
            return Err(bad_request("'echo' is not supported", "echo"));
        }
        if fields::opt_str(b, "suffix")?.is_some() {
            return Err(bad_request("'suffix' is not supported", "suffix"));
        }
        if fields::opt_int_in(b, "best_of", 1, 1)?.is_some_and(|b| b != 1) {
            return Err(bad_request("only best_of=1 is supported", "best_of"));
        }
        Ok(Self { prompt, params })
    }
}

/// Messages one request may carry.
const MAX_MESSAGES: usize = 1024;

fn content_text(v: &Value, i: usize) -> ApiResult<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                let kind = p.get("type").and_then(Value::as_str);
                match (kind, p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => out.push_str(t),
                    (Some("text"), _) => {
                        return Err(bad_request(
                            format!("messages[{i}].content[{j}].text must be a string"),
                            "messages",
                        ));
                    }
                    (Some(other), _) => {
                        return Err(bad_request(
                            format!(
                                "messages[{i}].content[{j}]: content type '{other}' is not supported; send text parts"
                            ),
                            "messages",
                        ));
                    }
                    (None, _) => {
                        return Err(bad_request(
                            format!("messages[{i}].content[{j}] needs a 'type'"),
                            "messages",
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad_request(
            format!("messages[{i}].content must be a string or an array of text parts"),
            "messages",
        )),
    }
}

/// `(role, text)` pairs; `developer` is OpenAI's newer name for `system`.
pub fn parse_messages(b: &Body) -> ApiResult<Vec<(String, String)>> {
    parse_turns(b).map(|(turns, _)| turns)
}

/// `(role, text)` pairs and the turns' tool parts: an assistant's
/// `tool_calls`, a `tool` turn's `tool_call_id` (which must answer an
/// earlier call).
pub fn parse_turns(b: &Body) -> ApiResult<(Vec<(String, String)>, ToolHistory)> {
    let items = match b.get("messages") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(bad_request("'messages' is required", "messages")),
        Some(_) => return Err(bad_request("'messages' must be an array", "messages")),
    };
    if items.is_empty() {
        return Err(bad_request("'messages' must not be empty", "messages"));
    }
    if items.len() > MAX_MESSAGES {
        return Err(bad_request(
            format!("{} messages; at most {MAX_MESSAGES}", items.len()),
            "messages",
        ));
    }
    let mut history = ToolHistory::default();
    let turns = items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let Value::Object(o) = m else {
                return Err(bad_request(format!("messages[{i}] must be an object"), "messages"));
            };
            let role = match o.get("role") {
                Some(Value::String(r)) => r.as_str(),
                _ => {
                    return Err(bad_request(
                        format!("messages[{i}].role must be a string"),
                        "messages",
                    ));
                }
            };
            let role = match role {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" => "tool",
                "function" => {
                    return Err(bad_request(
                        format!("messages[{i}]: role 'function' is deprecated and not supported: use 'tool'"),
                        "messages",
                    ));
                }
                other => {
                    return Err(bad_request(
                        format!("messages[{i}]: unknown role '{other}' (system, developer, user, assistant, tool)"),
                        "messages",
                    ));
                }
            };
            let text = content_text(o.get("content").unwrap_or(&Value::Null), i)?;
            if role == "assistant" {
                let calls = super::tools::assistant_calls(o.get("tool_calls"), i)?;
                if !calls.is_empty() {
                    history.calls.push((i, calls));
                }
            }
            if role == "tool" {
                match o.get("tool_call_id") {
                    Some(Value::String(id)) if !id.is_empty() => history.results.push((i, id.clone())),
                    _ => {
                        return Err(bad_request(
                            format!("messages[{i}]: a tool message needs its 'tool_call_id'"),
                            "messages",
                        ));
                    }
                }
            }
            Ok((role.to_owned(), text))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    super::tools::check_results(&history)?;
    Ok((turns, history))
}

fn prompt(b: &Body) -> ApiResult<String> {
    match b.get("prompt") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(a[0].as_str().unwrap_or_default().to_owned())
        }
        Some(Value::Array(a)) if a.len() > 1 => Err(bad_request(
            "only one prompt per request is supported; send separate requests",
            "prompt",
        )),
        None | Some(Value::Null) => Err(bad_request("'prompt' is required", "prompt")),
        Some(_) => Err(bad_request(
            "'prompt' must be a string (token-id prompts are not supported)",
            "prompt",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fields::body;
    use serde_json::json;

    #[test]
    fn messages_accept_strings_and_text_parts() {
        let m = parse_messages(&body(json!({"messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null},
        ]})))
        .unwrap_or_default();
        assert_eq!(m[0], ("system".into(), "be brief".into()));
        assert_eq!(m[1], ("user".into(), "ab".into()));
        assert_eq!(m[2], ("assistant".into(), String::new()));
    }

    #[test]
    fn messages_rejected_with_the_index() {
        for (bad, needle) in [
            (json!({}), "required"),
            (json!({"messages": []}), "empty"),
            (json!({"messages": "hi"}), "array"),
            (
                json!({"messages": [{"role": "wizard", "content": "x"}]}),
                "unknown role",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "tool_call_id",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x", "tool_call_id": "call_1"}]}),
                "does not match",
            ),
            (json!({"messages": [{"content": "x"}]}), "role must be"),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "content must be",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "not supported",
            ),
        ] {
            match parse_messages(&body(bad.clone())) {
                Err(e) => assert!(e.message().contains(needle), "{bad}: {}", e.message()),
                Ok(_) => panic!("accepted {bad}"),
            }
        }
    }
}
