//! `POST /v1/chat/completions`: OpenAI chat, with retrieval when the model
//! is a RAG profile or the request carries a `rag` object.
//!
//! Extensions (documented in the README): the assistant message and the
//! final stream chunk carry `citations` (the chunks placed in the prompt:
//! `index` as numbered in the prompt, `doc_id`, `chunk_id`, `score`,
//! `text` excerpt, `metadata`), and the response carries `rag` (profile,
//! collection, retrieved / used / dropped counts, timings in ms).

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::Value;

use super::front::{self, Incoming};
use super::output::{self, Kind};
use super::params::GenParams;
use crate::answer::{AnswerRequest, Plan, Question};
use crate::error::{ApiResult, bad_request};
use crate::fields::{self, Body};
use crate::metrics as m;
use crate::state::{AppState, Target};
use crate::upstream::{Endpoint, forward};

/// Messages one request may carry.
const MAX_MESSAGES: usize = 1024;

pub async fn chat(State(st): State<AppState>, req: Request) -> Response {
    m::reply("chat", chat_inner(&st, req).await)
}

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
    items
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
                "tool" | "function" => {
                    return Err(bad_request(
                        format!("messages[{i}]: role '{role}' is not supported (no tool calling)"),
                        "messages",
                    ));
                }
                other => {
                    return Err(bad_request(
                        format!("messages[{i}]: unknown role '{other}' (system, developer, user, assistant)"),
                        "messages",
                    ));
                }
            };
            let text = content_text(o.get("content").unwrap_or(&Value::Null), i)?;
            Ok((role.to_owned(), text))
        })
        .collect()
}

/// Fields we cannot honour are refused rather than silently ignored.
fn reject_unsupported(b: &Body) -> ApiResult<()> {
    if let Some(Value::Array(t)) = b.get("tools")
        && !t.is_empty()
    {
        return Err(bad_request("tool calling is not supported", "tools"));
    }
    if b.get("functions").is_some_and(|f| !f.is_null()) {
        return Err(bad_request(
            "function calling is not supported",
            "functions",
        ));
    }
    if let Some(rf) = fields::opt_object(b, "response_format")? {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") | None => {}
            Some(t) => {
                return Err(bad_request(
                    format!("response_format '{t}' is not supported; only 'text'"),
                    "response_format",
                ));
            }
        }
    }
    Ok(())
}

async fn chat_inner(st: &AppState, req: Request) -> ApiResult<Response> {
    const LARGE: [&str; 7] = [
        "messages",
        "rag",
        "tools",
        "functions",
        "stop",
        "logit_bias",
        "response_format",
    ];
    front::handle(st, req, "chat", &LARGE, |i| answer(st, i)).await
}

async fn answer(st: &AppState, i: Incoming) -> ApiResult<Response> {
    let Incoming {
        tenant,
        request_id,
        started,
        body,
        model,
        target,
        span,
    } = i;
    let rag = fields::opt_object(&body, "rag")?;
    if let Target::Upstream(up) = &target {
        // pass-through: the upstream validates its own request
        if rag.is_some() {
            return Err(bad_request(
                format!(
                    "'{model}' is an external upstream: retrieval ('rag') needs a runner model"
                ),
                "rag",
            ));
        }
        let stream = fields::opt_bool(&body, "stream")?.unwrap_or(false);
        return forward(up, Endpoint::Chat, &body, stream, &request_id).await;
    }
    let plan = Plan::new(st, target, rag)?;
    let messages = parse_messages(&body)?;
    let params = GenParams::parse(&body, true)?;
    reject_unsupported(&body)?;
    let format = output::Format::of(&params);
    let req = AnswerRequest {
        tenant,
        model: model.clone(),
        plan,
        question: Question::Chat(messages),
        params,
        id_prefix: "chatcmpl",
    };
    let a = crate::answer::answer(st, req, span).await?;
    output::respond(st, a, Kind::Chat, model, format, started).await
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
                "tool",
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
                Err(e) => assert!(e.message.contains(needle), "{bad}: {}", e.message),
                Ok(_) => panic!("accepted {bad}"),
            }
        }
    }

    #[test]
    fn unsupported_features_are_refused() {
        assert!(reject_unsupported(&body(json!({"tools": [{"type": "function"}]}))).is_err());
        assert!(
            reject_unsupported(&body(json!({"response_format": {"type": "json_object"}}))).is_err()
        );
        assert!(
            reject_unsupported(&body(
                json!({"tools": [], "response_format": {"type": "text"}})
            ))
            .is_ok()
        );
    }
}
