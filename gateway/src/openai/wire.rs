//! The response bodies of the generation endpoints as serde types, field
//! for field as OpenAI's schemas have them (`tests/python/openai_schemas.py`
//! validates every one in the tests), plus ragmesh's `citations` and `rag`
//! extensions. Fields OpenAI requires but ragmesh never fills
//! (`refusal`, `system_fingerprint`) are sent as `null`.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// Of the prompt, the tokens the runner's prefix cache served.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt: usize, completion: usize, cached: usize) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: cached,
            },
        }
    }
}

/// `chat.completion`
#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub system_fingerprint: Option<&'static str>,
    pub choices: [ChatChoice<'a>; 1],
    pub usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rag: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice<'a> {
    pub index: u32,
    pub message: AssistantMessage<'a>,
    pub logprobs: Option<ChatLogprobs<'a>>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage<'a> {
    pub role: &'static str,
    /// `null` when the answer is only tool calls.
    pub content: Option<String>,
    pub refusal: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citations: Option<&'a Value>,
}

/// `choices[].logprobs` of chat.
#[derive(Debug, Serialize)]
pub struct ChatLogprobs<'a> {
    pub content: Vec<TokenLp<'a>>,
    pub refusal: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct TokenLp<'a> {
    pub token: &'a str,
    pub logprob: f32,
    pub bytes: &'a [u8],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<Vec<TokenLp<'a>>>,
}

/// `text_completion`
#[derive(Debug, Serialize)]
pub struct Completion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub system_fingerprint: Option<&'static str>,
    /// Empty in the usage chunk of a stream.
    pub choices: Vec<CompletionChoice<'a>>,
    /// `None`: left out (stream chunks without usage requested);
    /// `Some(None)`: `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rag: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
pub struct CompletionChoice<'a> {
    pub index: u32,
    pub text: &'a str,
    pub logprobs: Option<CompletionLogprobs<'a>>,
    pub finish_reason: Option<&'static str>,
}

/// Legacy completions `logprobs`.
#[derive(Debug, Serialize)]
pub struct CompletionLogprobs<'a> {
    pub tokens: Vec<&'a str>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<serde_json::Map<String, Value>>,
    pub text_offset: Vec<usize>,
}

/// `chat.completion.chunk`
#[derive(Debug, Serialize)]
pub struct ChatChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub system_fingerprint: Option<&'static str>,
    /// Empty in the usage chunk.
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citations: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rag: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub logprobs: Option<ChatLogprobs<'a>>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallChunk<'a>>,
}

/// `message.tool_calls[]`.
#[derive(Debug, Serialize)]
pub struct ToolCallOut {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Debug, Serialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

/// `delta.tool_calls[]`: a call's first chunk carries `id`, `type` and
/// the name; later ones only fragments of the arguments.
#[derive(Debug, Serialize)]
pub struct ToolCallChunk<'a> {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionChunk<'a>,
}

#[derive(Debug, Serialize)]
pub struct FunctionChunk<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}
