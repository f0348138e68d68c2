//! `EmbedStage` over embedder replicas (`ragmesh.v1.Embedder`). Chunk
//! sizing needs the model's token counts many times per document, so the
//! tokenizer is fetched once (`Tokenizer` RPC) and counted locally.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ragmesh_embedder::TokenCounter;
use ragmesh_proto::v1 as pb;
use ragmesh_proto::v1::embedder_client::EmbedderClient;

use super::pool::{Pool, PoolConfig, Probe};
use crate::error::{ApiResult, from_status};
use crate::stages::EmbedStage;

pub struct RemoteEmbedder {
    pool: Arc<Pool>,
    model_id: String,
    dims: usize,
    max_input_tokens: usize,
    counter: TokenCounter,
}

/// Replicas answer `Info` (the embedder has no load RPC; this gateway's
/// own in-flight counts balance it).
fn info_probe() -> Probe {
    Arc::new(|ch| {
        Box::pin(async move {
            EmbedderClient::new(ch)
                .info(pb::EmbedderInfoRequest {})
                .await?;
            Ok(None)
        })
    })
}

impl RemoteEmbedder {
    pub async fn connect(cfg: PoolConfig, wait: Duration) -> anyhow::Result<Self> {
        let pool = Pool::start(cfg, info_probe()).await?;
        let info = super::wait_for(&pool, wait, |ch| async move {
            EmbedderClient::new(ch)
                .info(pb::EmbedderInfoRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await?;
        let json = super::wait_for(&pool, wait, |ch| async move {
            EmbedderClient::new(ch)
                .max_decoding_message_size(64 << 20)
                .tokenizer(pb::TokenizerRequest {})
                .await
                .map(|r| r.into_inner().tokenizer_json)
        })
        .await?;
        let counter = TokenCounter::from_json(&json)
            .map_err(|e| anyhow::anyhow!("embedder sent an unreadable tokenizer: {e}"))?;
        tracing::info!(model = %info.model_id, replicas = pool.replicas().len(), "embedder replicas connected");
        Ok(Self {
            pool,
            model_id: info.model_id,
            dims: info.dimensions as usize,
            max_input_tokens: info.max_input_tokens as usize,
            counter,
        })
    }
}

#[async_trait]
impl EmbedStage for RemoteEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }
    fn dims(&self) -> usize {
        self.dims
    }
    fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }
    fn count_tokens(&self, text: &str) -> usize {
        self.counter.count(text)
    }
    fn accepts(&self, model: &str) -> bool {
        ragmesh_embedder::model_matches(&self.model_id, model)
    }
    async fn embed(&self, texts: Vec<String>) -> ApiResult<(Vec<Vec<f32>>, usize)> {
        let r = self
            .pool
            .call(|ch| {
                let texts = texts.clone();
                async move {
                    EmbedderClient::new(ragmesh_telemetry::otel::traced(ch))
                        .max_decoding_message_size(256 << 20)
                        .embed(pb::EmbedRequest {
                            texts,
                            model: String::new(),
                            normalize: Some(true),
                            truncate: Some(true),
                        })
                        .await
                }
            })
            .await
            .map_err(from_status)?
            .into_inner();
        let tokens = r.usage.map(|u| u.prompt_tokens as usize).unwrap_or(0);
        Ok((r.embeddings.into_iter().map(|e| e.values).collect(), tokens))
    }
}
