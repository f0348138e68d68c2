//! RAG profiles: public model names that bind a base model to retrieval
//! settings, so an unmodified OpenAI client gets retrieval by choosing the
//! model name. A request may override per call with the `rag` extension
//! object: `{"collection", "top_k", "filter", "hybrid", "score_threshold"}`.

use std::path::PathBuf;
use std::sync::Arc;

use ragmesh_retriever::MetaFilter;
use serde::Deserialize;
use serde_json::Value;

use super::filter;
use super::prompt::PromptTemplate;
use crate::error::{ApiResult, bad_request};
use crate::fields::{self, Body};
use crate::openai::params::SamplingDefaults;
use crate::routing::{Backend, Models};
use crate::stages::Llm;

/// Most chunks one request may ask for.
pub const MAX_TOP_K: i64 = 64;

/// One `[[profile]]` table of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// The public model name clients select.
    pub name: String,
    /// Base model (default: the served chat model).
    pub model: Option<String>,
    pub collection: String,
    /// A minijinja prompt template file (default: the shipped one).
    pub template: Option<PathBuf>,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Minimum dense similarity a chunk needs to be used.
    pub score_threshold: Option<f32>,
    #[serde(default = "default_true")]
    pub hybrid: bool,
    /// Temperature when the request sends none (default 0: RAG answers
    /// should be the sources' facts, not samples).
    pub temperature: Option<f32>,
    /// Penalties when the request sends none (OpenAI's, and the
    /// multiplicative `repetition_penalty` of llama.cpp and vLLM).
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    /// End an answer that starts to repeat a sentence (default true).
    pub stop_on_repeat: Option<bool>,
    /// Completion tokens kept free when budgeting context if the request
    /// sets no max_tokens (default 512, at most a quarter of the window).
    pub reserve_tokens: Option<usize>,
    /// A fixed filter in the request filter form (see `filter.rs`).
    pub filter: Option<Value>,
}

/// What a profile answers with when the request does not say: greedy,
/// with the repetition control that keeps a small instruction model from
/// looping (chosen with `make bench-rag-quality`; docs/benchmarks.md).
pub const PROFILE_SAMPLING: SamplingDefaults = SamplingDefaults {
    temperature: 0.0,
    frequency_penalty: 0.0,
    presence_penalty: 0.0,
    repetition_penalty: 1.1,
    stop_on_repeat: true,
};

impl ProfileConfig {
    /// The profile's sampling defaults, each value checked against the
    /// range the API accepts (an error names the key).
    pub fn sampling_defaults(&self) -> anyhow::Result<SamplingDefaults> {
        let d = PROFILE_SAMPLING;
        let check = |key: &str, v: Option<f32>, lo: f32, hi: f32, def: f32| match v {
            Some(x) if !(x.is_finite() && (lo..=hi).contains(&x)) => Err(anyhow::anyhow!(
                "profile {}: {key} must be between {lo} and {hi}, got {x}",
                self.name
            )),
            Some(x) => Ok(x),
            None => Ok(def),
        };
        let repetition = check(
            "repetition_penalty",
            self.repetition_penalty,
            0.0,
            2.0,
            d.repetition_penalty,
        )?;
        anyhow::ensure!(
            repetition > 0.0,
            "profile {}: repetition_penalty must be greater than 0 (1 is off)",
            self.name
        );
        Ok(SamplingDefaults {
            temperature: check("temperature", self.temperature, 0.0, 2.0, d.temperature)?,
            frequency_penalty: check(
                "frequency_penalty",
                self.frequency_penalty,
                -2.0,
                2.0,
                d.frequency_penalty,
            )?,
            presence_penalty: check(
                "presence_penalty",
                self.presence_penalty,
                -2.0,
                2.0,
                d.presence_penalty,
            )?,
            repetition_penalty: repetition,
            stop_on_repeat: self.stop_on_repeat.unwrap_or(d.stop_on_repeat),
        })
    }
}

fn default_top_k() -> usize {
    4
}
fn default_true() -> bool {
    true
}

/// A loaded profile.
pub struct Profile {
    pub name: String,
    /// The base model's public name, and the model itself.
    pub model: String,
    pub llm: Llm,
    pub spec: RagSpec,
    pub sampling: SamplingDefaults,
    pub reserve_tokens: Option<usize>,
}

/// What one request retrieves with.
#[derive(Clone)]
pub struct RagSpec {
    pub collection: String,
    pub top_k: usize,
    pub score_threshold: Option<f32>,
    pub hybrid: bool,
    pub filter: MetaFilter,
    pub template: Arc<PromptTemplate>,
}

impl Profile {
    pub fn load(
        c: &ProfileConfig,
        models: &Models,
        builtin: &Arc<PromptTemplate>,
    ) -> anyhow::Result<Self> {
        let (model, llm) = match &c.model {
            Some(m) => match models.get(m) {
                Some(Backend::Runner(l)) => (m.clone(), l.clone()),
                Some(Backend::Upstream(_)) => anyhow::bail!(
                    "profile {}: base model '{m}' is an external upstream; RAG profiles need a runner model (the prompt budget uses its tokenizer)",
                    c.name
                ),
                None => anyhow::bail!("profile {}: base model '{m}' is not served here", c.name),
            },
            None => match models.default_runner() {
                Some((n, l)) => (n.to_owned(), l.clone()),
                None => anyhow::bail!(
                    "profile {}: no runner model is served to base it on",
                    c.name
                ),
            },
        };
        anyhow::ensure!(
            (1..=MAX_TOP_K as usize).contains(&c.top_k),
            "profile {}: top_k must be between 1 and {MAX_TOP_K}",
            c.name
        );
        let template = match &c.template {
            Some(p) => Arc::new(PromptTemplate::from_file(p)?),
            None => builtin.clone(),
        };
        let filter = filter::parse(c.filter.as_ref())
            .map_err(|e| anyhow::anyhow!("profile {}: {}", c.name, e.message()))?;
        Ok(Self {
            name: c.name.clone(),
            model,
            llm,
            spec: RagSpec {
                collection: c.collection.clone(),
                top_k: c.top_k,
                score_threshold: c.score_threshold,
                hybrid: c.hybrid,
                filter,
                template,
            },
            sampling: c.sampling_defaults()?,
            reserve_tokens: c.reserve_tokens,
        })
    }
}

/// Applies the request's `rag` object over `base` (a profile's spec, or
/// none for a plain model, in which case `collection` is required).
pub fn override_spec(
    base: Option<&RagSpec>,
    rag: &Body,
    builtin: &Arc<PromptTemplate>,
) -> ApiResult<RagSpec> {
    let collection = match (fields::opt_str(rag, "collection")?, base) {
        (Some(c), _) => c,
        (None, Some(b)) => b.collection.clone(),
        (None, None) => {
            return Err(bad_request(
                "'rag.collection' is required when the model is not a RAG profile",
                "rag",
            ));
        }
    };
    let top_k = match fields::opt_int_in(rag, "top_k", 1, MAX_TOP_K)? {
        Some(k) => k as usize,
        None => base.map_or(default_top_k(), |b| b.top_k),
    };
    let filter = match rag.get("filter") {
        Some(v) if !v.is_null() => {
            let mut f = filter::parse(Some(v))?;
            // a profile's fixed filter still applies
            if let Some(b) = base {
                f.must.extend(b.filter.must.iter().cloned());
                f.must_not.extend(b.filter.must_not.iter().cloned());
            }
            f
        }
        _ => base.map(|b| b.filter.clone()).unwrap_or_default(),
    };
    Ok(RagSpec {
        collection,
        top_k,
        score_threshold: match fields::opt_f32(rag, "score_threshold", -1.0, 1.0)? {
            Some(t) => Some(t),
            None => base.and_then(|b| b.score_threshold),
        },
        hybrid: fields::opt_bool(rag, "hybrid")?.unwrap_or(base.is_none_or(|b| b.hybrid)),
        filter,
        template: base.map_or_else(|| builtin.clone(), |b| b.template.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> ProfileConfig {
        toml::from_str(&format!("name = \"p\"\ncollection = \"c\"\n{extra}"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn profiles_default_to_greedy_with_repetition_control() {
        let d = config("").sampling_defaults().ok();
        assert_eq!(d, Some(PROFILE_SAMPLING));
        let d = config("temperature = 0.7\nrepetition_penalty = 1.0\nstop_on_repeat = false")
            .sampling_defaults()
            .ok();
        assert_eq!(
            d.map(|d| (d.temperature, d.repetition_penalty, d.stop_on_repeat)),
            Some((0.7, 1.0, false))
        );
    }

    #[test]
    fn out_of_range_sampling_keys_name_the_key() {
        for (bad, key) in [
            ("temperature = 3.0", "temperature"),
            ("repetition_penalty = 0.0", "repetition_penalty"),
            ("repetition_penalty = 2.5", "repetition_penalty"),
            ("frequency_penalty = -2.5", "frequency_penalty"),
            ("presence_penalty = nan", "presence_penalty"),
        ] {
            let e = config(bad).sampling_defaults().err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(key)),
                "{bad}: {e:?}"
            );
        }
    }
}
