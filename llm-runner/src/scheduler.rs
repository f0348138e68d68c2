//! Continuous batching on one engine thread.
//!
//! Every step: take new requests, drop cancelled ones (their KV blocks are
//! freed, but for those the prefix cache keeps), admit waiting requests
//! while a sequence slot and their KV blocks (prompt + max_tokens) fit,
//! then run ONE forward over all running sequences: one token for each
//! decoding sequence plus prompt chunks of newly admitted ones, within
//! `max_batched_tokens`. Promising the whole budget at admission (in KV
//! blocks, less those of a cached prefix it holds; `prefix.rs`) means
//! memory is bounded and no running sequence ever has to be preempted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::GenError;
use crate::generator::{Event, FinishReason, GeneratorConfig, Load, Stats, TokenLogprob};
use crate::grammar::Constraint;
use crate::kv::{KEY_BLOCK, KvCache, Shape};
use crate::metrics as m;
use crate::model::{Llama, SeqBatch};
use crate::prefix::{BlockPool, held_positions};
use crate::request::GenerateRequest;
use crate::sampling::{Choice, Sampler, StopMatcher};
use crate::tokenizer::{GgufTokenizer, StreamDecoder};
use crate::tools::{CALL_CLOSE, CALL_OPEN, CallStream};

pub struct Shared {
    pub(crate) waiting: AtomicUsize,
    running: AtomicUsize,
    kv_used: AtomicUsize,
    max_sequences: usize,
    kv_capacity: usize,
    steps: AtomicU64,
    shared_steps: AtomicU64,
    max_in_step: AtomicU64,
    /// Whole blocks kept for prefix reuse (the `Load` reply).
    cached_blocks: AtomicUsize,
    /// Mean time a sequence holds a slot, in µs (an exponentially
    /// weighted mean of the last few dozen): what a refused request is
    /// told to wait per request ahead of it.
    mean_service_us: AtomicU64,
    /// The served model's id: the `model_name` label of the `vllm:` gauges.
    pub(crate) model_name: String,
}

impl Shared {
    pub fn new(max_sequences: usize, kv_capacity: usize, model_name: String) -> Self {
        Self {
            model_name,
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            kv_used: AtomicUsize::new(0),
            max_sequences,
            kv_capacity,
            steps: AtomicU64::new(0),
            shared_steps: AtomicU64::new(0),
            max_in_step: AtomicU64::new(0),
            mean_service_us: AtomicU64::new(0),
            cached_blocks: AtomicUsize::new(0),
        }
    }

    /// Folds one finished sequence's time in a slot into the mean.
    fn record_service(&self, held: Duration) {
        let us = held.as_micros().min(u128::from(u64::MAX / 2)) as u64;
        let old = self.mean_service_us.load(Ordering::Acquire);
        // weight 1/16: a few dozen requests set the mean
        let new = if old == 0 {
            us
        } else {
            old - old / 16 + us / 16
        };
        self.mean_service_us.store(new, Ordering::Release);
    }

    /// How long a request refused now should wait before trying again:
    /// the requests ahead of it, spread over the slots, each holding one
    /// for the mean service time (1 s before any has finished; at most
    /// 60 s).
    pub fn retry_after(&self) -> Duration {
        let mean = self.mean_service_us.load(Ordering::Acquire);
        if mean == 0 {
            return Duration::from_secs(1);
        }
        let ahead = self.waiting.load(Ordering::Acquire) as u64 + 1;
        let slots = self.max_sequences.max(1) as u64;
        let us = mean.saturating_mul(ahead.div_ceil(slots));
        Duration::from_micros(us).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    pub fn load(&self) -> Load {
        Load {
            waiting: self.waiting.load(Ordering::Acquire),
            running: self.running.load(Ordering::Acquire),
            max_sequences: self.max_sequences,
            kv_tokens_used: self.kv_used.load(Ordering::Acquire),
            kv_tokens_capacity: self.kv_capacity,
            cached_blocks: self.cached_blocks.load(Ordering::Acquire),
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            steps: self.steps.load(Ordering::Acquire),
            shared_steps: self.shared_steps.load(Ordering::Acquire),
            max_sequences_in_step: self.max_in_step.load(Ordering::Acquire),
        }
    }
}

pub struct Job {
    req: GenerateRequest,
    stops: Vec<String>,
    prompt: Vec<u32>,
    max_tokens: usize,
    tx: UnboundedSender<Event>,
    arrived: Instant,
    /// The request's span (the caller's, current at `generate`): the
    /// engine adds its timings to it as span events.
    span: tracing::Span,
    /// The output's grammar, if constrained.
    grammar: Option<Constraint>,
    /// The reader of function calls, if tools are offered.
    calls: Option<CallStream>,
}

impl Job {
    pub fn new(
        req: GenerateRequest,
        stops: Vec<String>,
        prompt: Vec<u32>,
        max_tokens: usize,
        tx: UnboundedSender<Event>,
    ) -> Self {
        Self {
            req,
            stops,
            prompt,
            max_tokens,
            tx,
            arrived: Instant::now(),
            span: tracing::Span::current(),
            grammar: None,
            calls: None,
        }
    }

    pub fn constrained(mut self, grammar: Option<Constraint>, calls: Option<CallStream>) -> Self {
        self.grammar = grammar;
        self.calls = calls;
        self
    }
}

struct Seq {
    job: Job,
    cache: KvCache,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    generated: Vec<u32>,
    /// The token to feed next (once the prompt is in).
    next: Option<u32>,
    sampler: Sampler,
    decoder: StreamDecoder,
    stop: StopMatcher,
    last_token_at: Option<Instant>,
    first_token_at: Option<Instant>,
    /// When the sequence took its slot.
    admitted: Instant,
    /// Prompt positions its cache held when admitted (a prefix-cache hit).
    cached: usize,
    /// KV blocks it may still add (promised at admission).
    promised: usize,
    grammar: Option<Constraint>,
    calls: Option<CallStream>,
}

pub struct Engine {
    model: Llama,
    tokenizer: Arc<GgufTokenizer>,
    shared: Arc<Shared>,
    rx: std::sync::mpsc::Receiver<Job>,
    waiting: VecDeque<Job>,
    running: Vec<Seq>,
    max_sequences: usize,
    max_batched_tokens: usize,
    /// Prompt chunk length: what is left of the step budget when every
    /// other sequence decodes, so a chunk always fits eventually.
    prefill_chunk: usize,
    /// KV blocks the running sequences may still add, together.
    promised: usize,
    kv_capacity: usize,
    /// Past this wait a queued request is refused (`Overloaded`).
    max_queue_wait: std::time::Duration,
    /// Every KV block, and the cached prefixes among them (`prefix.rs`).
    blocks: BlockPool,
}

impl Engine {
    pub fn new(
        model: Llama,
        tokenizer: Arc<GgufTokenizer>,
        shared: Arc<Shared>,
        cfg: &GeneratorConfig,
        rx: std::sync::mpsc::Receiver<Job>,
    ) -> Self {
        let max_sequences = cfg.max_sequences.max(1);
        // room for a decode token of every sequence plus prompt work
        let max_batched_tokens = cfg.max_batched_tokens.max(max_sequences + 1);
        let shape = Shape {
            n_layer: model.cfg.n_layer,
            kv_dim: model.cfg.n_kv_head * model.cfg.head_dim,
        };
        Self {
            model,
            tokenizer,
            shared,
            rx,
            waiting: VecDeque::new(),
            running: Vec::new(),
            max_sequences,
            max_batched_tokens,
            prefill_chunk: max_batched_tokens - max_sequences,
            promised: 0,
            kv_capacity: cfg.kv_cache_tokens,
            max_queue_wait: cfg.max_queue_wait,
            blocks: BlockPool::new(shape, cfg.kv_cache_tokens, cfg.prefix_cache),
        }
    }

    /// Removes the running sequences `gone` picks, releasing their
    /// promises and their blocks (cached ones stay cached).
    fn remove(&mut self, mut gone: impl FnMut(usize, &Seq) -> bool) {
        let gone: Vec<bool> = self
            .running
            .iter()
            .enumerate()
            .map(|(i, s)| gone(i, s))
            .collect();
        if !gone.contains(&true) {
            return; // the usual step: nothing to rebuild
        }
        for (s, gone) in std::mem::take(&mut self.running).into_iter().zip(gone) {
            if gone {
                self.promised -= s.promised;
                self.blocks.release(s.cache);
            } else {
                self.running.push(s);
            }
        }
    }

    pub fn run(mut self) {
        loop {
            // block only when idle
            if self.waiting.is_empty() && self.running.is_empty() {
                match self.rx.recv() {
                    Ok(j) => self.waiting.push_back(j),
                    Err(_) => return, // the Generator is gone
                }
            }
            while let Ok(j) = self.rx.try_recv() {
                self.waiting.push_back(j);
            }
            self.drop_cancelled();
            self.admit();
            self.publish();
            if !self.running.is_empty() {
                self.step();
                // again after the step: the loop may block next, and the
                // gauges (read by autoscalers and the gateway's routing)
                // must not keep the finished sequences
                self.publish();
            }
        }
    }

    fn publish(&self) {
        // a block several sequences hold is counted once
        let used = held_positions(self.running.iter().map(|s| &s.cache));
        self.shared
            .cached_blocks
            .store(self.blocks.cached_blocks(), Ordering::Release);
        self.shared.kv_used.store(used, Ordering::Release);
        self.shared
            .running
            .store(self.running.len(), Ordering::Release);
        let model = &self.shared.model_name;
        m::running(model, self.running.len());
        m::kv_usage(model, used, self.kv_capacity);
        m::waiting(model, self.shared.waiting.load(Ordering::Acquire));
    }

    fn drop_cancelled(&mut self) {
        let before = self.waiting.len();
        let deadline = self.max_queue_wait;
        self.waiting.retain(|j| {
            let waited = j.arrived.elapsed();
            if waited > deadline && !j.tx.is_closed() {
                m::queue_timeout();
                let _ = j.tx.send(Event::Error(GenError::Overloaded {
                    message: format!(
                        "waited {} s for a slot without getting one; retry later",
                        waited.as_secs()
                    ),
                    retry_after: self.shared.retry_after(),
                }));
                return false;
            }
            true
        });
        let expired = before - self.waiting.len();
        if expired > 0 {
            self.shared.waiting.fetch_sub(expired, Ordering::AcqRel);
        }
        let before = self.waiting.len();
        self.waiting.retain(|j| !j.tx.is_closed());
        let gone = before - self.waiting.len();
        if gone > 0 {
            self.shared.waiting.fetch_sub(gone, Ordering::AcqRel);
            // a client that left while queued is a cancellation too
            (0..gone).for_each(|_| m::cancelled());
        }
        self.remove(|_, s| {
            let gone = s.job.tx.is_closed();
            if gone {
                m::cancelled();
            }
            gone
        });
    }

    fn admit(&mut self) {
        while self.running.len() < self.max_sequences {
            let Some(job) = self.waiting.front() else {
                break;
            };
            let need = (job.prompt.len() + job.max_tokens).div_ceil(KEY_BLOCK);
            let hit = self.blocks.lookup(job.req.cache_salt, &job.prompt);
            let promised = need.saturating_sub(hit.len());
            if !self.blocks.fits(&hit, self.promised + promised) {
                break; // FIFO: wait for memory rather than starve big requests
            }
            let Some(mut job) = self.waiting.pop_front() else {
                break;
            };
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            self.promised += promised;
            let queued = job.arrived.elapsed();
            m::queue_time(queued);
            crate::trace::timing(&job.span, "queued", "ragmesh.queue_time_s", queued);
            let sampler = Sampler::new(job.req.sampling.clone());
            let stop = StopMatcher::new(job.stops.clone(), job.req.stop_on_repeat);
            // idle cached blocks are evicted only when a step needs them
            let cache = self.blocks.take(&hit);
            debug_assert_eq!(cache.blocks().len(), hit.len());
            let reused = cache.len();
            m::prefix_cache(&self.shared.model_name, job.prompt.len(), reused);
            if reused > 0 {
                crate::trace::cached(&job.span, reused);
            }
            self.running.push(Seq {
                grammar: job.grammar.take(),
                calls: job.calls.take(),
                cache,
                prefilled: reused,
                cached: reused,
                promised,
                generated: Vec::new(),
                next: None,
                sampler,
                decoder: StreamDecoder::default(),
                stop,
                last_token_at: None,
                first_token_at: None,
                admitted: Instant::now(),
                job,
            });
        }
    }

    fn step(&mut self) {
        // decode tokens first (latency), then prompt chunks in FIFO order
        let mut budget = self.max_batched_tokens;
        let mut plan: Vec<(usize, usize, usize)> = Vec::new(); // (seq, from, to) of prompt; from==to: decode
        for (i, s) in self.running.iter().enumerate() {
            if s.next.is_some() && budget > 0 {
                plan.push((i, 0, 0));
                budget -= 1;
            }
        }
        // prompts advance one chunk per step, cut at fixed multiples of
        // `prefill_chunk` (a prompt's chunks are the same alone or batched;
        // with the quantized kernels a row's bits do not depend on its call
        // anyway); a chunk that does not fit this step's budget waits for
        // the next
        for (i, s) in self.running.iter().enumerate() {
            if s.next.is_none() {
                let to = ((s.prefilled / self.prefill_chunk + 1) * self.prefill_chunk)
                    .min(s.job.prompt.len());
                if to - s.prefilled <= budget {
                    budget -= to - s.prefilled;
                    plan.push((i, s.prefilled, to));
                }
            }
        }
        plan.sort_by_key(|p| p.0);
        // the blocks this step's positions go to (promised at admission,
        // so evicting idle cached blocks always makes the room)
        let want = |s: &Seq, from: usize, to: usize| s.cache.len() + (to - from).max(1);
        let new: usize = plan
            .iter()
            .map(|&(i, from, to)| {
                let s = &self.running[i];
                want(s, from, to)
                    .div_ceil(KEY_BLOCK)
                    .saturating_sub(s.cache.blocks().len())
            })
            .sum();
        self.blocks.make_room(new);
        for &(i, from, to) in &plan {
            let s = &mut self.running[i];
            let upto = want(s, from, to);
            let added = self.blocks.grow(&mut s.cache, upto);
            debug_assert!(added <= s.promised, "a sequence outgrew its promise");
            let added = added.min(s.promised);
            s.promised -= added;
            self.promised -= added;
        }
        let prompt_tokens: usize = plan.iter().map(|p| p.2 - p.1).sum();
        let t0 = Instant::now();
        let result = {
            let mut batch: Vec<SeqBatch<'_>> = Vec::with_capacity(plan.len());
            // the grammars of sequences that sample this step: their masks
            // are computed while the forward runs
            let mut masks: Vec<&mut Constraint> = Vec::new();
            let mut p = plan.iter().peekable();
            for (i, s) in self.running.iter_mut().enumerate() {
                let Some(&&(_, from, to)) = p.peek().filter(|x| x.0 == i) else {
                    continue;
                };
                p.next();
                let Seq {
                    job,
                    cache,
                    next,
                    grammar,
                    ..
                } = s;
                if let Some(g) = grammar
                    .as_mut()
                    .filter(|_| from == to || to == job.prompt.len())
                {
                    masks.push(g);
                }
                if from == to {
                    if let Some(t) = next.as_ref() {
                        batch.push(SeqBatch {
                            tokens: std::slice::from_ref(t),
                            cache,
                            logits: true,
                        });
                    }
                } else {
                    batch.push(SeqBatch {
                        tokens: &job.prompt[from..to],
                        cache,
                        logits: to == job.prompt.len(),
                    });
                }
            }
            let model = &mut self.model;
            let (result, ()) = rayon::join(
                || model.forward(&mut batch),
                || masks.par_iter_mut().for_each(|g| g.prepare()),
            );
            result
        };
        let elapsed = t0.elapsed();
        self.shared.steps.fetch_add(1, Ordering::AcqRel);
        let decoding = plan.iter().filter(|p| p.1 == p.2).count() as u64;
        if plan.len() > 1 {
            self.shared.shared_steps.fetch_add(1, Ordering::AcqRel);
        }
        self.shared
            .max_in_step
            .fetch_max(plan.len() as u64, Ordering::AcqRel);
        m::step(plan.len(), prompt_tokens, decoding as usize, elapsed);
        let mut logits = match result {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "forward failed; failing the batch");
                for &(i, _, _) in &plan {
                    let _ = self.running[i].job.tx.send(Event::Error(
                        crate::error::GenError::Internal(e.to_string()),
                    ));
                }
                let doomed: Vec<usize> = plan.iter().map(|p| p.0).collect();
                // what a failed forward wrote was never registered: only
                // blocks full before it stay cached
                self.remove(|i, _| doomed.contains(&i));
                return;
            }
        };
        // sampling and streaming in parallel over sequences (each scans the
        // whole vocabulary; serial, 16 sequences left the other core idle
        // for a good part of a millisecond per step)
        let mut per_seq: Vec<Option<&mut [f32]>> = (0..self.running.len()).map(|_| None).collect();
        for ((i, from, to), logits) in plan.iter().copied().zip(logits.rows_mut()) {
            let Seq {
                job,
                cache,
                generated,
                prefilled,
                ..
            } = &mut self.running[i];
            if from != to {
                *prefilled = to;
            }
            // the blocks this step filled, for the prefix cache
            let held = job.prompt.iter().chain(generated.iter()).copied();
            self.blocks.register(cache, job.req.cache_salt, held);
            per_seq[i] = logits;
        }
        let tok = &*self.tokenizer;
        let finished: Vec<bool> = self
            .running
            .par_iter_mut()
            .zip(per_seq.par_iter_mut())
            .map(|(s, logits)| {
                let report = s
                    .job
                    .req
                    .logprobs
                    .then_some(s.job.req.top_logprobs as usize);
                let Some(l) = logits.as_mut() else {
                    return false;
                };
                if let Some(g) = s.grammar.as_mut()
                    && let Err(e) = g.apply(l)
                {
                    let _ = s.job.tx.send(Event::Error(e));
                    return true;
                }
                let choice = s.sampler.sample(l, report);
                // an end token is not fed: it ends the sequence either way
                let complete = match s.grammar.as_mut() {
                    Some(g) if !tok.stop_ids.contains(&choice.token) => {
                        match g.accept(choice.token) {
                            Ok(done) => done,
                            Err(e) => {
                                let _ = s.job.tx.send(Event::Error(e));
                                return true;
                            }
                        }
                    }
                    _ => false,
                };
                emit(tok, s, choice, complete)
            })
            .collect();
        if finished.contains(&true) {
            // the service time of completed sequences only (a cancelled or
            // failed one would pull the Retry-After estimate down)
            for (s, _) in self.running.iter().zip(&finished).filter(|(_, f)| **f) {
                self.shared.record_service(s.admitted.elapsed());
            }
            self.remove(|i, _| finished[i]);
        }
    }
}

/// Streams sequence `s`'s sampled token; true when the sequence finished
/// (`complete`: its grammar allows nothing more). Sequences emit in
/// parallel (each has its own decoder, stop matcher and channel), in the
/// pass that samples them.
fn emit(tok: &GgufTokenizer, s: &mut Seq, choice: Choice, complete: bool) -> bool {
    let want_lp = s.job.req.logprobs;
    let now = Instant::now();
    match s.last_token_at {
        None => {
            m::ttft(now - s.job.arrived);
            crate::trace::timing(
                &s.job.span,
                "first_token",
                "ragmesh.time_to_first_token_s",
                now - s.job.arrived,
            );
            s.first_token_at = Some(now);
        }
        Some(t) => m::itl(now - t),
    }
    s.last_token_at = Some(now);
    s.generated.push(choice.token);
    m::generation_tokens(1);
    let end_token = tok.stop_ids.contains(&choice.token);
    let is_eos = end_token && !s.job.req.ignore_eos;
    let mut text = String::new();
    let mut stopped = is_eos;
    if !is_eos {
        // an end token generated under ignore_eos adds no text (as a
        // special token in vLLM's default detokenisation)
        let bytes = match tok.special_text(choice.token) {
            _ if end_token => &[][..],
            // a call's tag as a control token (no text of its own): the
            // call reader still needs to see it
            Some(t) if s.calls.is_some() && (t == CALL_OPEN || t == CALL_CLOSE) => t.as_bytes(),
            _ => tok.token_bytes(choice.token),
        };
        let piece = s.decoder.push(bytes);
        let (out, hit) = s.stop.push(&piece);
        text = out;
        stopped = hit || complete;
    }
    let length = !stopped && s.generated.len() >= s.job.max_tokens;
    if length || is_eos || complete {
        // the end: what the decoder and the stop matcher still hold is
        // text of the answer (a partial stop sequence that never
        // completed, the last sentence the repeat guard was watching)
        let (out, hit) = s.stop.push(&s.decoder.finish());
        text.push_str(&out);
        if !hit {
            text.push_str(&s.stop.finish());
        }
    }
    let logprobs = if want_lp {
        vec![TokenLogprob {
            token: choice.token,
            text: tok.token_text(choice.token),
            logprob: choice.logprob.unwrap_or(0.0),
            top: choice
                .top
                .iter()
                .map(|&(t, lp)| (t, tok.token_text(t), lp))
                .collect(),
        }]
    } else {
        Vec::new()
    };
    let mut tool_calls = Vec::new();
    if let Some(c) = s.calls.as_mut() {
        let mut parsed = c.push(&text);
        if stopped || length {
            let rest = c.finish();
            parsed.text.push_str(&rest.text);
        }
        text = parsed.text;
        tool_calls = parsed.calls;
    }
    let delta = Event::Delta {
        tool_calls,
        text,
        token_ids: if is_eos {
            Vec::new()
        } else {
            vec![choice.token]
        },
        logprobs,
    };
    let _ = s.job.tx.send(delta);
    s.next = Some(choice.token);
    if stopped || length {
        let finish = if length {
            FinishReason::Length
        } else if s.calls.as_ref().is_some_and(|c| c.calls() > 0) {
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        };
        let _ = s.job.tx.send(Event::Done {
            finish,
            cached_tokens: s.cached,
            prompt_tokens: s.job.prompt.len(),
            completion_tokens: s.generated.len(),
        });
        m::finished(s.job.arrived.elapsed(), s.job.prompt.len(), finish);
        if let Some(first) = s.first_token_at {
            crate::trace::timing(&s.job.span, "done", "ragmesh.decode_s", first.elapsed());
        }
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_spreads_the_queue_over_the_slots() {
        let s = Shared::new(4, 1024, "m".into());
        // nothing finished yet: the floor
        assert_eq!(s.retry_after(), Duration::from_secs(1));
        s.record_service(Duration::from_secs(6));
        // 1 ahead (the refused one) over 4 slots: one round of 6 s
        assert_eq!(s.retry_after(), Duration::from_secs(6));
        s.waiting.store(11, Ordering::Release);
        // 12 over 4 slots: three rounds
        assert_eq!(s.retry_after(), Duration::from_secs(18));
        s.waiting.store(1000, Ordering::Release);
        assert_eq!(s.retry_after(), Duration::from_secs(60));
        // the mean moves by 1/16 of a new sample
        s.record_service(Duration::from_secs(22));
        assert_eq!(s.mean_service_us.load(Ordering::Acquire), 7_000_000);
    }
}
