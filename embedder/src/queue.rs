//! The dynamic-batching queue: requests wait here, a single compute thread
//! drains everything that is waiting (up to the token budget), runs the
//! forwards the batch policy plans, and answers each request.
//!
//! One thread owns the model, so candle's own thread pool gets the whole
//! machine for each GEMM instead of several forwards competing for cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::batch::{BatchPolicy, split_by_tokens};
use crate::bert::to_rows;
use crate::error::{EmbedError, Result};
use crate::metrics as m;
use crate::model::LoadedModel;
use crate::pooling::l2_normalize;

/// One request's work: token ids per input, and where to send the vectors.
pub struct Job {
    pub seqs: Vec<Vec<u32>>,
    pub normalize: bool,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>>>,
    pub enqueued: Instant,
    pub tokens: usize,
}

#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::UnboundedSender<Job>,
    pub stats: Arc<QueueStats>,
}

/// Counters that prove batching happened (tests and `Info` read them).
#[derive(Debug, Default)]
pub struct QueueStats {
    pub forward_passes: AtomicU64,
    pub sequences: AtomicU64,
}

impl QueueHandle {
    pub fn send(&self, job: Job) -> Result<()> {
        metrics::gauge!(m::QUEUE_DEPTH).increment(1.0);
        self.tx.send(job).map_err(|_| {
            metrics::gauge!(m::QUEUE_DEPTH).decrement(1.0);
            EmbedError::Unavailable
        })
    }
}

/// Starts the compute thread; it ends when every `QueueHandle` is dropped.
pub fn spawn(model: Arc<LoadedModel>, policy: BatchPolicy) -> std::io::Result<QueueHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(QueueStats::default());
    let worker_stats = stats.clone();
    std::thread::Builder::new()
        .name("embedder-compute".into())
        .spawn(move || run(model, policy, rx, &worker_stats))?;
    Ok(QueueHandle { tx, stats })
}

fn run(
    model: Arc<LoadedModel>,
    policy: BatchPolicy,
    mut rx: mpsc::UnboundedReceiver<Job>,
    stats: &QueueStats,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut tokens = first.tokens;
        let mut jobs = vec![first];
        // Take whatever else is already waiting, up to one token budget.
        while tokens < policy.max_batch_tokens {
            match rx.try_recv() {
                Ok(job) => {
                    tokens += job.tokens;
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        metrics::gauge!(m::QUEUE_DEPTH).decrement(jobs.len() as f64);
        let now = Instant::now();
        for j in &jobs {
            metrics::histogram!(m::QUEUE_SECONDS).record((now - j.enqueued).as_secs_f64());
        }
        let results = embed_jobs(&model, &policy, &jobs, stats);
        match results {
            Ok(per_job) => {
                for (job, vecs) in jobs.into_iter().zip(per_job) {
                    let _ = job.reply.send(Ok(vecs)); // the caller may have gone
                }
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "embedding forward failed");
                for job in jobs {
                    let _ = job.reply.send(Err(EmbedError::Backend(msg.clone())));
                }
            }
        }
    }
}

/// Runs every sequence of `jobs` through the model, batch by batch, and
/// returns the pooled vectors grouped back per job.
fn embed_jobs(
    model: &LoadedModel,
    policy: &BatchPolicy,
    jobs: &[Job],
    stats: &QueueStats,
) -> Result<Vec<Vec<Vec<f32>>>> {
    // Flatten: (job index, sequence) in arrival order, skipping jobs whose
    // caller already went away.
    let mut flat: Vec<(usize, &[u32])> = Vec::new();
    for (ji, job) in jobs.iter().enumerate() {
        if job.reply.is_closed() {
            continue;
        }
        flat.extend(job.seqs.iter().map(|s| (ji, s.as_slice())));
    }
    let lens: Vec<usize> = flat.iter().map(|(_, s)| s.len()).collect();
    let mut out: Vec<Vec<Vec<f32>>> = jobs
        .iter()
        .map(|j| Vec::with_capacity(j.seqs.len()))
        .collect();
    let dims = model.dims;
    let workers = rayon::current_num_threads();
    for range in policy.plan(&lens) {
        metrics::histogram!(m::BATCH_SIZE).record(range.len() as f64);
        metrics::histogram!(m::BATCH_TOKENS)
            .record(lens[range.clone()].iter().sum::<usize>() as f64);
        stats.forward_passes.fetch_add(1, Ordering::Relaxed);
        stats
            .sequences
            .fetch_add(range.len() as u64, Ordering::Relaxed);
        let started = Instant::now();
        // The GEMMs (OpenBLAS) and candle's element-wise ops both run
        // on the calling thread, so the batch is split into one slice per
        // core and the slices run side by side.
        let parts = split_by_tokens(&lens[range.clone()], workers);
        // A batch smaller than the core count (one query, say) splits each
        // GEMM's rows across the idle cores instead.
        let blocks = if parts.len() < workers { workers } else { 1 };
        let rows: Vec<Vec<f32>> = parts
            .par_iter()
            .map(|part| {
                let seqs: Vec<&[u32]> = flat[range.start + part.start..range.start + part.end]
                    .iter()
                    .map(|(_, s)| *s)
                    .collect();
                to_rows(&model.bert.forward(&seqs, blocks)?)
            })
            .collect::<Result<_>>()?;
        metrics::histogram!(m::FORWARD_SECONDS).record(started.elapsed().as_secs_f64());
        let mut items = flat[range].iter();
        for (part, part_rows) in parts.iter().zip(&rows) {
            let mut off = 0;
            for (ji, seq) in items.by_ref().take(part.len()) {
                let n = seq.len() * dims;
                let mut v = Vec::with_capacity(dims);
                model.pooling.pool(&part_rows[off..off + n], dims, &mut v);
                off += n;
                if jobs[*ji].normalize {
                    l2_normalize(&mut v);
                }
                out[*ji].push(v);
            }
        }
    }
    Ok(out)
}
