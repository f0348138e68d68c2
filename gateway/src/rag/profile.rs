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
    /// Temperature when the request sends none.
    pub temperature: Option<f32>,
    /// Completion tokens kept free when budgeting context if the request
    /// sets no max_tokens (default 512, at most a quarter of the window).
    pub reserve_tokens: Option<usize>,
    /// A fixed filter in the request filter form (see `filter.rs`).
    pub filter: Option<Value>,
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
    pub temperature: Option<f32>,
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
            .map_err(|e| anyhow::anyhow!("profile {}: {}", c.name, e.message))?;
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
            temperature: c.temperature,
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
