//! `Generator`: the transport-free core. Requests are validated and
//! tokenized on the caller's thread, then queue for one engine thread that
//! runs continuous batching (see `scheduler.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use crate::error::{GenError, Result};
use crate::grammar::Grammars;
use crate::model::Llama;
use crate::request::{self, GenerateRequest, Input};
use crate::scheduler::{Engine, Job, Shared};
use crate::template::ChatTemplate;
use crate::tokenizer::GgufTokenizer;
use crate::tools::{CallDelta, CallStream, ToolChoice, ToolHistory, Tools};

#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub model: PathBuf,
    /// Sequences decoded together at most.
    pub max_sequences: usize,
    /// Tokens in one forward at most (prefill chunks + decode tokens).
    pub max_batched_tokens: usize,
    /// Requests waiting for a slot at most; beyond: `Overloaded`.
    pub max_waiting: usize,
    /// How long a request may wait for a slot before it is refused.
    pub max_queue_wait: std::time::Duration,
    /// KV-cache budget in tokens, summed over sequences.
    pub kv_cache_tokens: usize,
    /// Caps the model's context window (0: the model's own).
    pub max_model_len: usize,
    /// Matmul kernel (see `linear.rs`).
    pub kernel: crate::linear::Kernel,
    /// Reuse the KV blocks of prompt prefixes earlier or running sequences
    /// computed (`prefix.rs`).
    pub prefix_cache: bool,
}

impl GeneratorConfig {
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            max_sequences: 16,
            max_batched_tokens: 512,
            max_waiting: 256,
            max_queue_wait: std::time::Duration::from_secs(60),
            kv_cache_tokens: 65_536,
            max_model_len: 0,
            kernel: crate::linear::Kernel::default(),
            prefix_cache: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub model_id: String,
    pub architecture: String,
    pub context_length: usize,
    pub vocab_size: usize,
    pub has_chat_template: bool,
    /// The chat template renders `tools` itself.
    pub template_has_tools: bool,
    pub max_sequences: usize,
    pub max_batched_tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    /// The answer is function calls.
    ToolCalls,
}

impl FinishReason {
    /// OpenAI's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub token: u32,
    pub text: String,
    pub logprob: f32,
    pub top: Vec<(u32, String, f32)>,
}

/// What a request's stream carries.
#[derive(Debug)]
pub enum Event {
    Delta {
        text: String,
        token_ids: Vec<u32>,
        logprobs: Vec<TokenLogprob>,
        /// Function calls as they stream (see [`crate::tools`]).
        tool_calls: Vec<CallDelta>,
    },
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        /// Of `prompt_tokens`, those served from the prefix cache.
        cached_tokens: usize,
        completion_tokens: usize,
    },
    Error(GenError),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub waiting: usize,
    pub running: usize,
    pub max_sequences: usize,
    /// KV positions the running sequences hold, a shared block once.
    pub kv_tokens_used: usize,
    pub kv_tokens_capacity: usize,
    /// Whole KV blocks registered for prefix reuse (held or idle).
    pub cached_blocks: usize,
}

/// Counters that prove batching happened (tests, `/metrics`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub steps: u64,
    /// Steps that decoded two or more sequences together.
    pub shared_steps: u64,
    pub max_sequences_in_step: u64,
}

#[derive(Clone)]
pub struct Generator {
    jobs: std::sync::mpsc::SyncSender<Job>,
    shared: Arc<Shared>,
    tokenizer: Arc<GgufTokenizer>,
    template: Arc<ChatTemplate>,
    /// Response formats and tool calls as grammars (`None`: the model's
    /// vocabulary could not be prepared; constrained requests are refused).
    grammars: Option<Arc<Grammars>>,
    info: Arc<ModelInfo>,
    window: usize,
    /// The most text bytes one token stands for (the longest vocabulary
    /// entry): a prompt past `window × this` cannot fit, and is refused
    /// before it is tokenized.
    max_token_bytes: usize,
    kv_capacity: usize,
    max_waiting: usize,
}

impl Generator {
    /// Loads the model (seconds) and starts the engine thread.
    pub fn load(cfg: GeneratorConfig) -> Result<Self> {
        let (model, gguf) = Llama::load(&cfg.model, cfg.kernel)?;
        let tokenizer = GgufTokenizer::from_gguf(&gguf)?;
        let text = |id: Option<u32>| {
            id.map(|i| tokenizer.tokens[i as usize].clone())
                .unwrap_or_default()
        };
        let template = ChatTemplate::new(
            gguf.string("tokenizer.chat_template"),
            text(tokenizer.bos),
            text(tokenizer.eos),
        )?;
        let window = match cfg.max_model_len {
            0 => model.cfg.context_length,
            n => n.min(model.cfg.context_length),
        };
        let model_id = cfg
            .model
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_owned();
        let info = ModelInfo {
            model_id,
            architecture: model.cfg.architecture.clone(),
            context_length: window,
            vocab_size: model.cfg.vocab_size,
            has_chat_template: template.from_model,
            template_has_tools: template.native_tools,
            max_sequences: cfg.max_sequences,
            max_batched_tokens: cfg.max_batched_tokens,
        };
        let max_token_bytes = tokenizer
            .tokens
            .iter()
            .map(|t| t.chars().count().max(t.len()))
            .max()
            .unwrap_or(1)
            .max(1);
        let tokenizer = Arc::new(tokenizer);
        let grammars = match Grammars::new(tokenizer.clone(), model.cfg.vocab_size) {
            Ok(g) => Some(Arc::new(g)),
            Err(e) => {
                tracing::warn!(error = %e, "constrained output unavailable");
                None
            }
        };
        let shared = Arc::new(Shared::new(
            cfg.max_sequences,
            cfg.kv_cache_tokens,
            info.model_id.clone(),
        ));
        // The channel itself is unbounded in practice; admission is
        // bounded by `shared.waiting` (checked in `generate`).
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.max_waiting.max(1) * 2);
        let engine = Engine::new(model, tokenizer.clone(), shared.clone(), &cfg, rx);
        std::thread::Builder::new()
            .name("llm-engine".into())
            .spawn(move || engine.run())
            .map_err(|e| GenError::Internal(format!("cannot start engine thread: {e}")))?;
        Ok(Self {
            jobs: tx,
            shared,
            tokenizer,
            template: Arc::new(template),
            grammars,
            info: Arc::new(info),
            window,
            max_token_bytes,
            kv_capacity: cfg.kv_cache_tokens,
            max_waiting: cfg.max_waiting,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The grammar engine (`None`: constrained output is unavailable).
    pub fn grammars(&self) -> Option<&Grammars> {
        self.grammars.as_deref()
    }

    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// The prompt text a request's input becomes.
    pub fn render(&self, input: &Input) -> Result<String> {
        self.render_tools(input, None, &ToolHistory::default())
    }

    /// [`Self::render`] with the tools offered and the tool parts of the
    /// turns ([`ChatTemplate::render_tools`]).
    pub fn render_tools(
        &self,
        input: &Input,
        tools: Option<&Tools>,
        history: &ToolHistory,
    ) -> Result<String> {
        match input {
            Input::Chat(m) => self.template.render_tools(m, tools, history),
            Input::Prompt(p) => Ok(p.clone()),
        }
    }

    /// Tokenizes a request's input. CPU-bound (about a second per MB of
    /// text): async callers use [`Self::tokenize_blocking`].
    pub fn tokenize(&self, input: &Input, add_special: bool) -> Result<Vec<u32>> {
        self.tokenize_text(input, self.render(input)?, add_special)
    }

    fn tokenize_text(&self, input: &Input, text: String, add_special: bool) -> Result<Vec<u32>> {
        let bound = self.window.saturating_mul(self.max_token_bytes);
        if text.len() > bound {
            return Err(GenError::invalid(format!(
                "the prompt is {} bytes; this model's context of {} tokens cannot hold more than {bound} bytes of text: shorten the input",
                text.len(),
                self.window
            )));
        }
        // a rendered chat template already holds its special tokens
        let bos = add_special && matches!(input, Input::Prompt(_));
        self.tokenizer.encode(&text, bos)
    }

    /// [`Self::tokenize`] on the blocking pool, off the async workers.
    pub async fn tokenize_blocking(&self, input: Input, add_special: bool) -> Result<Vec<u32>> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.tokenize(&input, add_special))
            .await
            .map_err(|e| GenError::Internal(format!("tokenizing task failed: {e}")))?
    }

    /// [`Self::generate`] on the blocking pool: validating and tokenizing
    /// a long prompt must not stall the async workers that serve every
    /// other request.
    pub async fn generate_blocking(
        &self,
        req: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Event>> {
        let me = self.clone();
        // the caller's span goes with the job (the engine's span events)
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| me.generate(req)))
            .await
            .map_err(|e| GenError::Internal(format!("generation task failed: {e}")))?
    }

    /// Validates, tokenizes and queues; events arrive on the receiver.
    /// Dropping the receiver cancels the request (its slot is freed at the
    /// next engine step).
    pub fn generate(&self, req: GenerateRequest) -> Result<mpsc::UnboundedReceiver<Event>> {
        let stops = request::validate(&req)?;
        let text = self.render_tools(&req.input, req.tools.as_ref(), &req.history)?;
        let prompt = self.tokenize_text(&req.input, text, true)?;
        if prompt.is_empty() {
            return Err(GenError::invalid("the prompt is empty"));
        }
        let max_tokens = request::resolve_max_tokens(req.max_tokens, prompt.len(), self.window)?;
        if prompt.len() + max_tokens > self.kv_capacity {
            return Err(GenError::invalid(format!(
                "the request needs {} KV-cache tokens ({} prompt + {max_tokens} max_tokens); this runner holds {} in total: lower max_tokens",
                prompt.len() + max_tokens,
                prompt.len(),
                self.kv_capacity
            )));
        }
        // compiled after the cheap checks, before the request queues
        let (constraint, calls) = self.constrain(&req)?;
        // admission: bounded queue
        let waiting = self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.max_waiting {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(GenError::Overloaded {
                message: format!("{waiting} requests are already waiting; retry later"),
                retry_after: self.shared.retry_after(),
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut req = req;
        let mut constraint = constraint;
        if let Some(c) = constraint.as_mut() {
            c.budget(max_tokens);
        }
        if constraint.is_some() {
            // a guard that cuts the answer short would cut the JSON
            req.stop_on_repeat = false;
        }
        let job = Job::new(req, stops, prompt, max_tokens, tx).constrained(constraint, calls);
        if self.jobs.try_send(job).is_err() {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(GenError::Overloaded {
                message: "the engine queue is full; retry later".into(),
                retry_after: self.shared.retry_after(),
            });
        }
        crate::metrics::waiting(
            &self.shared.model_name,
            self.shared.waiting.load(Ordering::Acquire),
        );
        Ok(rx)
    }

    /// The grammar a request's output is held to, and the reader of its
    /// calls when it offers tools.
    fn constrain(
        &self,
        req: &GenerateRequest,
    ) -> Result<(Option<crate::grammar::Constraint>, Option<CallStream>)> {
        let tools = req.tools.as_ref().filter(|t| t.active());
        if req.format == request::OutputFormat::Text && tools.is_none() {
            return Ok((None, None));
        }
        if matches!(req.input, Input::Prompt(_)) && tools.is_some() {
            return Err(GenError::invalid(
                "tools need a chat (messages), not a prompt",
            ));
        }
        if req.ignore_eos {
            return Err(GenError::invalid(
                "ignore_eos cannot be combined with response_format or tools: the grammar decides where the answer ends",
            ));
        }
        let Some(g) = &self.grammars else {
            return Err(GenError::invalid(
                "this model's vocabulary does not support constrained output",
            ));
        };
        let kind = match (&req.format, tools) {
            (_, Some(_)) => "tools",
            (request::OutputFormat::JsonObject, _) => "json_object",
            (request::OutputFormat::JsonSchema { .. }, _) => "json_schema",
            (request::OutputFormat::Regex(_), _) => "regex",
            _ => "lark",
        };
        let t0 = std::time::Instant::now();
        let constraint = g.compile(&req.format, tools);
        crate::metrics::grammar(kind, constraint.is_ok(), t0.elapsed());
        let constraint = constraint?;
        let calls = tools.map(|t| CallStream::new(t.choice != ToolChoice::Auto));
        Ok((constraint, calls))
    }

    pub fn load_figures(&self) -> Load {
        self.shared.load()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }
}
