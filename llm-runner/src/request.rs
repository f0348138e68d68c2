//! A generation request as the core sees it, and its validation: every
//! limit a caller can exceed is checked here, before the request queues.

use crate::error::{GenError, Result};
use crate::sampling::SamplingParams;
use crate::tools::{ToolHistory, Tools};

pub const MAX_STOP_SEQUENCES: usize = 16;
pub const MAX_STOP_BYTES: usize = 256;
pub const MAX_TOP_LOGPROBS: u32 = 20;

#[derive(Debug, Clone)]
pub enum Input {
    /// `(role, content)`, rendered with the chat template.
    Chat(Vec<(String, String)>),
    /// Used as is (no template, no BOS unless the model asks for one).
    Prompt(String),
}

/// The shape the output must have (OpenAI's `response_format`, plus
/// vLLM's regex and grammar options), enforced token by token
/// ([`crate::grammar`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against `schema` (`strict`: unsupported keywords are
    /// refused, never ignored).
    JsonSchema {
        name: String,
        schema: serde_json::Value,
        /// OpenAI's strict mode: objects with `properties` take no other
        /// keys unless they say so (the schema is enforced either way).
        strict: bool,
    },
    /// Text the whole of which matches this regular expression.
    Regex(String),
    /// A Lark grammar in llguidance's dialect.
    Lark(String),
}

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub input: Input,
    pub sampling: SamplingParams,
    /// `None`: up to the context window (see [`resolve_max_tokens`]).
    pub max_tokens: Option<i64>,
    /// Raw bytes as received; must be UTF-8.
    pub stop: Vec<Vec<u8>>,
    pub logprobs: bool,
    pub top_logprobs: u32,
    pub request_id: String,
    /// vLLM's `ignore_eos`: end tokens neither finish the sequence nor add
    /// text; only `max_tokens` or a stop sequence ends it (fixed-length
    /// benchmarks).
    pub ignore_eos: bool,
    /// End the answer with `stop` when it starts to repeat a sentence or
    /// line it already wrote (see [`crate::repeat`]).
    pub stop_on_repeat: bool,
    /// Prefix-cache isolation (vLLM's `cache_salt`): cached blocks are
    /// reused only by requests with the same salt (0: the shared cache).
    pub cache_salt: u64,
    pub format: OutputFormat,
    /// Functions the model may call (`None`: no tools).
    pub tools: Option<Tools>,
    /// The tool calls and results of the conversation's turns.
    pub history: ToolHistory,
}

impl GenerateRequest {
    pub fn prompt(text: &str, max_tokens: i64) -> Self {
        Self {
            input: Input::Prompt(text.into()),
            sampling: SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            max_tokens: Some(max_tokens),
            stop: Vec::new(),
            logprobs: false,
            top_logprobs: 0,
            request_id: String::new(),
            ignore_eos: false,
            stop_on_repeat: false,
            cache_salt: 0,
            format: OutputFormat::Text,
            tools: None,
            history: ToolHistory::default(),
        }
    }
}

fn range(name: &str, v: f32, lo: f32, hi: f32) -> Result<()> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(GenError::invalid(format!(
            "{name} must be between {lo} and {hi}, got {v}"
        )))
    }
}

/// Checks sampling values and stop sequences; returns the stops as text.
pub fn validate(r: &GenerateRequest) -> Result<Vec<String>> {
    let s = &r.sampling;
    range("temperature", s.temperature, 0.0, 2.0)?;
    if !(s.top_p.is_finite() && s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(GenError::invalid(format!(
            "top_p must be in (0, 1], got {}",
            s.top_p
        )));
    }
    range("frequency_penalty", s.frequency_penalty, -2.0, 2.0)?;
    range("presence_penalty", s.presence_penalty, -2.0, 2.0)?;
    if !(s.repetition_penalty.is_finite()
        && s.repetition_penalty > 0.0
        && s.repetition_penalty <= 2.0)
    {
        return Err(GenError::invalid(format!(
            "repetition_penalty must be in (0, 2], got {}",
            s.repetition_penalty
        )));
    }
    if r.top_logprobs > MAX_TOP_LOGPROBS {
        return Err(GenError::invalid(format!(
            "top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {}",
            r.top_logprobs
        )));
    }
    if r.stop.len() > MAX_STOP_SEQUENCES {
        return Err(GenError::invalid(format!(
            "at most {MAX_STOP_SEQUENCES} stop sequences, got {}",
            r.stop.len()
        )));
    }
    r.stop
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if b.len() > MAX_STOP_BYTES {
                return Err(GenError::invalid(format!(
                    "stop[{i}] is longer than {MAX_STOP_BYTES} bytes"
                )));
            }
            String::from_utf8(b.clone())
                .map_err(|_| GenError::invalid(format!("stop[{i}] is not valid UTF-8")))
        })
        .collect()
}

/// The rule for `max_tokens` (vLLM's): unset means "until the context
/// window is full"; a value that does not fit next to the prompt is an
/// error that states the numbers, never silently clamped.
pub fn resolve_max_tokens(max: Option<i64>, prompt: usize, window: usize) -> Result<usize> {
    if prompt >= window {
        return Err(GenError::invalid(format!(
            "the prompt has {prompt} tokens; this model's context window is {window} tokens"
        )));
    }
    match max {
        None => Ok(window - prompt),
        Some(m) if m < 1 => Err(GenError::invalid(format!(
            "max_tokens must be at least 1, got {m}"
        ))),
        Some(m) if prompt as i64 + m > window as i64 => Err(GenError::invalid(format!(
            "this model's context window is {window} tokens; the request asks for {} ({prompt} in the prompt, {m} to generate)",
            prompt as i64 + m
        ))),
        Some(m) => Ok(m as usize),
    }
}
