//! `--check-config`: the configuration (flags, environment, `--config`)
//! loaded and validated by the same code start-up runs, without loading a
//! model or dialling a replica, so a rendered ConfigMap can be checked
//! before a rollout (the Helm chart's tests do). What only a live stage
//! can tell (a runner pool's model id when `[[model]]` has no `name`, a
//! replica's reachability, the embedder's input length) is not checked: an
//! unnamed pool is called `runner-pool-N` here, and names that profiles or
//! aliases use and nothing else serves are assumed to be such a pool's (the
//! printed line lists them).

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
    async fn generate(
        &self,
        _: GenerateRequest,
        _: &crate::stages::Route,
    ) -> ApiResult<BoxStream<'static, Event>> {
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
    args.host
        .parse::<std::net::IpAddr>()
        .map_err(|_| anyhow::anyhow!("--host '{}' is not an IP address", args.host))?;
    // the embedder's input length is known only once it is loaded
    crate::rag::chunk::ChunkSettings {
        tokens: args.chunk_tokens,
        overlap: args.chunk_overlap,
    }
    .validate(usize::MAX)?;
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
    // A pool without `name` is called by the model id its replicas report,
    // which only they can tell: names that profiles and aliases use and
    // nothing else serves are assumed to be theirs (and said so).
    let unnamed = !args.runner_endpoints.is_empty()
        || file
            .model
            .iter()
            .any(|m| m.name.is_none() && !m.runners.is_empty());
    let mut assumed: Vec<String> = Vec::new();
    if unnamed {
        let wanted = file
            .profile
            .iter()
            .filter_map(|p| p.model.clone())
            .chain(file.aliases.values().cloned());
        for name in wanted {
            let known = models.get(&name).is_some()
                || file.profile.iter().any(|p| p.name == name)
                || assumed.contains(&name);
            if !known {
                let stage = Unconnected(name.clone());
                models.add(name.clone(), Backend::Runner(Arc::new(stage)))?;
                assumed.push(name);
            }
        }
    }
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
    let assumed = if assumed.is_empty() {
        String::new()
    } else {
        format!(
            "; assumed served by unnamed runner pools: {}",
            assumed.join(", ")
        )
    };
    Ok(format!(
        "config ok: {source}: {} models, {} profiles, {} aliases, {} keys{}{assumed}",
        models.iter().count(),
        a.profiles.len(),
        a.aliases.len(),
        a.keys.len(),
        if a.keys.open() { " (open mode)" } else { "" },
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    async fn check_with(config: &str, flags: &[&str]) -> anyhow::Result<String> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config)?;
        let path = path.display().to_string();
        let mut argv = vec!["ragmesh-gateway", "--check-config", "--config", &path];
        argv.extend_from_slice(flags);
        check(&Args::try_parse_from(argv)?).await
    }

    #[tokio::test]
    async fn a_valid_mesh_config_passes_without_dialling_anything() {
        // nothing listens on these: check mode must not connect
        let cfg = "[[model]]\nname = \"llama\"\nrunners = [\"dns://runner-headless:50053\"]\n\n\
                   [[model]]\nrunners = [\"http://127.0.0.1:9\"]\n\n\
                   [[profile]]\nname = \"docs\"\ncollection = \"docs\"\nmodel = \"llama\"\n\n\
                   [[profile]]\nname = \"other\"\ncollection = \"c\"\nmodel = \"Qwen2.5-0.5B\"\n\n\
                   [aliases]\n\"gpt-4o-mini\" = \"docs\"\n";
        let line = check_with(cfg, &["--llm-model", "none"])
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(line.starts_with("config ok"), "{line}");
        assert!(
            line.contains("2 profiles") && line.contains("1 aliases"),
            "{line}"
        );
        // the unnamed pool may well serve that model: assumed, and said so
        assert!(
            line.contains("assumed served by unnamed runner pools: Qwen2.5-0.5B"),
            "{line}"
        );
    }

    #[tokio::test]
    async fn what_start_up_refuses_check_config_refuses() {
        let cases = [
            (
                "[[model]]\nname = \"a\"\nrunners = [\"localhost\"]\n",
                &[][..],
                "needs a port",
            ),
            (
                "[[profile]]\nname = \"p\"\ncollection = \"c\"\ntop_k = 0\n",
                &[],
                "top_k",
            ),
            (
                "[[profile]]\nname = \"p\"\ncollection = \"c\"\nmodel = \"nope\"\n",
                &[],
                "not served here",
            ),
            ("[aliases]\nx = \"nowhere\"\n", &[], "not served here"),
            ("[[modle]]\n", &[], "unknown field"),
            ("", &["--host", "localhost"], "not an IP address"),
            ("", &["--chunk-tokens", "8"], "at least 16"),
            (
                "",
                &["--chunk-tokens", "100", "--chunk-overlap", "100"],
                "smaller than",
            ),
        ];
        for (cfg, flags, needle) in cases {
            let err = match check_with(cfg, flags).await {
                Ok(line) => panic!("accepted {cfg:?} {flags:?}: {line}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(needle), "{cfg:?} {flags:?}: {err}");
        }
    }
}
