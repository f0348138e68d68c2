//! `answer()`: the one generation pipeline behind every front door
//! (`/v1/chat/completions`, `/v1/completions`, and the Responses API to
//! come). Plain types in, a typed event stream out; the HTTP handlers
//! parse bodies into an [`AnswerRequest`] and format the [`Answer`] as
//! JSON or SSE. External upstreams are not answered here: they are
//! pass-through, their bodies forwarded as sent.
//!
//! The steps: wait for the model (a pool scaled to zero), retrieve with
//! the last user turn when the request retrieves, fit the numbered
//! context into the window with the runner's own tokenizer (lowest-ranked
//! chunks dropped first), then generate.

use std::sync::Arc;
use std::time::Instant;

use futures::stream::BoxStream;
use ragmesh_llm_runner::{Event, Input};
use ragmesh_retriever::ScoredChunk;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::error::{ApiResult, bad_request};
use crate::metrics as m;
use crate::openai::params::{GenParams, SamplingDefaults};
use crate::openai::request::Shape;
use crate::rag::profile::{Profile, RagSpec, override_spec};
use crate::rag::prompt;
use crate::rag::retrieve::{citations, retrieve};
use crate::stages::{Llm, Route};
use crate::state::{Inner, Target};
use crate::trace;

/// What is answered: a chat (`(role, text)` turns, roles already
/// normalised to system / user / assistant) or a raw prompt.
pub enum Question {
    Chat(Vec<(String, String)>),
    Text(String),
}

/// A generation target, resolved: the runner model, and the profile and
/// retrieval settings when the request retrieves.
pub struct Plan {
    pub llm: Llm,
    pub profile: Option<Arc<Profile>>,
    pub retrieval: Option<RagSpec>,
    /// More collections searched with the retrieval's settings (a
    /// Responses `file_search` over several vector stores); the hits of
    /// all are merged by score before the top `top_k` are kept.
    pub also_search: Vec<String>,
}

impl Plan {
    /// A runner model or a profile, with the request's `rag` override (an
    /// upstream target is the caller's to forward, not a plan).
    pub fn new(
        st: &Inner,
        target: Target,
        rag: Option<&serde_json::Map<String, Value>>,
    ) -> ApiResult<Self> {
        let (llm, profile) = match target {
            Target::Runner(llm) => (llm, None),
            Target::Profile(p) => (p.llm.clone(), Some(p)),
            Target::Upstream(_) => {
                return Err(crate::error::internal("an upstream target has no plan"));
            }
        };
        let retrieval = match (&profile, rag) {
            (Some(p), None) => Some(p.spec.clone()),
            (base, Some(r)) => Some(override_spec(
                base.as_ref().map(|p| &p.spec),
                r,
                &st.builtin_template,
            )?),
            (None, None) => None,
        };
        Ok(Self {
            llm,
            profile,
            retrieval,
            also_search: Vec::new(),
        })
    }
}

pub struct AnswerRequest {
    pub tenant: Arc<str>,
    /// The model name as asked (the response's `model`, the in-flight
    /// gauge's label).
    pub model: String,
    pub plan: Plan,
    pub question: Question,
    pub params: GenParams,
    /// Response format, tools, and the tool parts of the turns.
    pub shape: Shape,
    /// Prefix of the answer's id (`chatcmpl`, `cmpl`, `resp`).
    pub id_prefix: &'static str,
    /// The caller's session key (`x-session-id`, `safety_identifier` or
    /// `user`), for a runner pool that routes by session.
    pub session: Option<String>,
}

/// A generation under way.
pub struct Answer {
    pub id: String,
    pub events: BoxStream<'static, Event>,
    /// The chunks placed in the prompt (the `citations` extension).
    pub citations: Option<Value>,
    /// The retrieval summary (the `rag` extension).
    pub rag: Option<Value>,
    /// What retrieval found, best first; the first `used` were placed in
    /// the prompt (numbered from 1).
    pub retrieved: Vec<ScoredChunk>,
    pub used: usize,
}

/// Runs the pipeline up to the first event; `span` is the request's GenAI
/// span (the stream records usage and finish reasons on it).
pub async fn answer(st: &Inner, req: AnswerRequest, span: tracing::Span) -> ApiResult<Answer> {
    let AnswerRequest {
        tenant,
        model,
        plan,
        question,
        params,
        shape,
        id_prefix,
        session,
    } = req;
    let Plan {
        llm,
        profile,
        retrieval,
        also_search,
    } = plan;
    trace::record_params(&span, &params);
    // a pool scaled to zero: wait (bounded) for a replica before anything
    // asks the model for its window or its tokens
    llm.ready().await?;
    // routing keys from the conversation as sent (before retrieval adds
    // its context to the last turn)
    let route = match &question {
        Question::Chat(turns) => Route::of(
            &model,
            &tenant,
            turns.iter().map(|(r, t)| (r.as_str(), t.as_str())),
            session.as_deref(),
        ),
        Question::Text(t) => Route::of(&model, &tenant, [("", t.as_str())], session.as_deref()),
    };
    let (mut cites, mut summary) = (None, None);
    let (mut retrieved, mut used) = (Vec::new(), 0);
    let input = match (question, retrieval) {
        (Question::Text(_), Some(_)) => {
            return Err(bad_request(
                "retrieval answers chats only: use /v1/chat/completions",
                "rag",
            ));
        }
        (Question::Text(t), None) => Input::Prompt(t),
        (Question::Chat(messages), None) => Input::Chat(messages),
        (Question::Chat(messages), Some(spec)) => {
            let r = retrieve_into(
                st,
                &tenant,
                &llm,
                profile.as_deref(),
                (&spec, &also_search),
                messages,
                &params,
            )
            .await?;
            cites = Some(citations(&r.chunks[..r.used]));
            summary = Some(r.summary);
            (retrieved, used) = (r.chunks, r.used);
            Input::Chat(r.messages)
        }
    };
    if let Input::Chat(messages) = &input {
        trace::input_messages(&span, messages);
    }
    let id = crate::request_id::new(id_prefix);
    let defaults = profile
        .as_ref()
        .map_or_else(SamplingDefaults::default, |p| p.sampling.clone());
    let in_flight = m::InFlight::new(&model);
    let mut gen_req = params.request(input, &defaults, &id);
    gen_req.cache_salt = cache_salt(&tenant);
    gen_req.format = shape.format;
    gen_req.tools = shape.tools;
    gen_req.history = shape.history;
    let events = llm
        .generate(gen_req, &route)
        .instrument(trace::generate_span(llm.model_id()))
        .await?;
    let events = trace::traced(events, span, &id, llm.model_id(), in_flight);
    Ok(Answer {
        id,
        events,
        citations: cites,
        rag: summary,
        retrieved,
        used,
    })
}

/// The runner's prefix-cache salt for `tenant`: tenants never reuse each
/// other's cached prompts (a hit is visible in `cached_tokens` and in the
/// time to first token, so shared blocks would let one tenant test
/// whether another sent a given prompt). Never 0, the unsalted cache.
fn cache_salt(tenant: &str) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    tenant.hash(&mut h);
    h.finish().max(1)
}

/// What [`retrieve_into`] gives the generation.
struct Fitted {
    messages: Vec<(String, String)>,
    chunks: Vec<ScoredChunk>,
    used: usize,
    summary: Value,
}

/// Retrieves with the last user turn and fits the chunks into the
/// window: the messages to generate from, the citations, the summary.
async fn retrieve_into(
    st: &Inner,
    tenant: &str,
    llm: &Llm,
    profile: Option<&Profile>,
    (spec, also): (&RagSpec, &[String]),
    messages: Vec<(String, String)>,
    params: &GenParams,
) -> ApiResult<Fitted> {
    let query = messages
        .iter()
        .rev()
        .find(|(r, _)| r == "user")
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    if query.trim().is_empty() {
        return Err(bad_request(
            "retrieval needs a non-empty user message to search with",
            "messages",
        ));
    }
    let mut got = retrieve(st, tenant, spec, &query).await?;
    for collection in also {
        let spec = RagSpec {
            collection: collection.clone(),
            ..spec.clone()
        };
        let more = retrieve(st, tenant, &spec, &query).await?;
        got.chunks.extend(more.chunks);
        got.embed_ms += more.embed_ms;
        got.search_ms += more.search_ms;
    }
    if !also.is_empty() {
        got.chunks
            .sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        got.chunks.truncate(spec.top_k);
    }
    let window = llm.context_length();
    let reserve = match params.max_tokens {
        Some(m) => m.max(0) as usize,
        None => profile
            .and_then(|p| p.reserve_tokens)
            .unwrap_or(512)
            .min(window / 4),
    };
    let t = Instant::now();
    let build = tracing::info_span!(
        "prompt_build",
        rag.chunks_retrieved = got.chunks.len() as i64,
        rag.chunks_used = tracing::field::Empty,
        rag.chunks_dropped = tracing::field::Empty,
        ragmesh.prompt_tokens = tracing::field::Empty,
    );
    let fitted = prompt::fit(
        &spec.template,
        &messages,
        &got.chunks,
        window.saturating_sub(reserve),
        |msgs| {
            let llm = llm.clone();
            async move { llm.count_tokens(&Input::Chat(msgs)).await }
        },
    )
    .instrument(build.clone())
    .await?;
    build.record("rag.chunks_used", fitted.used as i64);
    build.record("rag.chunks_dropped", fitted.dropped as i64);
    build.record("ragmesh.prompt_tokens", fitted.prompt_tokens as i64);
    drop(build);
    let prompt_ms = t.elapsed().as_secs_f64() * 1e3;
    metrics::histogram!(m::RAG_STAGE, "stage" => "prompt").record(prompt_ms / 1e3);
    if fitted.dropped > 0 {
        metrics::counter!(m::RAG_DROPPED).increment(fitted.dropped as u64);
    }
    let summary = json!({
        "profile": profile.map(|p| p.name.clone()),
        "collection": spec.collection,
        "retrieved": got.chunks.len(),
        "used": fitted.used,
        "dropped": fitted.dropped,
        "prompt_tokens": fitted.prompt_tokens,
        "timings": {"embed_ms": got.embed_ms, "search_ms": got.search_ms, "prompt_ms": prompt_ms},
    });
    Ok(Fitted {
        messages: fitted.messages,
        used: fitted.used,
        chunks: got.chunks,
        summary,
    })
}
