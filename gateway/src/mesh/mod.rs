//! The gateway as the front pod of the mesh: gRPC clients of the
//! embedder, retriever and llm-runner services, each balanced over the
//! replicas its endpoints name ([`pool`]). Selected per stage by
//! `--embedder-endpoints`, `--retriever-endpoints` and
//! `--runner-endpoints` (or `[[model]] runners`); a stage without
//! endpoints runs in-process.

pub mod embedder;
pub mod objects;
pub mod pool;
pub mod retriever;
pub mod runner;

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

pub use pool::{Pool, PoolConfig};

/// Calls `f` (through the pool's retries) until it succeeds or `wait`
/// has passed, so a gateway may start before the pods it calls.
pub async fn wait_for<T, F, Fut>(pool: &Pool, wait: Duration, f: F) -> anyhow::Result<T>
where
    F: Fn(Channel) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + wait;
    let mut logged = false;
    loop {
        match pool.call(&f).await {
            Ok(v) => return Ok(v),
            Err(s) if Instant::now() >= deadline => anyhow::bail!(
                "{}: no replica answered within {} s: {}",
                pool.service,
                wait.as_secs(),
                s.message()
            ),
            Err(s) => {
                if !logged {
                    tracing::info!(service = pool.service, error = %s.message(), "waiting for replicas");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
