//! The gateway's view of the two model stages. Each is a trait so the
//! all-in-one host links the service core in-process while the mesh
//! gateway plugs in a gRPC client over replicas (`crate::mesh`) behind the
//! same calls; which one is configuration. (The retriever needs no trait
//! here: its own `Backend` trait already has the embedded engine, a Qdrant
//! cluster, and the mesh's remote retriever behind it.)

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use ragmesh_embedder::{EmbedOptions, Embedder};
use ragmesh_llm_runner::{Event, GenerateRequest, Generator, Input};

use crate::error::{ApiResult, from_gen};

/// Sentence embeddings.
#[async_trait]
pub trait EmbedStage: Send + Sync {
    fn model_id(&self) -> &str;
    fn dims(&self) -> usize;
    /// Longest input (tokens, specials included) the model reads.
    fn max_input_tokens(&self) -> usize;
    /// Tokens in `text` without specials or truncation (chunk sizing).
    fn count_tokens(&self, text: &str) -> usize;
    /// Accepts the served id, `org/id`, or "".
    fn accepts(&self, model: &str) -> bool;
    /// `(vectors, prompt_tokens)`, L2-normalised.
    async fn embed(&self, texts: Vec<String>) -> ApiResult<(Vec<Vec<f32>>, usize)>;
}

/// Text generation.
#[async_trait]
pub trait LlmStage: Send + Sync {
    fn model_id(&self) -> &str;
    /// Waits until the stage can serve: a runner pool that may be scaled
    /// to zero waits (bounded) for a replica. Everything else is ready.
    async fn ready(&self) -> ApiResult<()> {
        Ok(())
    }
    /// Context window in tokens.
    fn context_length(&self) -> usize;
    /// Prompt tokens `input` becomes (chat template applied).
    async fn count_tokens(&self, input: &Input) -> ApiResult<usize>;
    /// Starts generation; errors before the first token (validation,
    /// overload) come back here so the HTTP status can still say them.
    /// Dropping the stream cancels the request. `route` is what a pool
    /// of replicas may route by (an in-process runner ignores it).
    async fn generate(
        &self,
        req: GenerateRequest,
        route: &Route,
    ) -> ApiResult<BoxStream<'static, Event>>;
}

/// Routing keys of one generation, for a pool of runner replicas that
/// routes by prefix or by session (`mesh::pool::Routing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Route {
    /// A hash of the model name and the conversation's opening: its turns
    /// up to and including the first user turn (at most
    /// [`PREFIX_CHARS`] characters). Later turns append to the history, so
    /// every turn of a conversation has the same key, and conversations
    /// opening alike (one system prompt, one first question) share it.
    pub prefix: Option<u64>,
    /// A hash of the caller's session key (`x-session-id`,
    /// `safety_identifier` or `user`), when it sent one.
    pub session: Option<u64>,
}

/// Characters of the opening the prefix key covers at most: about the
/// first few hundred tokens.
pub const PREFIX_CHARS: usize = 1024;

impl Route {
    /// The keys of a conversation's `(role, text)` turns (a raw prompt is
    /// one turn with an empty role).
    pub fn of<'a>(
        model: &str,
        tenant: &str,
        turns: impl IntoIterator<Item = (&'a str, &'a str)>,
        session: Option<&str>,
    ) -> Self {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        model.hash(&mut h);
        let mut left = PREFIX_CHARS;
        for (role, text) in turns {
            if left == 0 {
                break;
            }
            role.hash(&mut h);
            let cut: String = text.chars().take(left).collect();
            left -= cut.chars().count();
            cut.hash(&mut h);
            if role == "user" {
                break;
            }
        }
        let session = session.filter(|s| !s.is_empty()).map(|s| {
            let mut h = DefaultHasher::new();
            // a session id is the caller's: two tenants' equal ids differ
            tenant.hash(&mut h);
            s.hash(&mut h);
            h.finish()
        });
        Self {
            prefix: Some(h.finish()),
            session,
        }
    }
}

pub struct LocalEmbedder(pub Embedder);

#[async_trait]
impl EmbedStage for LocalEmbedder {
    fn model_id(&self) -> &str {
        &self.0.info().id
    }
    fn dims(&self) -> usize {
        self.0.info().dims
    }
    fn max_input_tokens(&self) -> usize {
        self.0.info().max_input_tokens
    }
    fn count_tokens(&self, text: &str) -> usize {
        self.0.count_tokens(text)
    }
    fn accepts(&self, model: &str) -> bool {
        self.0.check_model(model).is_ok()
    }
    async fn embed(&self, texts: Vec<String>) -> ApiResult<(Vec<Vec<f32>>, usize)> {
        let out = self
            .0
            .embed(texts, EmbedOptions::default())
            .await
            .map_err(crate::error::from_embed)?;
        Ok((out.vectors, out.prompt_tokens))
    }
}

pub struct LocalRunner(pub Generator);

#[async_trait]
impl LlmStage for LocalRunner {
    fn model_id(&self) -> &str {
        &self.0.info().model_id
    }
    fn context_length(&self) -> usize {
        self.0.info().context_length
    }
    async fn count_tokens(&self, input: &Input) -> ApiResult<usize> {
        self.0
            .tokenize_blocking(input.clone(), true)
            .await
            .map(|t| t.len())
            .map_err(from_gen)
    }
    async fn generate(
        &self,
        req: GenerateRequest,
        _route: &Route,
    ) -> ApiResult<BoxStream<'static, Event>> {
        // the runner's own span, as in its gRPC server (the engine adds
        // its timings to it), held by the stream
        use tracing::Instrument;
        let span = ragmesh_llm_runner::trace::generate_span(&req, self.model_id());
        let rx = self
            .0
            .generate_blocking(req)
            .instrument(span.clone())
            .await
            .map_err(from_gen)?;
        Ok(tokio_stream_from(rx)
            .inspect(move |ev| ragmesh_llm_runner::trace::record_event(&span, ev))
            .boxed())
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> impl futures::Stream<Item = Event> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub type Embed = Arc<dyn EmbedStage>;
pub type Llm = Arc<dyn LlmStage>;

#[cfg(test)]
mod tests {
    use super::Route;

    fn t(v: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        v.to_vec()
    }

    #[test]
    fn a_conversation_keeps_its_prefix_key() {
        let opening = t(&[
            ("system", "You are the harbour master."),
            ("user", "Which pier?"),
        ]);
        let mut later = opening.clone();
        later.extend(t(&[("assistant", "Pier 3."), ("user", "And tomorrow?")]));
        let a = Route::of("m", "t1", opening.clone(), None);
        assert_eq!(a.prefix, Route::of("m", "t1", later, None).prefix);
        let other = t(&[
            ("system", "You are the harbour master."),
            ("user", "Which ship?"),
        ]);
        assert_ne!(a.prefix, Route::of("m", "t1", other, None).prefix);
        assert_ne!(
            a.prefix,
            Route::of("m2", "t1", opening.clone(), None).prefix
        );
        // sessions: per tenant, none when empty
        let s1 = Route::of("m", "t1", opening.clone(), Some("abc")).session;
        assert!(s1.is_some());
        assert_ne!(
            s1,
            Route::of("m", "t2", opening.clone(), Some("abc")).session
        );
        assert_eq!(Route::of("m", "t1", opening, Some("")).session, None);
    }
}
