//! What every handler shares: the stages, the profiles, the limits.

use std::collections::HashMap;
use std::sync::Arc;

use ragmesh_retriever::Retriever;

use crate::error::{ApiError, unknown_model};
use crate::rag::chunk::ChunkSettings;
use crate::rag::profile::Profile;
use crate::rag::prompt::PromptTemplate;
use crate::routing::{Backend, Models};
use crate::stages::{Embed, Llm};
use crate::upstream::Upstream;

/// The tenant of every caller in open mode (no keys configured), and of
/// the demo collection.
pub const DEFAULT_TENANT: &str = "default";

pub struct Inner {
    pub embed: Embed,
    /// Chat models by public name (runners and upstreams).
    pub models: Models,
    /// `[aliases]`: alias → model or profile name.
    pub aliases: HashMap<String, String>,
    pub retriever: Retriever,
    /// Files and vector-store records (the retriever's object store).
    pub objects: crate::files::store::Objects,
    /// `--max-file-bytes`.
    pub max_file_bytes: usize,
    /// `--attach-concurrency` (see `files::attach`).
    pub attach_slots: Arc<tokio::sync::Semaphore>,
    /// `--response-retention-days`, in seconds.
    pub response_retention_s: u64,
    pub profiles: HashMap<String, Arc<Profile>>,
    pub builtin_template: Arc<PromptTemplate>,
    pub chunking: ChunkSettings,
    pub max_body_bytes: usize,
    /// `--max-inflight-body-bytes`, in KiB permits (see `body.rs`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// `--max-concurrent-requests` (see `auth.rs`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// How long a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    pub keys: crate::auth::Keys,
    /// Open mode's Origin/Host guard.
    pub origins: crate::origin::Policy,
    /// Unix time the gateway started (`created` of /v1/models).
    pub started: u64,
    /// Readiness and drain (`/ready`; SSE streams end at the deadline).
    pub lifecycle: ragmesh_telemetry::Lifecycle,
}

pub type AppState = Arc<Inner>;

/// What a model name in a generation request refers to.
pub enum Target {
    Runner(Llm),
    Upstream(Arc<Upstream>),
    Profile(Arc<Profile>),
}

impl Inner {
    pub fn resolve(&self, model: &str) -> Result<Target, ApiError> {
        let name = self.aliases.get(model).map_or(model, String::as_str);
        if let Some(p) = self.profiles.get(name) {
            return Ok(Target::Profile(p.clone()));
        }
        match self.models.get(name) {
            Some(Backend::Runner(l)) => return Ok(Target::Runner(l.clone())),
            Some(Backend::Upstream(u)) => return Ok(Target::Upstream(u.clone())),
            None => {}
        }
        if self.embed.accepts(model) && !model.is_empty() {
            return Err(crate::error::bad_request(
                format!("'{model}' is an embedding model: use /v1/embeddings"),
                "model",
            ));
        }
        Err(unknown_model(model))
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
