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
    /// Dropping the stream cancels the request.
    async fn generate(&self, req: GenerateRequest) -> ApiResult<BoxStream<'static, Event>>;
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
    async fn generate(&self, req: GenerateRequest) -> ApiResult<BoxStream<'static, Event>> {
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
