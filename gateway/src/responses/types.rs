//! The objects of OpenAI's Responses API, field for field as the official
//! SDKs read them and as OpenAI's published schemas (`Response`,
//! `ResponseStreamEvent`, `ResponseItemList`) require: fields the schema
//! requires are always sent, `null` where they do not apply.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `{"object": "response", ...}`: what `POST /v1/responses` returns and
/// what is stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResponseObject {
    pub id: String,
    pub object: String,
    pub created_at: u64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: String,
    pub completed_at: Option<u64>,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub store: bool,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub text: TextConfig,
    pub tool_choice: String,
    pub tools: Vec<FileSearchTool>,
    pub truncation: String,
    pub usage: Option<Usage>,
    pub metadata: Map<String, Value>,
    /// ragmesh's extension, as on chat completions: the retrieval summary
    /// (profile, collection, counts, timings), when retrieval ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResponseError {
    /// One of OpenAI's `ResponseErrorCode`s: `server_error` or
    /// `rate_limit_exceeded` here.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IncompleteDetails {
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TextConfig {
    pub format: TextFormat,
}

/// `text.format` as the response echoes it: `{"type": "text"}`,
/// `{"type": "json_object"}` or `{"type": "json_schema", "name",
/// "schema", "strict": true}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TextFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl TextFormat {
    pub fn of(f: &ragmesh_llm_runner::OutputFormat) -> Self {
        use ragmesh_llm_runner::OutputFormat as F;
        let (kind, name, schema, strict) = match f {
            F::JsonObject => ("json_object", None, None, None),
            F::JsonSchema {
                name,
                schema,
                strict,
            } => (
                "json_schema",
                Some(name.clone()),
                Some(schema.clone()),
                Some(*strict),
            ),
            _ => ("text", None, None, None),
        };
        Self {
            kind: kind.into(),
            name,
            schema,
            strict,
        }
    }
}

/// `{"type": "file_search", "vector_store_ids", ...}` as the response
/// echoes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileSearchTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub vector_store_ids: Vec<String>,
    pub max_num_results: usize,
    pub filters: Option<Value>,
    pub ranking_options: RankingOptions,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RankingOptions {
    pub ranker: String,
    pub score_threshold: f32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: usize,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: usize,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: usize,
}

impl Usage {
    /// `cached`: of the input, the tokens the runner's prefix cache served.
    pub fn new(input: usize, output: usize, cached: usize) -> Self {
        Self {
            input_tokens: input,
            input_tokens_details: InputTokensDetails {
                cached_tokens: cached,
                cache_write_tokens: 0,
            },
            output_tokens: output,
            output_tokens_details: OutputTokensDetails::default(),
            total_tokens: input + output,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputTokensDetails {
    pub cached_tokens: usize,
    pub cache_write_tokens: usize,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: usize,
}

/// One item of `output`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    FileSearchCall(FileSearchCall),
    Message(OutputMessage),
}

impl OutputItem {
    pub fn id(&self) -> &str {
        match self {
            Self::FileSearchCall(c) => &c.id,
            Self::Message(m) => &m.id,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileSearchCall {
    pub id: String,
    /// `in_progress`, `searching`, `completed` or `failed`.
    pub status: String,
    pub queries: Vec<String>,
    /// Only with `include: ["file_search_call.results"]`.
    pub results: Option<Vec<SearchResult>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResult {
    pub file_id: String,
    pub filename: String,
    pub score: f32,
    pub text: String,
    pub attributes: Map<String, Value>,
}

/// The assistant's message (`role` is always `assistant`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputMessage {
    pub id: String,
    pub role: String,
    /// `in_progress`, `completed` or `incomplete`.
    pub status: String,
    pub content: Vec<OutputText>,
}

/// `{"type": "output_text", "text", "annotations", "logprobs"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputText {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    pub annotations: Vec<FileCitation>,
    /// Always sent (the schema requires it); empty: the Responses API's
    /// logprobs are not served.
    #[serde(default)]
    pub logprobs: Vec<Value>,
}

impl OutputText {
    pub fn new(text: String, annotations: Vec<FileCitation>) -> Self {
        Self {
            kind: "output_text".into(),
            text,
            annotations,
            logprobs: Vec::new(),
        }
    }
}

/// `{"type": "file_citation", "file_id", "filename", "index"}`: `index`
/// is the character position in the text the citation belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileCitation {
    #[serde(rename = "type")]
    pub kind: String,
    pub file_id: String,
    pub filename: String,
    pub index: usize,
}

/// One input item as stored and listed by `input_items`: a message with
/// its text parts (`input_text` for system/developer/user turns,
/// `output_text` for assistant turns given as input).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputItem {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub role: String,
    pub status: String,
    pub content: Vec<InputPart>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    /// `output_text` parts only (OpenAI's output message shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<FileCitation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Value>>,
}

impl InputItem {
    /// The text of all parts, joined.
    pub fn text(&self) -> String {
        self.content.iter().map(|p| p.text.as_str()).collect()
    }
}

/// `{"object": "list", ...}` of input items.
#[derive(Debug, Clone, Serialize)]
pub struct InputItemList {
    pub object: &'static str,
    pub data: Vec<InputItem>,
    pub first_id: String,
    pub last_id: String,
    pub has_more: bool,
}

/// What `DELETE /v1/responses/{id}` returns (`object: "response"`).
pub use crate::files::types::Deleted;

/// One server-sent event of a streamed response, in the order
/// [`super::run`] emits them; [`Sequenced`] adds `sequence_number`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    #[serde(rename = "response.created")]
    Created { response: ResponseObject },
    #[serde(rename = "response.in_progress")]
    InProgress { response: ResponseObject },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.file_search_call.in_progress")]
    SearchInProgress {
        output_index: usize,
        item_id: String,
    },
    #[serde(rename = "response.file_search_call.searching")]
    Searching {
        output_index: usize,
        item_id: String,
    },
    #[serde(rename = "response.file_search_call.completed")]
    SearchCompleted {
        output_index: usize,
        item_id: String,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.content_part.added")]
    PartAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    #[serde(rename = "response.output_text.delta")]
    TextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.output_text.annotation.added")]
    AnnotationAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        annotation_index: usize,
        annotation: FileCitation,
    },
    #[serde(rename = "response.output_text.done")]
    TextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.content_part.done")]
    PartDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    #[serde(rename = "response.completed")]
    Completed { response: ResponseObject },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: ResponseObject },
    #[serde(rename = "response.failed")]
    Failed { response: ResponseObject },
    /// OpenAI's flat error event.
    #[serde(rename = "error")]
    Error {
        code: Option<String>,
        message: String,
        param: Option<String>,
    },
}

impl StreamEvent {
    /// The SSE `event:` name (the `type`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Created { .. } => "response.created",
            Self::InProgress { .. } => "response.in_progress",
            Self::ItemAdded { .. } => "response.output_item.added",
            Self::SearchInProgress { .. } => "response.file_search_call.in_progress",
            Self::Searching { .. } => "response.file_search_call.searching",
            Self::SearchCompleted { .. } => "response.file_search_call.completed",
            Self::ItemDone { .. } => "response.output_item.done",
            Self::PartAdded { .. } => "response.content_part.added",
            Self::TextDelta { .. } => "response.output_text.delta",
            Self::AnnotationAdded { .. } => "response.output_text.annotation.added",
            Self::TextDone { .. } => "response.output_text.done",
            Self::PartDone { .. } => "response.content_part.done",
            Self::Completed { .. } => "response.completed",
            Self::Incomplete { .. } => "response.incomplete",
            Self::Failed { .. } => "response.failed",
            Self::Error { .. } => "error",
        }
    }
}

/// An event with its place in the stream.
#[derive(Debug, Clone, Serialize)]
pub struct Sequenced<'a> {
    #[serde(flatten)]
    pub event: &'a StreamEvent,
    pub sequence_number: u64,
}
