//! `Embedder`: the transport-free core. Validates a request, tokenizes it,
//! queues it for the batching thread and awaits the vectors.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::batch::BatchPolicy;
use crate::error::{EmbedError, Result};
use crate::metrics as m;
use crate::model::LoadedModel;
use crate::queue::{self, Job, QueueHandle};

/// How an `Embedder` is built; the binary fills it from flags/env.
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// A sentence-transformers directory.
    pub model_path: PathBuf,
    /// Served model id; defaults to the directory's name.
    pub model_id: Option<String>,
    /// Token budget of one forward pass.
    pub max_batch_tokens: usize,
    /// Sequences per forward pass at most.
    pub max_batch_sequences: usize,
    /// Requests queued or running at once; past it, `Overloaded`.
    pub max_concurrent_requests: usize,
    /// Inputs per request at most (OpenAI allows 2048).
    pub max_inputs_per_request: usize,
}

impl EmbedderConfig {
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            model_id: None,
            max_batch_tokens: 16_384,
            max_batch_sequences: 256,
            max_concurrent_requests: 512,
            max_inputs_per_request: 2048,
        }
    }
}

/// Per-request options; `None` means the server default.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbedOptions {
    /// L2-normalise (default true).
    pub normalize: Option<bool>,
    /// Truncate over-long inputs at `max_input_tokens` (default true); when
    /// false an over-long input is an `Invalid` error.
    pub truncate: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct EmbedOutput {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens fed to the model (after truncation), special tokens included.
    pub prompt_tokens: usize,
}

#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub id: String,
    pub dims: usize,
    pub max_input_tokens: usize,
    pub pooling: &'static str,
    pub max_batch_tokens: usize,
    pub max_concurrent_requests: usize,
}

#[derive(Clone)]
pub struct Embedder {
    inner: Arc<Inner>,
}

struct Inner {
    model: Arc<LoadedModel>,
    info: ModelInfo,
    queue: QueueHandle,
    permits: Arc<Semaphore>,
    max_inputs: usize,
    /// Mean request time in µs (weight 1/16 per request): every admitted
    /// request is batched at once, so a refused one may try again when
    /// the typical request in flight has finished.
    mean_request_us: AtomicU64,
}

impl Inner {
    fn record(&self, took: Duration) {
        let us = took.as_micros().min(u128::from(u64::MAX / 2)) as u64;
        let old = self.mean_request_us.load(Ordering::Acquire);
        let new = if old == 0 {
            us
        } else {
            old - old / 16 + us / 16
        };
        self.mean_request_us.store(new, Ordering::Release);
    }

    /// The mean request time, at least 1 s (HTTP's resolution) and at most
    /// 60 s.
    fn retry_after(&self) -> Duration {
        Duration::from_micros(self.mean_request_us.load(Ordering::Acquire))
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Embedder {
    /// Loads the model and starts the batching thread. Blocking: call it
    /// before serving or from `spawn_blocking`.
    pub fn load(cfg: &EmbedderConfig) -> Result<Self> {
        // The `cuda` feature runs the forward on GPU 0 when one is present
        // (dense layers then use candle's matmul); CI builds CPU only.
        let device = if cfg!(feature = "cuda") {
            Device::cuda_if_available(0)?
        } else {
            Device::Cpu
        };
        let model = Arc::new(LoadedModel::load(
            &cfg.model_path,
            cfg.model_id.clone(),
            &device,
        )?);
        if cfg.max_batch_tokens < model.max_seq_len {
            return Err(EmbedError::invalid(
                format!(
                    "max_batch_tokens ({}) must be at least the model's max_seq_length ({})",
                    cfg.max_batch_tokens, model.max_seq_len
                ),
                "max_batch_tokens",
            ));
        }
        let info = ModelInfo {
            id: model.id.clone(),
            dims: model.dims,
            max_input_tokens: model.max_seq_len,
            pooling: model.pooling.name(),
            max_batch_tokens: cfg.max_batch_tokens,
            max_concurrent_requests: cfg.max_concurrent_requests,
        };
        let policy = BatchPolicy {
            max_batch_tokens: cfg.max_batch_tokens,
            max_batch_sequences: cfg.max_batch_sequences.max(1),
        };
        let queue = queue::spawn(model.clone(), policy)
            .map_err(|e| EmbedError::Backend(format!("cannot start compute thread: {e}")))?;
        m::describe();
        Ok(Self {
            inner: Arc::new(Inner {
                model,
                info,
                queue,
                permits: Arc::new(Semaphore::new(cfg.max_concurrent_requests.max(1))),
                max_inputs: cfg.max_inputs_per_request.max(1),
                mean_request_us: AtomicU64::new(0),
            }),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// (forward passes run, sequences embedded) since start: the ratio is
    /// the mean batch size.
    pub fn batch_counters(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.inner.queue.stats;
        (s.forward_passes.load(Relaxed), s.sequences.load(Relaxed))
    }

    /// Tokens in `text` without special tokens and without truncation:
    /// the size measure of ingest chunking, so a chunk never exceeds what
    /// the model reads.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.inner.model.counter.count(text)
    }

    /// The model's tokenizer.json (for remote token counting).
    pub fn tokenizer_json(&self) -> &[u8] {
        &self.inner.model.tokenizer_json
    }

    /// Accepts the served id, the id with an organisation prefix
    /// (`sentence-transformers/all-MiniLM-L6-v2`), or an empty string.
    pub fn check_model(&self, model: &str) -> Result<()> {
        if model_matches(&self.inner.info.id, model) {
            Ok(())
        } else {
            Err(EmbedError::UnknownModel(model.to_owned()))
        }
    }

    /// Embeds `texts`, batched with whatever else is in flight.
    pub async fn embed(&self, texts: Vec<String>, opts: EmbedOptions) -> Result<EmbedOutput> {
        let started = Instant::now();
        if texts.is_empty() {
            return Err(EmbedError::invalid("input must not be empty", "input"));
        }
        if texts.len() > self.inner.max_inputs {
            return Err(EmbedError::invalid(
                format!(
                    "input has {} items; at most {} are allowed per request",
                    texts.len(),
                    self.inner.max_inputs
                ),
                "input",
            ));
        }
        let _permit = self.admit()?;
        let truncate = opts.truncate.unwrap_or(true);
        let model = self.inner.model.clone();
        // Tokenizing a long input takes milliseconds: keep it off the async
        // workers.
        let seqs = tokio::task::spawn_blocking(move || tokenize(&model, texts, truncate))
            .await
            .map_err(|e| EmbedError::Backend(format!("tokenizer task failed: {e}")))??;
        let tokens: usize = seqs.iter().map(Vec::len).sum();
        let (reply, rx) = oneshot::channel();
        self.inner.queue.send(Job {
            seqs,
            normalize: opts.normalize.unwrap_or(true),
            reply,
            enqueued: Instant::now(),
            tokens,
        })?;
        let vectors = rx.await.map_err(|_| EmbedError::Unavailable)??;
        metrics::counter!(m::INPUT_TOKENS).increment(tokens as u64);
        metrics::histogram!(m::REQUEST_SECONDS).record(started.elapsed().as_secs_f64());
        self.inner.record(started.elapsed());
        Ok(EmbedOutput {
            vectors,
            prompt_tokens: tokens,
        })
    }

    fn admit(&self) -> Result<OwnedSemaphorePermit> {
        self.inner
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| EmbedError::Overloaded {
                limit: self.inner.info.max_concurrent_requests,
                retry_after: self.inner.retry_after(),
            })
    }
}

fn tokenize(model: &LoadedModel, texts: Vec<String>, truncate: bool) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for (i, text) in texts.into_iter().enumerate() {
        let enc = model.tokenizer.encode_fast(text, true).map_err(|e| {
            EmbedError::invalid(format!("input[{i}] cannot be tokenized: {e}"), "input")
        })?;
        if !truncate && !enc.get_overflowing().is_empty() {
            return Err(EmbedError::invalid(
                format!(
                    "input[{i}] is longer than the model's maximum of {} tokens and truncation is disabled",
                    model.max_seq_len
                ),
                "input",
            ));
        }
        out.push(enc.get_ids().to_vec());
    }
    Ok(out)
}

/// Whether a request's `model` names the served model `id`: the id itself,
/// `org/id` (a hub-style name), or "" (the served one). Shared with the
/// gateway's remote embedder so both answer alike.
pub fn model_matches(id: &str, model: &str) -> bool {
    model.is_empty() || model == id || model.rsplit_once('/').is_some_and(|(_, name)| name == id)
}
