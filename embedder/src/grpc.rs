//! gRPC transport: `ragmesh.v1.Embedder` over the core.

use ragmesh_proto::v1::embedder_server::{Embedder as EmbedderRpc, EmbedderServer};
use ragmesh_proto::v1::{
    EmbedRequest, EmbedResponse, EmbedUsage, EmbedderInfoRequest, EmbedderInfoResponse, Embedding,
    TokenizerRequest, TokenizerResponse,
};
use ragmesh_telemetry::otel::genai;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::embedder::{EmbedOptions, Embedder};
use crate::error::EmbedError;
use crate::metrics as m;

pub struct EmbedderGrpc {
    embedder: Embedder,
}

impl EmbedderGrpc {
    pub fn server(embedder: Embedder, max_message_bytes: usize) -> EmbedderServer<Self> {
        EmbedderServer::new(Self { embedder })
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(usize::MAX)
    }
}

impl From<EmbedError> for Status {
    fn from(e: EmbedError) -> Self {
        let msg = e.to_string();
        match e {
            EmbedError::Invalid { .. } => Status::invalid_argument(msg),
            EmbedError::UnknownModel(_) => Status::not_found(msg),
            EmbedError::Overloaded { retry_after, .. } => {
                let mut s = Status::resource_exhausted(msg);
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                if let Ok(v) = secs.to_string().parse() {
                    s.metadata_mut().insert("retry-after", v);
                }
                s
            }
            EmbedError::Unavailable => Status::unavailable(msg),
            EmbedError::ModelFile { .. } => Status::failed_precondition(msg),
            EmbedError::Backend(_) => Status::internal(msg),
        }
    }
}

#[tonic::async_trait]
impl EmbedderRpc for EmbedderGrpc {
    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        let req = request.into_inner();
        let model = &self.embedder.info().id;
        let span = tracing::info_span!("gen_ai", otel.name = %format!("embeddings {model}"));
        genai::set(&span, genai::OPERATION, "embeddings");
        genai::set(&span, genai::PROVIDER, genai::PROVIDER_RAGMESH);
        genai::set(&span, genai::REQUEST_MODEL, model.clone());
        genai::set(&span, "ragmesh.inputs", req.texts.len() as i64);
        let result = async {
            self.embedder.check_model(&req.model)?;
            let opts = EmbedOptions {
                normalize: req.normalize,
                truncate: req.truncate,
            };
            self.embedder.embed(req.texts, opts).await
        }
        .instrument(span.clone())
        .await
        .map_err(Status::from);
        match &result {
            Ok(out) => {
                genai::set(&span, genai::RESPONSE_MODEL, model.clone());
                genai::set(&span, genai::INPUT_TOKENS, out.prompt_tokens as i64);
                let dims = out.vectors.first().map_or(0, Vec::len);
                genai::set(&span, genai::EMBEDDING_DIMENSIONS, dims as i64);
            }
            Err(s) => genai::error(&span, genai::grpc_code(s.code())),
        }
        let code = match &result {
            Ok(_) => "Ok".to_owned(),
            Err(s) => format!("{:?}", s.code()),
        };
        metrics::counter!(m::REQUESTS, "transport" => "grpc", "status" => code).increment(1);
        let out = result?;
        let tokens = u32::try_from(out.prompt_tokens).unwrap_or(u32::MAX);
        Ok(Response::new(EmbedResponse {
            embeddings: out
                .vectors
                .into_iter()
                .map(|values| Embedding { values })
                .collect(),
            usage: Some(EmbedUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            }),
            model: self.embedder.info().id.clone(),
        }))
    }

    async fn info(
        &self,
        _request: Request<EmbedderInfoRequest>,
    ) -> Result<Response<EmbedderInfoResponse>, Status> {
        let i = self.embedder.info();
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(Response::new(EmbedderInfoResponse {
            model_id: i.id.clone(),
            dimensions: n(i.dims),
            max_input_tokens: n(i.max_input_tokens),
            pooling: i.pooling.into(),
            max_batch_tokens: n(i.max_batch_tokens),
            max_concurrent_requests: n(i.max_concurrent_requests),
        }))
    }

    async fn tokenizer(
        &self,
        _request: Request<TokenizerRequest>,
    ) -> Result<Response<TokenizerResponse>, Status> {
        Ok(Response::new(TokenizerResponse {
            tokenizer_json: self.embedder.tokenizer_json().to_vec(),
        }))
    }
}
