//! Readiness and graceful drain, one state machine for every binary:
//!
//! `Loading` → `Ready` → (SIGTERM/SIGINT) `Draining` → `Deadline`.
//!
//! - `GET /ready` is 200 only in `Ready`: Kubernetes sends no traffic to a
//!   pod that is still loading its model or already draining. `/health`
//!   (liveness) stays 200 on the leaf services' HTTP port while they drain
//!   (it serves only `/health`, `/ready` and `/metrics`); the gateway's and
//!   the embedder's HTTP port is their API, which stops accepting with the
//!   rest (the kubelet stops liveness probes of a pod being deleted).
//! - A signal during start-up (a model load, waiting for replicas) ends the
//!   process there, as the signal's default action did before.
//! - On the first signal the servers stop accepting (their shutdown
//!   future is [`Lifecycle::draining`]) and gRPC health turns NOT_SERVING;
//!   in-flight requests and streams go on.
//! - `--shutdown-grace-s` later the phase becomes `Deadline`: streams still
//!   running end themselves cleanly (the gateway's SSE sends an error event
//!   and `[DONE]`), and the binary returns, exiting 0. Kubernetes'
//!   `terminationGracePeriodSeconds` must exceed the grace.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// The flag every binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    /// Seconds in-flight requests and streams get to finish after SIGTERM
    /// (the process stops being ready and accepting at once); then the
    /// process exits 0, ending what still runs.
    #[arg(long, env = "RAGMESH_SHUTDOWN_GRACE_S", default_value_t = 30)]
    pub shutdown_grace_s: u64,
}

impl DrainArgs {
    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle::new(Duration::from_secs(self.shutdown_grace_s))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Loading,
    Ready,
    Draining,
    Deadline,
}

#[derive(Debug, Clone)]
pub struct Lifecycle {
    tx: Arc<watch::Sender<Phase>>,
    grace: Duration,
}

impl Lifecycle {
    pub fn new(grace: Duration) -> Self {
        Self {
            tx: Arc::new(watch::channel(Phase::Loading).0),
            grace,
        }
    }

    pub fn phase(&self) -> Phase {
        *self.tx.borrow()
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Loaded and serving: `/ready` turns 200 (a drain already begun wins).
    pub fn set_ready(&self) {
        self.tx.send_if_modified(|p| {
            let was = *p == Phase::Loading;
            if was {
                *p = Phase::Ready;
            }
            was
        });
    }

    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Ready
    }

    pub fn is_draining(&self) -> bool {
        self.phase() >= Phase::Draining
    }

    /// Starts the drain (idempotent) and the grace clock. Needs a Tokio
    /// runtime.
    pub fn begin_drain(&self) {
        let started = self.tx.send_if_modified(|p| {
            let was = *p < Phase::Draining;
            if was {
                *p = Phase::Draining;
            }
            was
        });
        if started {
            tracing::info!(
                grace_s = self.grace.as_secs_f64(),
                "draining: not ready, accepting nothing new, finishing what runs"
            );
            let tx = self.tx.clone();
            let grace = self.grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                tx.send_replace(Phase::Deadline);
            });
        }
    }

    /// Drains on the first SIGTERM or SIGINT.
    pub fn drain_on_signals(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            crate::shutdown_signal().await;
            me.begin_drain();
        });
    }

    async fn reach(&self, phase: Phase) {
        let mut rx = self.tx.subscribe();
        // the sender lives as long as `self`, so this cannot fail
        let _ = rx.wait_for(|p| *p >= phase).await;
    }

    /// Resolves once the drain has begun: the servers' shutdown future.
    pub async fn draining(&self) {
        self.reach(Phase::Draining).await
    }

    /// Runs a start-up step (a model load, waiting for replicas) unless a
    /// drain begins first: `None` then, and the binary should return, as
    /// the signal's default action would have ended it.
    pub async fn unless_drained<T>(&self, step: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            out = step => Some(out),
            () = self.draining() => {
                tracing::info!("stopped during start-up");
                None
            }
        }
    }

    /// Resolves once the grace period after the drain began is over.
    pub async fn deadline(&self) {
        self.reach(Phase::Deadline).await
    }

    /// Runs `servers` (which stop accepting when [`Self::draining`]
    /// resolves and return once their connections are done) until they
    /// return or `linger` after the grace deadline, whichever comes first.
    /// (`linger` lets streams that end themselves at the deadline send
    /// their last words.)
    pub async fn serve_until_drained<T>(
        &self,
        servers: impl Future<Output = T>,
        linger: Duration,
    ) -> Option<T> {
        let cut = async {
            self.deadline().await;
            tokio::time::sleep(linger).await;
        };
        tokio::select! {
            out = servers => Some(out),
            () = cut => {
                tracing::warn!("grace period over with work still running: ending it");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_advance_once_and_in_order() {
        let lc = Lifecycle::new(Duration::from_millis(200));
        assert_eq!(lc.phase(), Phase::Loading);
        assert!(!lc.is_ready());
        lc.set_ready();
        assert!(lc.is_ready());
        lc.begin_drain();
        assert!(!lc.is_ready() && lc.is_draining());
        lc.set_ready(); // a late "loaded" does not undo a drain
        assert_eq!(lc.phase(), Phase::Draining);
        lc.begin_drain(); // idempotent: the clock is not restarted
        let t = std::time::Instant::now();
        lc.deadline().await;
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(lc.phase(), Phase::Deadline);
    }

    #[tokio::test]
    async fn servers_that_finish_in_time_return_their_result() {
        let lc = Lifecycle::new(Duration::from_millis(50));
        lc.begin_drain();
        let quick = lc.serve_until_drained(async { 7 }, Duration::ZERO).await;
        assert_eq!(quick, Some(7));
        let stuck = lc
            .serve_until_drained(std::future::pending::<()>(), Duration::ZERO)
            .await;
        assert_eq!(stuck, None);
    }
}
