//! The gRPC contract's constrained-output and tool fields (version 2 of
//! `ragmesh.v1.LlmRunner`), both ways: the runner reads them
//! ([`crate::grpc`]) and the gateway's remote-runner client writes them,
//! with this one mapping.

use ragmesh_proto::v1 as pb;
use serde_json::Value;

use crate::error::{GenError, Result};
use crate::request::{GenerateRequest, OutputFormat};
use crate::tools::{FunctionTool, ToolCall, ToolChoice, ToolHistory, Tools};

/// This runner's contract version (`RunnerInfoResponse.contract_version`).
pub const CONTRACT_VERSION: u32 = 2;

/// Whether a request uses version-2 fields (an older runner would ignore
/// them and answer unconstrained).
pub fn needs_v2(r: &GenerateRequest) -> bool {
    r.format != OutputFormat::Text || r.tools.is_some() || !r.history.is_empty()
}

/// The chat turns with their tool parts.
pub fn chat_pb(turns: &[(String, String)], history: &ToolHistory) -> pb::ChatMessages {
    pb::ChatMessages {
        messages: turns
            .iter()
            .enumerate()
            .map(|(i, (role, content))| pb::ChatMessage {
                role: role.clone(),
                content: content.clone(),
                tool_calls: history
                    .calls_of(i)
                    .iter()
                    .map(|c| pb::ToolCall {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    })
                    .collect(),
                tool_call_id: history.result_of(i).unwrap_or_default().to_owned(),
            })
            .collect(),
    }
}

/// Chat turns and their tool parts from the wire.
pub fn chat_from_pb(c: pb::ChatMessages) -> (Vec<(String, String)>, ToolHistory) {
    let mut history = ToolHistory::default();
    let turns = c
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if !m.tool_calls.is_empty() {
                let calls = m
                    .tool_calls
                    .into_iter()
                    .map(|c| ToolCall {
                        id: c.id,
                        name: c.name,
                        arguments: c.arguments,
                    })
                    .collect();
                history.calls.push((i, calls));
            }
            if !m.tool_call_id.is_empty() {
                history.results.push((i, m.tool_call_id));
            }
            (m.role, m.content)
        })
        .collect();
    (turns, history)
}

/// Writes `r`'s format and tools into `out` (fields 13-16).
pub fn constraints_pb(r: &GenerateRequest, out: &mut pb::GenerateRequest) {
    use pb::response_format::{Format, JsonObject, JsonSchema};
    let format = match &r.format {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(Format::JsonObject(JsonObject {})),
        OutputFormat::JsonSchema {
            name,
            schema,
            strict,
        } => Some(Format::JsonSchema(JsonSchema {
            name: name.clone(),
            schema: schema.to_string(),
            strict: *strict,
        })),
        OutputFormat::Regex(x) => Some(Format::Regex(x.clone())),
        OutputFormat::Lark(x) => Some(Format::Lark(x.clone())),
    };
    out.response_format = format.map(|f| pb::ResponseFormat { format: Some(f) });
    let Some(t) = &r.tools else {
        return;
    };
    out.tools = t
        .functions
        .iter()
        .map(|f| pb::FunctionTool {
            name: f.name.clone(),
            description: f.description.clone(),
            parameters: f
                .parameters
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
            strict: f.strict,
        })
        .collect();
    use pb::tool_choice::Choice;
    let choice = match &t.choice {
        ToolChoice::Auto => Choice::Mode(pb::ToolMode::Auto as i32),
        ToolChoice::None => Choice::Mode(pb::ToolMode::None as i32),
        ToolChoice::Required => Choice::Mode(pb::ToolMode::Required as i32),
        ToolChoice::Function(n) => Choice::Function(n.clone()),
    };
    out.tool_choice = Some(pb::ToolChoice {
        choice: Some(choice),
    });
    out.parallel_tool_calls = Some(t.parallel);
}

fn json_field(field: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text)
        .map_err(|e| GenError::invalid(format!("{field} is not valid JSON: {e}")))
}

/// Reads fields 13-16 of a request from the wire.
pub fn constraints_from_pb(r: &pb::GenerateRequest) -> Result<(OutputFormat, Option<Tools>)> {
    use pb::response_format::Format;
    let format = match r.response_format.as_ref().and_then(|f| f.format.as_ref()) {
        None => OutputFormat::Text,
        Some(Format::JsonObject(_)) => OutputFormat::JsonObject,
        Some(Format::JsonSchema(s)) => OutputFormat::JsonSchema {
            name: s.name.clone(),
            schema: json_field("response_format.json_schema.schema", &s.schema)?,
            strict: s.strict,
        },
        Some(Format::Regex(x)) => OutputFormat::Regex(x.clone()),
        Some(Format::Lark(x)) => OutputFormat::Lark(x.clone()),
    };
    if r.tools.is_empty() {
        return Ok((format, None));
    }
    let functions = r
        .tools
        .iter()
        .enumerate()
        .map(|(i, f)| {
            Ok(FunctionTool {
                name: f.name.clone(),
                description: f.description.clone(),
                parameters: match f.parameters.as_str() {
                    "" => None,
                    p => Some(json_field(&format!("tools[{i}].function.parameters"), p)?),
                },
                strict: f.strict,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    use pb::tool_choice::Choice;
    let choice = match r.tool_choice.as_ref().and_then(|c| c.choice.as_ref()) {
        None => ToolChoice::Auto,
        Some(Choice::Function(n)) => ToolChoice::Function(n.clone()),
        Some(Choice::Mode(m)) => match pb::ToolMode::try_from(*m) {
            Ok(pb::ToolMode::Auto) => ToolChoice::Auto,
            Ok(pb::ToolMode::None) => ToolChoice::None,
            Ok(pb::ToolMode::Required) => ToolChoice::Required,
            Err(_) => return Err(GenError::invalid(format!("tool_choice: unknown mode {m}"))),
        },
    };
    if let ToolChoice::Function(n) = &choice
        && !functions.iter().any(|f| &f.name == n)
    {
        return Err(GenError::invalid(format!(
            "tool_choice names function '{n}', which is not in tools"
        )));
    }
    Ok((
        format,
        Some(Tools {
            functions,
            choice,
            parallel: r.parallel_tool_calls.unwrap_or(true),
        }),
    ))
}
