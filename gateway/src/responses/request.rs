//! `POST /v1/responses` bodies as a plain type, read field by field so
//! each refusal names its field (`param`). Fields the gateway cannot
//! honour are refused, not ignored: another tool type than `file_search`,
//! `background`, `conversation`, structured `text` formats.

use ragmesh_retriever::MetaFilter;
use serde_json::{Map, Value};

use super::types::{FileSearchTool, InputItem, InputPart, RankingOptions};
use crate::error::{ApiResult, bad_request};
use crate::fields::{self, Body};
use crate::openai::params::GenParams;

/// Input items one request may carry.
const MAX_ITEMS: usize = 1024;
/// `max_num_results` when the tool does not say (OpenAI's default is 20
/// for its larger windows; what does not fit is dropped anyway).
pub const DEFAULT_RESULTS: usize = 10;

/// A `file_search` tool: the stores, and the search settings.
#[derive(Debug, Clone)]
pub struct FileSearch {
    /// As the response echoes it.
    pub tool: FileSearchTool,
    pub filter: MetaFilter,
}

/// A create request (an upstream model is passed through unparsed).
#[derive(Debug)]
pub struct CreateResponse {
    /// The new input, as items (a string input is one user message).
    pub input: Vec<InputItem>,
    pub instructions: Option<String>,
    pub params: GenParams,
    pub max_output_tokens: Option<i64>,
    /// `text.format`.
    pub format: ragmesh_llm_runner::OutputFormat,
    pub store: bool,
    pub previous_response_id: Option<String>,
    pub metadata: Map<String, Value>,
    /// `include: ["file_search_call.results"]`.
    pub include_results: bool,
    pub file_search: Option<FileSearch>,
    /// `tool_choice: "none"`: the tool is listed but not used.
    pub search_disabled: bool,
    /// The caller's session key (set by the HTTP layer from
    /// `x-session-id`, `safety_identifier` or `user`).
    pub session: Option<String>,
}

impl CreateResponse {
    /// `item_id(i)` names the `i`-th input item.
    pub fn parse(b: &Body, item_id: impl Fn(usize) -> String) -> ApiResult<Self> {
        let input = input(b, &item_id)?;
        let instructions = fields::opt_str(b, "instructions")?;
        let max_output_tokens = fields::opt_i64(b, "max_output_tokens")?;
        if let Some(m) = max_output_tokens
            && m < 1
        {
            return Err(bad_request(
                format!("'max_output_tokens' must be at least 1, got {m}"),
                "max_output_tokens",
            ));
        }
        let params = GenParams {
            max_tokens: max_output_tokens,
            temperature: fields::opt_f32(b, "temperature", 0.0, 2.0)?,
            top_p: fields::opt_f32(b, "top_p", 0.0, 1.0)?.unwrap_or(1.0),
            seed: None,
            stop: Vec::new(),
            frequency_penalty: None,
            presence_penalty: None,
            repetition_penalty: None,
            stop_on_repeat: None,
            logprobs: false,
            top_logprobs: 0,
            stream: fields::opt_bool(b, "stream")?.unwrap_or(false),
            include_usage: true,
            // vLLM's extra parameter, as on chat completions
            ignore_eos: fields::opt_bool(b, "ignore_eos")?.unwrap_or(false),
        };
        let metadata = fields::opt_object(b, "metadata")?
            .cloned()
            .unwrap_or_default();
        crate::files::stores::validate_metadata(&metadata)?;
        let previous_response_id = fields::opt_str(b, "previous_response_id")?;
        if previous_response_id.as_deref() == Some("") {
            return Err(bad_request(
                "'previous_response_id' must not be empty",
                "previous_response_id",
            ));
        }
        refuse_unsupported(b)?;
        Ok(Self {
            input,
            instructions,
            params,
            max_output_tokens,
            format: crate::openai::tools::text_format(b)?,
            store: fields::opt_bool(b, "store")?.unwrap_or(true),
            previous_response_id,
            metadata,
            include_results: include(b)?,
            file_search: tools(b)?,
            search_disabled: tool_choice(b)?,
            session: None,
        })
    }
}

fn refuse_unsupported(b: &Body) -> ApiResult<()> {
    if fields::opt_bool(b, "background")?.unwrap_or(false) {
        return Err(bad_request(
            "background responses are not supported",
            "background",
        ));
    }
    if b.get("conversation").is_some_and(|v| !v.is_null()) {
        return Err(bad_request(
            "'conversation' is not supported: continue with previous_response_id",
            "conversation",
        ));
    }
    if fields::opt_int_in(b, "top_logprobs", 0, 20)?.is_some_and(|n| n > 0) {
        return Err(bad_request(
            "logprobs are not served on /v1/responses",
            "top_logprobs",
        ));
    }
    Ok(())
}

/// `include`: only `file_search_call.results` is served.
fn include(b: &Body) -> ApiResult<bool> {
    let Some(v) = b.get("include").filter(|v| !v.is_null()) else {
        return Ok(false);
    };
    let Value::Array(items) = v else {
        return Err(bad_request(
            "'include' must be an array of strings",
            "include",
        ));
    };
    let mut results = false;
    for (i, it) in items.iter().enumerate() {
        match it.as_str() {
            Some("file_search_call.results") => results = true,
            Some(other) => {
                return Err(bad_request(
                    format!(
                        "include[{i}]: '{other}' is not supported; only 'file_search_call.results'"
                    ),
                    "include",
                ));
            }
            None => {
                return Err(bad_request(
                    format!("include[{i}] must be a string"),
                    "include",
                ));
            }
        }
    }
    Ok(results)
}

/// `tool_choice`: `auto`, `required`, `{"type": "file_search"}`, or
/// `none` (true: do not search).
fn tool_choice(b: &Body) -> ApiResult<bool> {
    match b.get("tool_choice").filter(|v| !v.is_null()) {
        None => Ok(false),
        Some(Value::String(s)) => match s.as_str() {
            "auto" | "required" => Ok(false),
            "none" => Ok(true),
            other => Err(bad_request(
                format!("tool_choice '{other}' is not one of none, auto, required"),
                "tool_choice",
            )),
        },
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("file_search") => {
            Ok(false)
        }
        Some(_) => Err(bad_request(
            "tool_choice must be 'none', 'auto', 'required' or {\"type\": \"file_search\"}",
            "tool_choice",
        )),
    }
}

fn tools(b: &Body) -> ApiResult<Option<FileSearch>> {
    let items = match b.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad_request("'tools' must be an array", "tools")),
    };
    let mut found = None;
    for (i, t) in items.iter().enumerate() {
        let Value::Object(o) = t else {
            return Err(bad_request(
                format!("tools[{i}] must be an object"),
                "tools",
            ));
        };
        match o.get("type").and_then(Value::as_str) {
            Some("file_search") => {
                if found.is_some() {
                    return Err(bad_request(
                        "at most one file_search tool per request (list several vector_store_ids in it)",
                        "tools",
                    ));
                }
                found = Some(file_search(o, i)?);
            }
            Some(other) => {
                return Err(bad_request(
                    format!("tools[{i}]: tool type '{other}' is not supported; only 'file_search'"),
                    "tools",
                ));
            }
            None => {
                return Err(bad_request(format!("tools[{i}] needs a 'type'"), "tools"));
            }
        }
    }
    Ok(found)
}

fn file_search(o: &Body, i: usize) -> ApiResult<FileSearch> {
    let ids = match o.get("vector_store_ids") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(bad_request(
                format!(
                    "tools[{i}].vector_store_ids must be a non-empty array of vector store ids"
                ),
                "tools",
            ));
        }
    };
    if ids.len() > 16 {
        return Err(bad_request(
            format!(
                "tools[{i}].vector_store_ids lists {}; at most 16",
                ids.len()
            ),
            "tools",
        ));
    }
    let mut vector_store_ids = Vec::with_capacity(ids.len());
    for (j, id) in ids.iter().enumerate() {
        match id.as_str() {
            Some(s) if crate::files::ids::plausible(s) => {
                if !vector_store_ids.iter().any(|x| x == s) {
                    vector_store_ids.push(s.to_owned());
                }
            }
            _ => {
                return Err(bad_request(
                    format!("tools[{i}].vector_store_ids[{j}] is not a vector store id"),
                    "tools",
                ));
            }
        }
    }
    let max_num_results = match fields::opt_i64(o, "max_num_results")? {
        None => DEFAULT_RESULTS,
        Some(n) if (1..=50).contains(&n) => n as usize,
        Some(n) => {
            return Err(bad_request(
                format!("tools[{i}].max_num_results must be between 1 and 50, got {n}"),
                "tools",
            ));
        }
    };
    let filters = o.get("filters").filter(|v| !v.is_null()).cloned();
    let filter = match &filters {
        Some(f) => crate::files::search::parse_filter(f)?,
        None => MetaFilter::default(),
    };
    let (ranker, score_threshold) = match fields::opt_object(o, "ranking_options")? {
        None => ("auto".to_owned(), 0.0),
        Some(r) => {
            let ranker = fields::opt_str(r, "ranker")?.unwrap_or_else(|| "auto".into());
            if !matches!(ranker.as_str(), "auto" | "default-2024-11-15" | "none") {
                return Err(bad_request(
                    format!(
                        "tools[{i}].ranking_options.ranker '{ranker}' is not one of auto, default-2024-11-15, none"
                    ),
                    "tools",
                ));
            }
            let t = fields::opt_f32(r, "score_threshold", 0.0, 1.0)
                .map_err(|e| {
                    bad_request(
                        format!("tools[{i}].ranking_options: {}", e.message()),
                        "tools",
                    )
                })?
                .unwrap_or(0.0);
            (ranker, t)
        }
    };
    Ok(FileSearch {
        tool: FileSearchTool {
            kind: "file_search".into(),
            vector_store_ids,
            max_num_results,
            filters,
            ranking_options: RankingOptions {
                ranker,
                score_threshold,
            },
        },
        filter,
    })
}

fn input(b: &Body, item_id: &impl Fn(usize) -> String) -> ApiResult<Vec<InputItem>> {
    let items = match b.get("input") {
        None | Some(Value::Null) => return Err(bad_request("'input' is required", "input")),
        Some(Value::String(s)) => {
            return Ok(vec![message(
                item_id(0),
                "user",
                vec![part("input_text", s)],
            )]);
        }
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(bad_request(
                "'input' must be a string or an array of input items",
                "input",
            ));
        }
    };
    if items.is_empty() {
        return Err(bad_request("'input' must not be empty", "input"));
    }
    if items.len() > MAX_ITEMS {
        return Err(bad_request(
            format!("{} input items; at most {MAX_ITEMS}", items.len()),
            "input",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let Value::Object(o) = it else {
            return Err(bad_request(
                format!("input[{i}] must be an object"),
                "input",
            ));
        };
        match o.get("type").and_then(Value::as_str) {
            None | Some("message") => {}
            // an earlier search, given back as context: nothing to say
            Some("file_search_call") => continue,
            Some(other) => {
                return Err(bad_request(
                    format!("input[{i}]: item type '{other}' is not supported; send messages"),
                    "input",
                ));
            }
        }
        let role = match o.get("role").and_then(Value::as_str) {
            Some(r @ ("user" | "system" | "developer" | "assistant")) => r,
            Some(other) => {
                return Err(bad_request(
                    format!(
                        "input[{i}]: unknown role '{other}' (user, system, developer, assistant)"
                    ),
                    "input",
                ));
            }
            None => {
                return Err(bad_request(
                    format!("input[{i}].role must be a string"),
                    "input",
                ));
            }
        };
        let kind = if role == "assistant" {
            "output_text"
        } else {
            "input_text"
        };
        let text = content(o.get("content"), i)?;
        out.push(message(item_id(out.len()), role, vec![part(kind, &text)]));
    }
    if out.is_empty() {
        return Err(bad_request("'input' holds no message", "input"));
    }
    Ok(out)
}

/// A message's content: a string, or text parts (`input_text`,
/// `output_text`, `text`) joined.
fn content(v: Option<&Value>, i: usize) -> ApiResult<String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                let kind = p.get("type").and_then(Value::as_str);
                match (kind, p.get("text")) {
                    (Some("input_text" | "output_text" | "text"), Some(Value::String(t))) => {
                        out.push_str(t);
                    }
                    (Some("input_text" | "output_text" | "text"), _) => {
                        return Err(bad_request(
                            format!("input[{i}].content[{j}].text must be a string"),
                            "input",
                        ));
                    }
                    (Some(other), _) => {
                        return Err(bad_request(
                            format!(
                                "input[{i}].content[{j}]: content type '{other}' is not supported; send input_text parts"
                            ),
                            "input",
                        ));
                    }
                    (None, _) => {
                        return Err(bad_request(
                            format!("input[{i}].content[{j}] needs a 'type'"),
                            "input",
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad_request(
            format!("input[{i}].content must be a string or an array of input_text parts"),
            "input",
        )),
    }
}

fn part(kind: &str, text: &str) -> InputPart {
    let out = kind == "output_text";
    InputPart {
        kind: kind.to_owned(),
        text: text.to_owned(),
        annotations: out.then(Vec::new),
        logprobs: out.then(Vec::new),
    }
}

fn message(id: String, role: &str, content: Vec<InputPart>) -> InputItem {
    InputItem {
        id,
        kind: "message".into(),
        role: role.to_owned(),
        status: "completed".into(),
        content,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::body;
    use serde_json::json;

    fn parse(v: Value) -> ApiResult<CreateResponse> {
        CreateResponse::parse(&body(v), |i| format!("msg_{i}"))
    }

    #[test]
    fn string_and_item_inputs() {
        let r = parse(json!({"input": "hi"})).ok();
        let r = r.as_ref();
        assert_eq!(r.map(|r| r.input.len()), Some(1));
        assert_eq!(r.map(|r| r.input[0].role.as_str()), Some("user"));
        assert_eq!(r.map(|r| r.store), Some(true));
        let r = parse(json!({"input": [
            {"role": "developer", "content": "brief"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": []},
            {"role": "assistant", "content": [{"type": "output_text", "text": "c"}]},
        ], "max_output_tokens": 40, "store": false}))
        .ok();
        let r = r.as_ref();
        let items = r.map(|r| {
            r.input
                .iter()
                .map(|i| {
                    (
                        i.id.clone(),
                        i.role.clone(),
                        i.text(),
                        i.content[0].kind.clone(),
                    )
                })
                .collect::<Vec<_>>()
        });
        assert_eq!(
            items,
            Some(vec![
                (
                    "msg_0".into(),
                    "developer".into(),
                    "brief".into(),
                    "input_text".into()
                ),
                (
                    "msg_1".into(),
                    "user".into(),
                    "ab".into(),
                    "input_text".into()
                ),
                (
                    "msg_2".into(),
                    "assistant".into(),
                    "c".into(),
                    "output_text".into()
                ),
            ])
        );
        assert_eq!(r.and_then(|r| r.params.max_tokens), Some(40));
        assert_eq!(r.map(|r| r.store), Some(false));
    }

    #[test]
    fn file_search_tool_is_read_and_checked() {
        let r = parse(json!({"input": "q", "include": ["file_search_call.results"], "tools": [
            {"type": "file_search", "vector_store_ids": ["vs_a", "vs_b", "vs_a"], "max_num_results": 3,
             "filters": {"type": "eq", "key": "team", "value": "ops"},
             "ranking_options": {"score_threshold": 0.2}}
        ]}))
        .ok();
        let fs = r.as_ref().and_then(|r| r.file_search.clone());
        assert_eq!(
            fs.as_ref().map(|f| f.tool.vector_store_ids.clone()),
            Some(vec!["vs_a".to_owned(), "vs_b".to_owned()])
        );
        assert_eq!(fs.as_ref().map(|f| f.tool.max_num_results), Some(3));
        assert_eq!(fs.as_ref().map(|f| f.filter.must.len()), Some(1));
        assert_eq!(r.map(|r| r.include_results), Some(true));
    }

    #[test]
    fn bad_input_names_the_field() {
        for (bad, param, says) in [
            (json!({}), "input", "required"),
            (json!({"input": 5}), "input", "string or an array"),
            (json!({"input": []}), "input", "empty"),
            (
                json!({"input": [{"role": "wizard", "content": "x"}]}),
                "input",
                "unknown role",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
                "input",
                "input_image",
            ),
            (
                json!({"input": [{"type": "function_call"}]}),
                "input",
                "function_call",
            ),
            (
                json!({"input": "q", "tools": [{"type": "web_search"}]}),
                "tools",
                "web_search",
            ),
            (
                json!({"input": "q", "tools": [{"type": "file_search", "vector_store_ids": []}]}),
                "tools",
                "non-empty",
            ),
            (
                json!({"input": "q", "tools": [{"type": "file_search", "vector_store_ids": ["vs_a"], "filters": {"type": "regex"}}]}),
                "filters",
                "regex",
            ),
            (
                json!({"input": "q", "include": ["reasoning.encrypted_content"]}),
                "include",
                "not supported",
            ),
            (
                json!({"input": "q", "max_output_tokens": 0}),
                "max_output_tokens",
                "at least 1",
            ),
            (
                json!({"input": "q", "temperature": 3}),
                "temperature",
                "between",
            ),
            (
                json!({"input": "q", "background": true}),
                "background",
                "not supported",
            ),
            (
                json!({"input": "q", "text": {"format": {"type": "json_schema"}}}),
                "text",
                "json_schema",
            ),
            (
                json!({"input": "q", "tool_choice": "sometimes"}),
                "tool_choice",
                "sometimes",
            ),
            (
                json!({"input": "q", "previous_response_id": 7}),
                "previous_response_id",
                "string",
            ),
            (
                json!({"input": "q", "metadata": {"k": 1}}),
                "metadata",
                "metadata",
            ),
        ] {
            match parse(bad.clone()) {
                Ok(_) => panic!("accepted {bad}"),
                Err(e) => {
                    assert_eq!(e.param(), Some(param), "{bad}: {e}");
                    assert!(e.message().contains(says), "{bad}: {e}");
                }
            }
        }
    }
}
