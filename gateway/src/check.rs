//! `--check-config`: the configuration (flags, environment, `--config`)
//! loaded and validated by the same code start-up runs, without loading a
//! model or dialling a replica, so a rendered ConfigMap can be checked
//! before a rollout (the Helm chart's tests do). What only a live stage
//! can tell (a runner pool's model id when `[[model]]` has no `name`, a
//! replica's reachability) is not checked: an unnamed pool is called
//! `runner-pool-N` here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use ragmesh_llm_runner::{Event, GenerateRequest, Input};

use crate::config::{Args, FileConfig};
use crate::error::{ApiResult, internal};
use crate::routing::{Backend, MeshSettings, Models};
use crate::stages::LlmStage;

/// A runner model that is named but not connected.
pub struct Unconnected(pub String);

#[async_trait]
impl LlmStage for Unconnected {
    fn model_id(&self) -> &str {
        &self.0
    }
    fn context_length(&self) -> usize {
        0
    }
    async fn count_tokens(&self, _: &Input) -> ApiResult<usize> {
        Err(internal("not connected (--check-config)"))
    }
    async fn generate(&self, _: GenerateRequest) -> ApiResult<BoxStream<'static, Event>> {
        Err(internal("not connected (--check-config)"))
    }
}

/// Validates everything start-up would, short of the live stages; the
/// line to print when it holds.
pub async fn check(args: &Args) -> anyhow::Result<String> {
    let mut models = Models::default();
    if !args.runner_endpoints.is_empty() {
        crate::mesh::pool::check_targets("--runner-endpoints", &args.runner_endpoints)?;
        let name = "runner-endpoints".to_owned();
        models.add(name.clone(), Backend::Runner(Arc::new(Unconnected(name))))?;
    } else if args.llm_model != "none" {
        // the served id is the GGUF's file stem
        let stem = Path::new(&args.llm_model)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("chat-model")
            .to_owned();
        models.add(stem.clone(), Backend::Runner(Arc::new(Unconnected(stem))))?;
    }
    for (flag, targets) in [
        ("--embedder-endpoints", &args.embedder_endpoints),
        ("--retriever-endpoints", &args.retriever_endpoints),
    ] {
        if !targets.is_empty() {
            crate::mesh::pool::check_targets(flag, targets)?;
        }
    }
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let mesh = MeshSettings {
        connect_timeout: Duration::from_millis(args.mesh_connect_timeout_ms),
        resolve_every: Duration::from_secs(1),
        probe_every: Duration::from_secs(1),
        wait: Duration::ZERO,
    };
    models.load(&file.model, &mesh, false).await?;
    let embed = Path::new(&args.embed_model)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let a = crate::server::assemble(args, file, &models, &embed)?;
    let source = args
        .config
        .as_ref()
        .map_or("flags and environment".into(), |p| p.display().to_string());
    Ok(format!(
        "config ok: {source}: {} models, {} profiles, {} aliases, {} keys{}",
        models.iter().count(),
        a.profiles.len(),
        a.aliases.len(),
        a.keys.len(),
        if a.keys.open() { " (open mode)" } else { "" },
    ))
}
