//! A pool of replicas of one gRPC service: where the gateway's remote
//! stages send their calls.
//!
//! - **Discovery**: a static list (`http://host:port`, comma-separated) or
//!   one `dns://host:port` name, re-resolved every `resolve_every` so a
//!   Kubernetes headless Service's pods come and go without a restart.
//!   Replicas keep their channel (one HTTP/2 connection) across
//!   re-resolution; a vanished address is dropped.
//! - **Balancing**: least outstanding requests. A replica's score is the
//!   larger of this gateway's calls in flight to it and the load it last
//!   reported (`Load`: waiting + running, polled every `probe_every`), so
//!   other gateways' traffic counts too; ties rotate.
//! - **Failures**: a call that fails before anything reached the caller
//!   (UNAVAILABLE: connection refused or reset; RESOURCE_EXHAUSTED: the
//!   replica's queue is full) is retried on another replica, and an
//!   unreachable replica is skipped for a backoff (250 ms doubling to
//!   5 s) until a probe or a call succeeds again. When every replica is
//!   down the least recently failed one is still tried, so recovery never
//!   waits for the probe.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ragmesh_telemetry::otel::genai;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::Instrument;

/// Distinct replicas one call may try.
const MAX_ATTEMPTS: usize = 3;

/// Reports a replica's load (`Some((waiting + running, slots))`, slots 0
/// when unknown) or just that it answers (`None`).
pub type Probe = Arc<
    dyn Fn(Channel) -> BoxFuture<'static, Result<Option<(usize, usize)>, Status>> + Send + Sync,
>;

#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Service name for logs and errors ("llm-runner").
    pub service: &'static str,
    /// How a call that carries a routing key picks its replica.
    pub routing: Routing,
    pub targets: Vec<String>,
    pub connect_timeout: Duration,
    pub resolve_every: Duration,
    pub probe_every: Duration,
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Static(Vec<String>),
    Dns { host: String, port: u16 },
}

/// Checks an endpoint list (`--check-config` uses it without connecting).
pub fn check_targets(service: &str, targets: &[String]) -> anyhow::Result<()> {
    parse_targets(service, targets).map(|_| ())
}

fn parse_targets(service: &str, targets: &[String]) -> anyhow::Result<Source> {
    let targets: Vec<&str> = targets
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect();
    anyhow::ensure!(!targets.is_empty(), "{service}: no endpoints given");
    if let Some(dns) = targets.iter().find(|t| t.starts_with("dns:")) {
        anyhow::ensure!(
            targets.len() == 1,
            "{service}: a dns: name cannot be mixed with other endpoints"
        );
        let rest = dns.trim_start_matches("dns:").trim_start_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("{service}: '{dns}' needs a port (dns://host:port)"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow::anyhow!("{service}: '{dns}' has a bad port"))?;
        anyhow::ensure!(!host.is_empty(), "{service}: '{dns}' has no host name");
        return Ok(Source::Dns {
            host: host.into(),
            port,
        });
    }
    let mut out = Vec::new();
    for t in targets {
        let addr = t.strip_prefix("http://").unwrap_or(t).trim_end_matches('/');
        anyhow::ensure!(
            !addr.contains("://"),
            "{service}: endpoint '{t}' must be http://host:port or dns://host:port"
        );
        anyhow::ensure!(
            addr.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
            "{service}: endpoint '{t}' needs a port"
        );
        if !out.iter().any(|a| a == addr) {
            out.push(addr.to_owned());
        }
    }
    Ok(Source::Static(out))
}

pub struct Replica {
    pub addr: String,
    pub channel: Channel,
    outstanding: AtomicUsize,
    reported: AtomicUsize,
    /// Sequences it runs at once (its `Load.max_sequences`; 0: unknown).
    slots: AtomicUsize,
    failures: AtomicU32,
    /// Milliseconds since the pool's epoch; 0: up.
    down_until: AtomicU64,
    failed_at: AtomicU64,
}

/// A call in flight on a replica; counts towards its score until dropped.
pub struct InFlight(Arc<Replica>);

impl InFlight {
    pub fn replica(&self) -> &Arc<Replica> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

pub struct Pool {
    pub service: &'static str,
    pub routing: Routing,
    source: Source,
    connect_timeout: Duration,
    replicas: RwLock<Arc<Vec<Arc<Replica>>>>,
    next: AtomicUsize,
    epoch: Instant,
}

impl Pool {
    /// Resolves the targets once and starts the background re-resolve and
    /// probe task (it ends when the pool is dropped).
    pub async fn start(cfg: PoolConfig, probe: Probe) -> anyhow::Result<Arc<Self>> {
        let pool = Arc::new(Self {
            service: cfg.service,
            routing: cfg.routing,
            source: parse_targets(cfg.service, &cfg.targets)?,
            connect_timeout: cfg.connect_timeout,
            replicas: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        });
        pool.resolve().await;
        tokio::spawn(maintain(
            Arc::downgrade(&pool),
            probe,
            cfg.resolve_every,
            cfg.probe_every,
        ));
        Ok(pool)
    }

    pub fn replicas(&self) -> Arc<Vec<Arc<Replica>>> {
        match self.replicas.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    async fn resolve(&self) {
        let addrs = match &self.source {
            Source::Static(a) => a.clone(),
            Source::Dns { host, port } => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(it) => {
                        let mut v: Vec<String> = it.map(|a| a.to_string()).collect();
                        v.sort();
                        v.dedup();
                        v
                    }
                    Err(e) => {
                        // keep the last good set: a DNS hiccup must not
                        // empty the pool
                        tracing::warn!(service = self.service, %host, error = %e, "DNS resolution failed");
                        return;
                    }
                }
            }
        };
        let old = self.replicas();
        let mut next = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if let Some(r) = old.iter().find(|r| r.addr == addr) {
                next.push(r.clone());
                continue;
            }
            let ep = match Endpoint::from_shared(format!("http://{addr}")) {
                Ok(ep) => ep,
                Err(e) => {
                    tracing::warn!(service = self.service, %addr, error = %e, "bad endpoint");
                    continue;
                }
            };
            let channel = ep
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_while_idle(true)
                .connect_lazy();
            tracing::info!(service = self.service, %addr, "replica added");
            next.push(Arc::new(Replica {
                addr,
                channel,
                outstanding: AtomicUsize::new(0),
                reported: AtomicUsize::new(0),
                slots: AtomicUsize::new(0),
                failures: AtomicU32::new(0),
                down_until: AtomicU64::new(0),
                failed_at: AtomicU64::new(0),
            }));
        }
        for r in old.iter() {
            if !next.iter().any(|n| n.addr == r.addr) {
                tracing::info!(service = self.service, addr = %r.addr, "replica removed");
            }
        }
        match self.replicas.write() {
            Ok(mut g) => *g = Arc::new(next),
            Err(p) => *p.into_inner() = Arc::new(next),
        }
    }

    /// The replica for a call: with a routing `key`, the first replica
    /// of the key's rendezvous order whose load is within the bound (see
    /// [`Routing`]); else, or when none is, the least loaded replica not
    /// in `tried`, preferring those up.
    pub fn pick(&self, tried: &[String], key: Option<u64>) -> Option<InFlight> {
        let reps = self.replicas();
        let n = reps.len();
        if n == 0 {
            return None;
        }
        let now = self.now_ms();
        if let Some(key) = key
            && let Some(r) = self.by_key(&reps, tried, key, now)
        {
            r.outstanding.fetch_add(1, Relaxed);
            return Some(InFlight(r.clone()));
        }
        let start = self.next.fetch_add(1, Relaxed);
        // (down, score or failure time, replica)
        let mut best: Option<((bool, u64), &Arc<Replica>)> = None;
        for i in 0..n {
            let r = &reps[(start + i) % n];
            if tried.contains(&r.addr) {
                continue;
            }
            let down = r.down_until.load(Relaxed) > now;
            let score = if down {
                r.failed_at.load(Relaxed)
            } else {
                r.outstanding.load(Relaxed).max(r.reported.load(Relaxed)) as u64
            };
            if best.as_ref().is_none_or(|(k, _)| (down, score) < *k) {
                best = Some(((down, score), r));
            }
        }
        best.map(|(_, r)| {
            r.outstanding.fetch_add(1, Relaxed);
            InFlight(r.clone())
        })
    }

    /// Consistent hashing with bounded loads: replicas ranked by
    /// `hash(key, address)` (rendezvous hashing: a replica joining or
    /// leaving moves only its own keys), the first whose load is at most
    /// `⌈(total + 1) × 1.25 / replicas up⌉`, so one hot prefix spills to
    /// the next replica of its order instead of queueing on one.
    fn by_key<'a>(
        &self,
        reps: &'a [Arc<Replica>],
        tried: &[String],
        key: u64,
        now: u64,
    ) -> Option<&'a Arc<Replica>> {
        let load = |r: &Replica| r.outstanding.load(Relaxed).max(r.reported.load(Relaxed));
        let up: Vec<&Arc<Replica>> = reps
            .iter()
            .filter(|r| r.down_until.load(Relaxed) <= now && !tried.contains(&r.addr))
            .collect();
        if up.is_empty() {
            return None;
        }
        let total: usize = up.iter().map(|r| load(r)).sum();
        let bound = ((total + 1) as f64 * LOAD_FACTOR / up.len() as f64).ceil() as usize;
        // a replica whose batch is full would queue the call while another
        // may still have a free slot: skip it unless all are full
        let full = |r: &Replica| {
            let s = r.slots.load(Relaxed);
            s > 0 && load(r) >= s
        };
        let room = up.iter().any(|r| !full(r));
        let mut ranked: Vec<(u64, &Arc<Replica>)> = up
            .into_iter()
            .map(|r| (rendezvous(key, &r.addr), r))
            .collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
        ranked
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| load(r) < bound.max(1) && !(room && full(r)))
    }

    pub fn mark_failed(&self, r: &Replica, why: &Status) {
        let n = r.failures.fetch_add(1, Relaxed) + 1;
        let backoff = (250u64 << (n - 1).min(5)).min(5_000);
        let now = self.now_ms();
        r.failed_at.store(now, Relaxed);
        r.down_until.store(now + backoff, Relaxed);
        if n == 1 {
            tracing::warn!(service = self.service, addr = %r.addr, error = %why.message(), "replica unreachable");
        }
    }

    pub fn mark_ok(&self, r: &Replica) {
        if r.failures.swap(0, Relaxed) > 0 {
            tracing::info!(service = self.service, addr = %r.addr, "replica reachable again");
        }
        r.down_until.store(0, Relaxed);
    }

    /// The error when no replica could take a call.
    pub fn exhausted(&self, tried: &[String], last: Option<Status>) -> Status {
        let mut s = match last {
            Some(s) if s.code() == Code::ResourceExhausted => return s,
            Some(s) => Status::unavailable(format!(
                "no {} replica reachable (tried {}): {}",
                self.service,
                tried.join(", "),
                s.message()
            )),
            None => Status::unavailable(format!("no {} replica is known", self.service)),
        };
        let secs = self.retry_after().as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = secs.to_string().parse() {
            s.metadata_mut().insert("retry-after", v);
        }
        s
    }

    /// Until the first replica's backoff ends (1 s when none is backing
    /// off or none is known: discovery re-resolves within seconds).
    pub fn retry_after(&self) -> Duration {
        let now = self.now_ms();
        self.replicas()
            .iter()
            .map(|r| r.down_until.load(Relaxed))
            .filter(|&u| u > now)
            .min()
            .map_or(Duration::from_secs(1), |u| Duration::from_millis(u - now))
    }

    /// A unary call, retried on other replicas while it fails without
    /// having been served (see the module docs).
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_held(f).await.map(|(v, _)| v)
    }

    /// As [`Pool::call`], and also hands back the replica's in-flight slot,
    /// for a call whose stream goes on after `f` returns (a generation:
    /// `f` waits for the first delta, and the slot counts until the stream
    /// ends).
    pub async fn call_held<T, F, Fut>(&self, f: F) -> Result<(T, InFlight), Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_routed(None, f).await
    }

    /// As [`Pool::call_held`], routed by `key` when the pool routes by
    /// keys (a retry moves on to the next replica of the key's order).
    pub async fn call_routed<T, F, Fut>(
        &self,
        key: Option<u64>,
        mut f: F,
    ) -> Result<(T, InFlight), Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let key = key.filter(|_| self.routing != Routing::LeastOutstanding);
        let mut tried = Vec::new();
        let mut last = None;
        while tried.len() < MAX_ATTEMPTS {
            let Some(slot) = self.pick(&tried, key) else {
                break;
            };
            let r = slot.replica().clone();
            // one client span per attempt: the replica's server span is
            // its child (the channel's interceptor sends `traceparent`)
            let span = tracing::info_span!(
                "rpc",
                otel.name = %format!("{} call", self.service),
                otel.kind = "client",
            );
            genai::set(&span, "rpc.system", "grpc");
            genai::server(&span, &r.addr);
            genai::set(&span, "ragmesh.attempt", tried.len() as i64);
            let out = f(r.channel.clone()).instrument(span.clone()).await;
            if let Err(s) = &out {
                genai::error(&span, genai::grpc_code(s.code()));
            }
            match out {
                Ok(v) => {
                    self.mark_ok(&r);
                    if !tried.is_empty() {
                        tracing::info!(service = self.service, addr = %r.addr, retries = tried.len(), "call moved to another replica");
                        metrics::counter!(crate::metrics::RETRIES, "stage" => self.service)
                            .increment(tried.len() as u64);
                    }
                    return Ok((v, slot));
                }
                Err(s) if retry_elsewhere(&s) => {
                    if s.code() == Code::Unavailable {
                        self.mark_failed(&r, &s);
                    }
                    tried.push(r.addr.clone());
                    last = Some(s);
                }
                Err(s) => return Err(s),
            }
        }
        Err(self.exhausted(&tried, last))
    }
}

/// How a runner pool picks the replica of a generation (`routing` of a
/// `[[model]]` table, `--runner-routing` for `--runner-endpoints`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// The replica with the fewest calls in flight (or reported running).
    #[default]
    LeastOutstanding,
    /// By a hash of the conversation's first turns, so requests sharing a
    /// prefix meet the replica whose prefix cache holds it (bounded load).
    Prefix,
    /// By the session key (`x-session-id`, else the body's
    /// `safety_identifier` or `user`), so a conversation stays on one
    /// replica; requests without one go by least outstanding.
    Session,
}

/// A keyed replica may hold this much more than the mean load before its
/// keys spill to the next replica of their order.
const LOAD_FACTOR: f64 = 1.25;

/// The rendezvous weight of `addr` for `key`.
fn rendezvous(key: u64, addr: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    addr.hash(&mut h);
    h.finish()
}

/// Failures that prove the call was not served, so another replica may
/// take it.
fn retry_elsewhere(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::ResourceExhausted)
}

async fn maintain(pool: Weak<Pool>, probe: Probe, resolve_every: Duration, probe_every: Duration) {
    let mut last_resolve = Instant::now();
    loop {
        tokio::time::sleep(probe_every).await;
        let Some(pool) = pool.upgrade() else { return };
        if matches!(pool.source, Source::Dns { .. }) && last_resolve.elapsed() >= resolve_every {
            pool.resolve().await;
            last_resolve = Instant::now();
        }
        let reps = pool.replicas();
        let checks = reps.iter().map(|r| {
            let probe = probe.clone();
            let channel = r.channel.clone();
            async move {
                tokio::time::timeout(probe_every.max(Duration::from_millis(500)), probe(channel))
                    .await
                    .unwrap_or_else(|_| Err(Status::unavailable("probe timed out")))
            }
        });
        let results = futures::future::join_all(checks).await;
        for (r, res) in reps.iter().zip(results) {
            match res {
                Ok(load) => {
                    let (load, slots) = load.unwrap_or((0, 0));
                    r.reported.store(load, Relaxed);
                    r.slots.store(slots, Relaxed);
                    pool.mark_ok(r);
                }
                Err(s) => pool.mark_failed(r, &s),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_targets("x", &s(&["http://a:1", "b:2", "a:1"])).ok(),
            Some(Source::Static(s(&["a:1", "b:2"])))
        );
        for dns in ["dns://runner.ns.svc:50053", "dns:///runner.ns.svc:50053"] {
            assert_eq!(
                parse_targets("x", &s(&[dns])).ok(),
                Some(Source::Dns {
                    host: "runner.ns.svc".into(),
                    port: 50053
                })
            );
        }
        for bad in [
            vec![],
            s(&["a"]),
            s(&["https://a:1"]),
            s(&["dns://a"]),
            s(&["dns://a:1", "b:2"]),
        ] {
            assert!(parse_targets("x", &bad).is_err(), "{bad:?}");
        }
    }

    fn probe_none() -> Probe {
        Arc::new(|_| Box::pin(async { Ok(None) }))
    }

    #[tokio::test]
    async fn least_outstanding_and_down_replicas_last() {
        let pool = Pool::start(
            PoolConfig {
                service: "t",
                routing: Routing::Prefix,
                targets: s(&["127.0.0.1:1", "127.0.0.1:2"]),
                connect_timeout: Duration::from_millis(100),
                resolve_every: Duration::from_secs(60),
                probe_every: Duration::from_secs(60),
            },
            probe_none(),
        )
        .await
        .map_err(|e| e.to_string());
        let Ok(pool) = pool else {
            panic!("{pool:?}", pool = pool.err())
        };
        let a = pool.pick(&[], None).map(|g| g.replica().addr.clone());
        let held = pool.pick(&[], None);
        // with one call in flight on each, the next pick balances again
        let b = held.as_ref().map(|g| g.replica().addr.clone());
        assert_ne!(a, b, "second pick goes to the idle replica");
        let other = held.as_ref().map(|g| g.replica().clone());
        // the replica holding a call is not picked while the other is idle
        for _ in 0..4 {
            let g = pool.pick(&[], None);
            assert_ne!(g.map(|g| g.replica().addr.clone()), b);
        }
        drop(held);
        // a failed replica is avoided even when it is idle
        if let Some(r) = other {
            pool.mark_failed(&r, &Status::unavailable("x"));
            for _ in 0..4 {
                let g = pool.pick(&[], None);
                assert_ne!(g.map(|g| g.replica().addr.clone()), Some(r.addr.clone()));
            }
            // ... but still tried when it is all that is left
            let only = pool.pick(&[a.clone().unwrap_or_default()], None);
            assert_eq!(only.map(|g| g.replica().addr.clone()), Some(r.addr.clone()));
        }
    }

    #[tokio::test]
    async fn keys_stick_to_a_replica_within_the_load_bound() {
        let pool = Pool::start(
            PoolConfig {
                service: "t",
                routing: Routing::Prefix,
                targets: s(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]),
                connect_timeout: Duration::from_millis(100),
                resolve_every: Duration::from_secs(60),
                probe_every: Duration::from_secs(60),
            },
            probe_none(),
        )
        .await
        .map_err(|e| e.to_string());
        let Ok(pool) = pool else {
            panic!("{pool:?}", pool = pool.err())
        };
        let addr = |g: Option<InFlight>| g.map(|g| g.replica().addr.clone());
        // idle: a key always meets the same replica
        let home = addr(pool.pick(&[], Some(42)));
        for _ in 0..5 {
            assert_eq!(addr(pool.pick(&[], Some(42))), home);
        }
        // keys spread over the replicas
        let homes: std::collections::HashSet<_> =
            (0..64u64).map(|k| addr(pool.pick(&[], Some(k)))).collect();
        assert_eq!(homes.len(), 3, "{homes:?}");
        // a hot key: held calls spill past the bound instead of piling up
        let held: Vec<InFlight> = (0..9).filter_map(|_| pool.pick(&[], Some(42))).collect();
        let mut per: std::collections::HashMap<String, usize> = Default::default();
        for g in &held {
            *per.entry(g.replica().addr.clone()).or_default() += 1;
        }
        assert!(per.values().all(|&n| n <= 4), "{per:?}");
        // the key's own replica still holds the most
        assert_eq!(
            per.get(home.as_deref().unwrap_or_default()).copied(),
            per.values().max().copied()
        );
        drop(held);
        // replicas that run 2 sequences at once: a key's replica with a
        // full batch is skipped while another has a free slot
        for r in pool.replicas().iter() {
            r.slots.store(2, Relaxed);
        }
        let held: Vec<InFlight> = (0..6).filter_map(|_| pool.pick(&[], Some(42))).collect();
        let mut per: std::collections::HashMap<String, usize> = Default::default();
        for g in &held {
            *per.entry(g.replica().addr.clone()).or_default() += 1;
        }
        assert!(per.len() == 3 && per.values().all(|&n| n == 2), "{per:?}");
        drop(held);
        // a replica already tried is skipped: the key's next replica
        let tried = [home.clone().unwrap_or_default()];
        let next = addr(pool.pick(&tried, Some(42)));
        assert!(next.is_some() && next != home);
    }
}
