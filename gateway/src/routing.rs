//! Model routing: which backend answers a public model name.
//!
//! - the default chat model: the in-process runner, or llm-runner replicas
//!   when `--runner-endpoints` is set;
//! - `[[model]]` tables: more runner pools (`runners = [...]`) or external
//!   OpenAI-compatible upstreams (`[[model.upstream]]`, see `upstream`);
//! - `[aliases]`: extra names for any model or RAG profile
//!   (`"gpt-4o-mini" = "docs-assistant"`), resolved before anything else.
//!
//! RAG profiles bind to runner-backed models only: the prompt budget is
//! counted with the model's own tokenizer, which an external upstream
//! does not offer. (An upstream model is pass-through.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::mesh::PoolConfig;
use crate::mesh::runner::RemoteRunner;
use crate::stages::Llm;
use crate::upstream::{self, TargetConfig, Upstream};

/// One `[[model]]` table of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Public name. Runner pools default to the model id the replicas
    /// report; upstream models must name themselves.
    pub name: Option<String>,
    /// llm-runner replicas: `http://host:port` entries or one
    /// `dns://host:port` name.
    #[serde(default)]
    pub runners: Vec<String>,
    /// External OpenAI-compatible targets, tried in order.
    #[serde(default)]
    pub upstream: Vec<TargetConfig>,
    pub connect_timeout_ms: Option<u64>,
    pub timeout_s: Option<u64>,
    pub retries: Option<u32>,
    /// Runner pools that may be scaled to zero (KEDA): start-up does not
    /// wait for them, and a request waits up to this long for a replica
    /// (counted in `ragmesh_gateway_requests_waiting_for_replica`, the
    /// signal that wakes the pool). Needs `name`.
    pub scale_from_zero_wait_s: Option<u64>,
    /// Runner pools: `least_outstanding` (default), `prefix` or `session`
    /// (see `mesh::pool::Routing`).
    pub routing: Option<crate::mesh::pool::Routing>,
}

#[derive(Clone)]
pub enum Backend {
    Runner(Llm),
    Upstream(Arc<Upstream>),
}

/// The served chat models by public name.
#[derive(Default)]
pub struct Models {
    /// In listing order; the first runner model is the default base of
    /// RAG profiles.
    entries: Vec<(String, Backend)>,
    by_name: HashMap<String, usize>,
}

/// How the mesh clients connect (from flags).
#[derive(Debug, Clone)]
pub struct MeshSettings {
    pub connect_timeout: Duration,
    pub resolve_every: Duration,
    pub probe_every: Duration,
    /// How long start-up waits for a pool's first answer.
    pub wait: Duration,
}

impl MeshSettings {
    pub fn pool(&self, service: &'static str, targets: &[String]) -> PoolConfig {
        PoolConfig {
            service,
            routing: crate::mesh::pool::Routing::LeastOutstanding,
            targets: targets.to_vec(),
            connect_timeout: self.connect_timeout,
            resolve_every: self.resolve_every,
            probe_every: self.probe_every,
        }
    }
}

impl Models {
    pub fn add(&mut self, name: String, backend: Backend) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.by_name.contains_key(&name),
            "model '{name}' is defined twice"
        );
        self.by_name.insert(name.clone(), self.entries.len());
        self.entries.push((name, backend));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Backend> {
        self.by_name.get(name).map(|&i| &self.entries[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, Backend)> {
        self.entries.iter()
    }

    /// The model RAG profiles use when they name none.
    pub fn default_runner(&self) -> Option<(&str, &Llm)> {
        self.entries.iter().find_map(|(n, b)| match b {
            Backend::Runner(l) => Some((n.as_str(), l)),
            Backend::Upstream(_) => None,
        })
    }

    /// Adds every `[[model]]` table. With `connect == false`
    /// (`--check-config`) runner pools are validated, not dialled, and
    /// stand in as [`crate::check::Unconnected`] stages.
    pub async fn load(
        &mut self,
        configs: &[ModelConfig],
        mesh: &MeshSettings,
        connect: bool,
    ) -> anyhow::Result<()> {
        for (i, c) in configs.iter().enumerate() {
            let what = c
                .name
                .clone()
                .unwrap_or_else(|| format!("[[model]] #{}", i + 1));
            match (c.runners.is_empty(), c.upstream.is_empty()) {
                (false, false) => anyhow::bail!("model {what}: set runners or upstream, not both"),
                (true, true) => anyhow::bail!("model {what}: set runners or upstream"),
                (false, true) => {
                    anyhow::ensure!(
                        c.timeout_s.is_none() && c.retries.is_none(),
                        "model {what}: timeout_s and retries apply to upstream models"
                    );
                    anyhow::ensure!(
                        c.scale_from_zero_wait_s.is_none() || c.name.is_some(),
                        "model {what}: scale_from_zero_wait_s needs a name (no replica may be there to report one)"
                    );
                    if !connect {
                        crate::mesh::pool::check_targets(&format!("model {what}"), &c.runners)?;
                        let name = c
                            .name
                            .clone()
                            .unwrap_or_else(|| format!("runner-pool-{}", i + 1));
                        let stage = crate::check::Unconnected(name.clone());
                        self.add(name, Backend::Runner(Arc::new(stage)))?;
                        continue;
                    }
                    let mut m = mesh.clone();
                    if let Some(ms) = c.connect_timeout_ms {
                        m.connect_timeout = Duration::from_millis(ms);
                    }
                    let pool = |targets: &[String]| {
                        let mut p = m.pool("llm-runner", targets);
                        p.routing = c.routing.unwrap_or_default();
                        p
                    };
                    let r = match c.scale_from_zero_wait_s {
                        Some(s) => {
                            let name = c.name.clone().ok_or_else(|| {
                                anyhow::anyhow!(
                                    "model {what}: scale_from_zero_wait_s needs a name (no replica may be there to report one)"
                                )
                            })?;
                            let wait = Duration::from_secs(s.max(1));
                            RemoteRunner::standby(pool(&c.runners), name, wait).await?
                        }
                        None => RemoteRunner::connect(pool(&c.runners), m.wait).await?,
                    };
                    let name = c
                        .name
                        .clone()
                        .unwrap_or_else(|| crate::stages::LlmStage::model_id(&r).to_owned());
                    self.add(name, Backend::Runner(Arc::new(r)))?;
                }
                (true, false) => {
                    anyhow::ensure!(
                        c.scale_from_zero_wait_s.is_none(),
                        "model {what}: scale_from_zero_wait_s applies to runner pools"
                    );
                    anyhow::ensure!(
                        c.routing.is_none(),
                        "model {what}: routing applies to runner pools"
                    );
                    let name = c.name.clone().ok_or_else(|| {
                        anyhow::anyhow!("model {what}: an upstream model needs a name")
                    })?;
                    let up = Upstream::new(
                        &name,
                        &c.upstream,
                        Duration::from_millis(
                            c.connect_timeout_ms
                                .unwrap_or(upstream::DEFAULT_CONNECT_TIMEOUT_MS),
                        ),
                        Duration::from_secs(c.timeout_s.unwrap_or(upstream::DEFAULT_TIMEOUT_S)),
                        c.retries.unwrap_or(upstream::DEFAULT_RETRIES),
                    )?;
                    self.add(name, Backend::Upstream(Arc::new(up)))?;
                }
            }
        }
        Ok(())
    }
}

/// Checks `[aliases]` against what is served; returns alias → target.
pub fn aliases(
    table: &BTreeMap<String, String>,
    exists: impl Fn(&str) -> bool,
) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for (alias, target) in table {
        anyhow::ensure!(
            !exists(alias),
            "alias '{alias}' is already the name of a served model or profile"
        );
        anyhow::ensure!(
            exists(target),
            "alias '{alias}' points at '{target}', which is not served here"
        );
        out.insert(alias.clone(), target.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_must_point_at_something_and_not_shadow() {
        let served = |n: &str| n == "a" || n == "b";
        let t = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            aliases(&t(&[("gpt-4o", "a")]), served)
                .ok()
                .and_then(|m| m.get("gpt-4o").cloned()),
            Some("a".into())
        );
        assert!(aliases(&t(&[("x", "nope")]), served).is_err());
        assert!(aliases(&t(&[("b", "a")]), served).is_err());
    }

    fn mesh() -> MeshSettings {
        MeshSettings {
            connect_timeout: Duration::from_millis(100),
            resolve_every: Duration::from_secs(10),
            probe_every: Duration::from_secs(1),
            wait: Duration::from_millis(100),
        }
    }

    fn model(toml_text: &str) -> ModelConfig {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Bad `[[model]]` tables stop start-up with a line naming the problem.
    #[tokio::test]
    async fn bad_model_tables_are_refused_at_start() {
        let up = "[[upstream]]\nurl = \"http://127.0.0.1:9/v1\"\n";
        for (text, needle) in [
            (
                format!("name = \"a\"\nrunners = [\"h:1\"]\n{up}"),
                "not both",
            ),
            ("name = \"a\"\n".to_owned(), "set runners or upstream"),
            (up.to_owned(), "needs a name"),
            (
                "runners = [\"http://127.0.0.1:9\"]\nscale_from_zero_wait_s = 5\n".to_owned(),
                "scale_from_zero_wait_s needs a name",
            ),
            (
                format!("name = \"a\"\nscale_from_zero_wait_s = 5\n{up}"),
                "applies to runner pools",
            ),
            (
                format!("name = \"a\"\nrouting = \"prefix\"\n{up}"),
                "routing applies to runner pools",
            ),
            (
                "name = \"a\"\nrouting = \"random\"\nrunners = [\"h:1\"]\n".to_owned(),
                "unknown variant",
            ),
            (
                "name = \"a\"\n[[upstream]]\nurl = \"ftp://h/v1\"\n".to_owned(),
                "http:// or https://",
            ),
            (
                "name = \"a\"\n[[upstream]]\nurl = \"not a url\"\n".to_owned(),
                "upstream url",
            ),
            (
                format!("name = \"a\"\n{up}api_key_env = \"RAGMESH_TEST_UNSET_KEY_VAR\"\n"),
                "RAGMESH_TEST_UNSET_KEY_VAR",
            ),
            (
                "name = \"a\"\nruners = [\"h:1\"]\n".to_owned(),
                "unknown field",
            ),
            (
                "name = \"a\"\nruntimes = 1\nrunners = [\"h\"]\n".to_owned(),
                "unknown field",
            ),
            (
                "name = \"a\"\nrunners = [\"localhost\"]\n".to_owned(),
                "needs a port",
            ),
        ] {
            let err = match toml::from_str::<ModelConfig>(&text) {
                Err(e) => e.to_string(),
                Ok(c) => {
                    // --check-config refuses what start-up refuses
                    let checked = Models::default()
                        .load(std::slice::from_ref(&c), &mesh(), false)
                        .await;
                    assert!(checked.is_err(), "checked: {text}");
                    match Models::default().load(&[c], &mesh(), true).await {
                        Err(e) => e.to_string(),
                        Ok(()) => panic!("accepted: {text}"),
                    }
                }
            };
            assert!(err.contains(needle), "{text}: {err}");
        }
        // the same name twice
        let c = model(&format!("name = \"a\"\n{up}"));
        let err = Models::default().load(&[c.clone(), c], &mesh(), true).await;
        assert!(err.is_err_and(|e| e.to_string().contains("defined twice")));
    }

    /// A RAG profile cannot sit on an upstream: its prompt budget needs the
    /// model's tokenizer.
    #[tokio::test]
    async fn profiles_need_a_runner_model() {
        use crate::rag::profile::{Profile, ProfileConfig};
        use crate::rag::prompt::PromptTemplate;
        let mut models = Models::default();
        let ok = models
            .load(
                &[model(
                    "name = \"ext\"\n[[upstream]]\nurl = \"http://127.0.0.1:9/v1\"\n",
                )],
                &mesh(),
                true,
            )
            .await;
        assert!(ok.is_ok(), "{ok:?}");
        let builtin = Arc::new(PromptTemplate::builtin());
        let on = |base: &str| -> ProfileConfig {
            toml::from_str(&format!(
                "name = \"p\"\ncollection = \"c\"\nmodel = \"{base}\"\n"
            ))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let err = Profile::load(&on("ext"), &models, &builtin)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("external upstream")),
            "{err:?}"
        );
        let err = Profile::load(&on("nope"), &models, &builtin)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("not served")),
            "{err:?}"
        );
        // and with no runner at all, a profile without a base has nothing to use
        let bare: ProfileConfig =
            toml::from_str("name = \"p\"\ncollection = \"c\"\n").unwrap_or_else(|e| panic!("{e}"));
        let err = Profile::load(&bare, &models, &builtin)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("no runner model")),
            "{err:?}"
        );
    }

    #[test]
    fn model_tables_parse_and_typos_are_refused() {
        #[derive(Deserialize)]
        struct F {
            model: Vec<ModelConfig>,
        }
        let f: Result<F, _> = toml::from_str(
            "[[model]]\nname = \"gpt\"\ntimeout_s = 5\n[[model.upstream]]\nurl = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n[[model.upstream]]\nurl = \"http://127.0.0.1:10/v1\"\n",
        );
        let f = f.map_err(|e| e.to_string());
        assert_eq!(f.as_ref().map(|f| f.model[0].upstream.len()), Ok(2));
        let bad: Result<F, _> = toml::from_str("[[model]]\nname = \"x\"\nrunner = [\"a:1\"]\n");
        assert!(bad.is_err());
    }
}
