//! The span processor between the tracer and the OTLP exporter: a bounded
//! queue and one exporting thread, so an unreachable or slow collector
//! costs a request nothing. The SDK's `BatchSpanProcessor` does the same
//! but keeps its drop count to itself; an operator needs it on `/metrics`:
//!
//! - `ragmesh_otel_spans_exported_total`
//! - `ragmesh_otel_spans_dropped_total{reason="queue_full"|"export_failed"|"exporter_stopped"}`
//!
//! `on_end` never blocks: a full queue drops the span and counts it. The
//! thread sends a batch once `max_batch` spans are queued (it is woken
//! once per batch, not per span) and what is left every `delay`, each
//! export bounded by `timeout`; a failed export drops
//! its batch (the exporter's own retries happen inside that bound) and
//! quiets the exporter for a while (backing off to 30 s), so a collector
//! that is down costs no CPU. Sizes follow the standard `OTEL_BSP_*`
//! variables.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

pub const EXPORTED: &str = "ragmesh_otel_spans_exported_total";
pub const DROPPED: &str = "ragmesh_otel_spans_dropped_total";

/// Help texts, once the Prometheus recorder is installed.
pub fn describe() {
    metrics::describe_counter!(EXPORTED, "Spans sent to the OTLP collector");
    metrics::describe_counter!(
        DROPPED,
        "Spans dropped: the export queue was full, or their export failed or timed out"
    );
}

/// The largest span queue `OTEL_BSP_MAX_QUEUE_SIZE` may ask for.
const MAX_QUEUE: u64 = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub queue: usize,
    pub max_batch: usize,
    pub delay: Duration,
    pub timeout: Duration,
}

impl Sizes {
    /// `OTEL_BSP_MAX_QUEUE_SIZE` (2048), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
    /// (64, not the specification's 512: a batch is encoded and sent in
    /// one go on a core the requests share, and 512 spans at a time put
    /// +0.5 ms on the proxy path's p99 on two cores, 64 about +0.1 ms;
    /// docs/benchmarks.md, "Tracing"), `OTEL_BSP_SCHEDULE_DELAY` (ms, 5000),
    /// `OTEL_BSP_EXPORT_TIMEOUT` (ms, 30000): the specification's defaults.
    pub fn from_env() -> Self {
        let num = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(d)
        };
        // bounded: the queue is allocated up front
        let queue = num("OTEL_BSP_MAX_QUEUE_SIZE", 2048).min(MAX_QUEUE) as usize;
        Self {
            queue,
            max_batch: (num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 64) as usize).min(queue),
            delay: Duration::from_millis(num("OTEL_BSP_SCHEDULE_DELAY", 5000)),
            timeout: Duration::from_millis(num("OTEL_BSP_EXPORT_TIMEOUT", 30_000)),
        }
    }
}

/// Flush requests carry where to say "done".
type Ack = std::sync::mpsc::Sender<()>;

/// What the tracer and the export thread share beside the span channel.
/// The export thread never waits on the channel itself: it is woken once
/// a batch is full (`full`), not per span (a wake-up per span is a futex
/// call on the request's thread and a context switch on a core the
/// requests share), and otherwise every `delay`.
#[derive(Debug, Default)]
struct Shared {
    full: tokio::sync::Notify,
    pushed: AtomicUsize,
}

#[derive(Debug)]
pub struct BoundedBatch {
    spans: mpsc::Sender<SpanData>,
    shared: Arc<Shared>,
    sizes: Sizes,
    flush: mpsc::UnboundedSender<Ack>,
}

impl BoundedBatch {
    /// Starts the exporting thread; `make` builds the exporter on it (the
    /// tonic and HTTP exporters need its Tokio runtime). An exporter that
    /// cannot be built is an error here, at start-up.
    pub fn start<E, F>(sizes: Sizes, make: F) -> Result<Self, String>
    where
        E: SpanExporter + 'static,
        F: FnOnce() -> Result<E, String> + Send + 'static,
    {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel(sizes.queue);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("otel-export".into())
            .spawn(move || {
                background_priority();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async {
                    let exporter = match make() {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    // (the span channel closes with it: later spans count
                    // as `exporter_stopped`)
                    run(exporter, sizes, rx, &sh.full, ctl_rx).await;
                });
            })
            .map_err(|e| format!("cannot start the export thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                spans: tx,
                shared,
                sizes,
                flush: ctl_tx,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the export thread ended at start".into()),
        }
    }

    /// Exports what is queued now; waits at most `timeout` for it.
    fn flush_within(&self, timeout: Duration) -> OTelSdkResult {
        let (tx, rx) = std::sync::mpsc::channel();
        self.flush
            .send(tx)
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        rx.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

/// Lowers this thread's scheduling priority (nice 10): encoding and
/// sending spans is background work, and on a busy node the request path
/// should get the CPU first (a span waits in the bounded queue meanwhile).
/// Raising one's own nice value needs no privilege; failing is harmless.
fn background_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), 10) {
            tracing::debug!(error = %e, "could not lower the export thread's priority");
        }
    }
}

async fn run(
    exporter: impl SpanExporter,
    sizes: Sizes,
    mut spans: mpsc::Receiver<SpanData>,
    full: &tokio::sync::Notify,
    mut control: mpsc::UnboundedReceiver<Ack>,
) {
    let mut out = Sender {
        exporter,
        timeout: sizes.timeout,
        backoff: Duration::ZERO,
        quiet_until: None,
    };
    let mut tick = tokio::time::interval(sizes.delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `all`: everything queued (a tick, a flush); else full batches only
        let (all, ack) = tokio::select! {
            biased;
            msg = control.recv() => match msg {
                Some(ack) => (true, Some(ack)),
                None => break,
            },
            () = full.notified() => (false, None),
            _ = tick.tick() => (true, None),
        };
        // what is queued now, not what keeps arriving meanwhile
        let mut left = spans.len();
        while left > 0 && (all || left >= sizes.max_batch) {
            let n = sizes.max_batch.min(left);
            let mut batch = Vec::with_capacity(n);
            while batch.len() < n {
                match spans.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            left = left.saturating_sub(n);
            out.send(&mut batch).await;
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }
}

/// The exporter's side of the thread: sends batches, and after a failed
/// export stops trying for a while (1 s, doubling to 30 s; reset by a
/// success), so a collector that is down costs neither CPU nor
/// connection attempts; batches due meanwhile are dropped and counted.
struct Sender<E> {
    exporter: E,
    timeout: Duration,
    backoff: Duration,
    quiet_until: Option<tokio::time::Instant>,
}

impl<E: SpanExporter> Sender<E> {
    async fn send(&mut self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let spans = std::mem::take(batch);
        if self
            .quiet_until
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            metrics::counter!(DROPPED, "reason" => "export_failed").increment(n);
            return;
        }
        let out = tokio::time::timeout(self.timeout, self.exporter.export(spans)).await;
        let failure = match out {
            Ok(Ok(())) => {
                metrics::counter!(EXPORTED).increment(n);
                self.backoff = Duration::ZERO;
                self.quiet_until = None;
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        metrics::counter!(DROPPED, "reason" => "export_failed").increment(n);
        self.backoff = (self.backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        self.quiet_until = Some(tokio::time::Instant::now() + self.backoff);
        tracing::debug!(target: "otel_export", spans = n, retry_in_s = self.backoff.as_secs(), "span export failed: {failure}");
    }
}

impl SpanProcessor for BoundedBatch {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.spans.try_send(span) {
            Ok(()) => {
                let n = self.shared.pushed.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(self.sizes.max_batch) {
                    self.shared.full.notify_one();
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!(DROPPED, "reason" => "queue_full").increment(1);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::counter!(DROPPED, "reason" => "exporter_stopped").increment(1);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush_within(Duration::from_secs(5))
    }

    /// Flushes; the thread itself ends with the process (it holds no
    /// state worth more than that flush).
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.flush_within(timeout)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Nowhere;

    impl SpanExporter for Nowhere {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            Ok(())
        }
    }

    /// The nice value (field 19) of a `/proc/.../stat` file.
    fn nice_in(stat: &std::path::Path) -> Option<i64> {
        let stat = std::fs::read_to_string(stat).ok()?;
        // the fields after the command, which is in parentheses
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(16)?
            .parse()
            .ok()
    }

    /// The nice value of this process's thread named `name`.
    fn nice_of(name: &str) -> Option<i64> {
        std::fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .and_then(|t| nice_in(&t.path().join("stat")))
    }

    #[test]
    fn the_export_thread_runs_at_a_lower_priority() {
        let sizes = Sizes {
            queue: 8,
            max_batch: 4,
            delay: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        let own = nice_in(std::path::Path::new("/proc/self/stat")).unwrap_or(0);
        let batch = BoundedBatch::start(sizes, || Ok(Nowhere));
        assert!(batch.is_ok(), "{batch:?}");
        assert_eq!(nice_of("otel-export"), Some((own + 10).min(19)));
    }
}
