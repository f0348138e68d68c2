//! API keys, tenants and per-key limits.
//!
//! Keys are configured as SHA-256 hashes (`[[key]]` tables in the config
//! file) or as plain `tenant=key` pairs in `RAGMESH_API_KEYS` (hashed at
//! start-up, the plain text dropped). A request presents its key as
//! `Authorization: Bearer <key>` (what every OpenAI SDK sends) or
//! `api-key: <key>`. The presented key is hashed and compared with every
//! configured hash in constant time, without stopping at a match, so
//! timing tells nothing about which or how many bytes matched. Keys never
//! reach a log line: logs and metrics name the key by its `name`.
//!
//! Each key belongs to one tenant: its collections are the tenant's, and
//! another tenant's collection answers 404 exactly like a missing one.
//! With no key configured the gateway runs **open** (every caller is the
//! tenant `default`), and says so at start-up.
//!
//! Limits per key: a token bucket (`rate_per_minute`, refilled
//! continuously; `burst` requests at once, default a minute's worth) and a
//! cap on requests in flight (`max_concurrent`, held until a stream ends).
//! Past either: 429 with `Retry-After`. The key set is fixed at start-up,
//! so the buckets live in a plain vector indexed by key, no keyed limiter
//! is needed.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::state::{AppState, DEFAULT_TENANT};

/// One `[[key]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Names the key in logs and metrics.
    pub name: String,
    pub tenant: String,
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    pub rate_per_minute: Option<u32>,
    pub burst: Option<u32>,
    pub max_concurrent: Option<u32>,
}

/// Who is calling: inserted into every `/v1` request by [`middleware`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Arc<str>,
    /// The key's name (`None` in open mode).
    pub key: Option<Arc<str>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Entry {
    name: Arc<str>,
    tenant: Arc<str>,
    hash: [u8; 32],
    /// (per second, capacity, state)
    rate: Option<(f64, f64, Mutex<Bucket>)>,
    in_flight: Option<Arc<Semaphore>>,
}

pub struct Keys {
    entries: Vec<Entry>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

impl Keys {
    /// `configs` from the file, `env_pairs` from `RAGMESH_API_KEYS`
    /// (`tenant=key,tenant=key`).
    pub fn load(configs: &[KeyConfig], env_pairs: Option<&str>) -> anyhow::Result<Self> {
        let mut entries = Vec::new();
        for c in configs {
            let raw = hex::decode(c.sha256.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| anyhow::anyhow!("key {}: sha256 must be 64 hex digits", c.name))?;
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&raw);
            entries.push(Entry::new(
                &c.name,
                &c.tenant,
                hash,
                c.rate_per_minute,
                c.burst,
                c.max_concurrent,
            )?);
        }
        for (i, pair) in env_pairs
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let (tenant, key) = pair
                .split_once('=')
                .filter(|(t, k)| !t.is_empty() && k.len() >= 8)
                .ok_or_else(|| {
                    anyhow::anyhow!("RAGMESH_API_KEYS entry {i}: expected tenant=key with a key of 8+ characters")
                })?;
            entries.push(Entry::new(
                &format!("env-{i}"),
                tenant,
                sha256(key.as_bytes()),
                None,
                None,
                None,
            )?);
        }
        for (i, a) in entries.iter().enumerate() {
            anyhow::ensure!(
                !entries[..i].iter().any(|b| b.hash == a.hash),
                "key {}: the same key is configured twice",
                a.name
            );
        }
        Ok(Self { entries })
    }

    pub fn open(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry whose hash equals the presented key's, scanning all of
    /// them in constant time per entry.
    fn find(&self, presented: &str) -> Option<&Entry> {
        let h = sha256(presented.as_bytes());
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&h)) {
                found = Some(e);
            }
        }
        found
    }
}

impl Entry {
    fn new(
        name: &str,
        tenant: &str,
        hash: [u8; 32],
        rate_per_minute: Option<u32>,
        burst: Option<u32>,
        max_concurrent: Option<u32>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!tenant.is_empty(), "key {name}: tenant must not be empty");
        let rate = match rate_per_minute {
            None | Some(0) => None,
            Some(r) => {
                let cap = f64::from(burst.unwrap_or(r).max(1));
                Some((
                    f64::from(r) / 60.0,
                    cap,
                    Mutex::new(Bucket {
                        tokens: cap,
                        last: Instant::now(),
                    }),
                ))
            }
        };
        Ok(Self {
            name: name.into(),
            tenant: tenant.into(),
            hash,
            rate,
            in_flight: max_concurrent
                .filter(|&m| m > 0)
                .map(|m| Arc::new(Semaphore::new(m as usize))),
        })
    }

    /// Takes one request from the bucket, or says how many seconds until
    /// one is there.
    fn take(&self) -> Result<(), u64> {
        let Some((per_sec, cap, bucket)) = &self.rate else {
            return Ok(());
        };
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * per_sec).min(*cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64)
        }
    }
}

fn unauthorized(message: &str) -> Response {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("invalid_api_key"),
    }
    .into_response()
}

fn too_many(message: String, retry_after: u64) -> Response {
    let mut r = ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message,
        kind: "rate_limit_error",
        param: None,
        code: Some("rate_limit_exceeded"),
    }
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn presented(req: &Request) -> Option<&str> {
    let h = req.headers();
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        return Some(
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim(),
        );
    }
    h.get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Authenticates, applies the key's limits and records the caller.
pub async fn middleware(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    if st.keys.open() {
        req.extensions_mut().insert(Caller {
            tenant: DEFAULT_TENANT.into(),
            key: None,
        });
        return next.run(req).await;
    }
    let entry = match presented(&req) {
        None | Some("") => {
            return unauthorized("missing API key: send 'Authorization: Bearer <key>'");
        }
        Some(k) => match st.keys.find(k) {
            Some(e) => e,
            None => return unauthorized("invalid API key"),
        },
    };
    if let Err(wait) = entry.take() {
        metrics::counter!(crate::metrics::RATE_LIMITED, "key" => entry.name.to_string(), "limit" => "rate")
            .increment(1);
        return too_many(
            format!(
                "rate limit of key '{}' reached; retry in {wait} s",
                entry.name
            ),
            wait,
        );
    }
    let permit = match &entry.in_flight {
        None => None,
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                metrics::counter!(crate::metrics::RATE_LIMITED, "key" => entry.name.to_string(), "limit" => "concurrency")
                    .increment(1);
                return too_many(
                    format!("key '{}' has its maximum of requests in flight", entry.name),
                    1,
                );
            }
        },
    };
    req.extensions_mut().insert(Caller {
        tenant: entry.tenant.clone(),
        key: Some(entry.name.clone()),
    });
    let resp = next.run(req).await;
    match permit {
        None => resp,
        // the permit lives as long as the body: a stream holds its slot
        // until the last event or the client's disconnect
        Some(p) => resp.map(|body| {
            Body::from_stream(body.into_data_stream().map(move |chunk| {
                let _held = &p;
                chunk
            }))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_by_hash_and_refuses_others() {
        let hash = hex::encode(sha256(b"secret-a-123"));
        let cfg = KeyConfig {
            name: "a".into(),
            tenant: "ta".into(),
            sha256: hash,
            rate_per_minute: None,
            burst: None,
            max_concurrent: None,
        };
        let keys = Keys::load(&[cfg], Some("tb=secret-b-456")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys.find("secret-a-123").map(|e| &*e.tenant), Some("ta"));
        assert_eq!(keys.find("secret-b-456").map(|e| &*e.tenant), Some("tb"));
        assert!(keys.find("secret-a-12").is_none());
        assert!(keys.find("").is_none());
        assert!(Keys::load(&[], Some("tb=short")).is_err());
        assert!(Keys::load(&[], Some("x=abcdefgh,y=abcdefgh")).is_err());
    }

    #[test]
    fn bucket_allows_burst_then_says_when() {
        let e = Entry::new("k", "t", [0; 32], Some(60), Some(3), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!((0..3).all(|_| e.take().is_ok()));
        assert_eq!(e.take(), Err(1));
    }
}
