//! gRPC transport: `ragmesh.v1.LlmRunner` over the [`Generator`].
//! `Generate` is a server stream; when the client goes away, tonic drops
//! the stream, which drops the request's receiver, and the engine frees
//! the sequence at its next step.

use std::pin::Pin;

use futures_core::Stream;
use ragmesh_proto::v1 as pb;
use ragmesh_proto::v1::llm_runner_server::{LlmRunner, LlmRunnerServer};
use ragmesh_telemetry::otel::genai;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::GenError;
use crate::generator::{Event, FinishReason, Generator};
use crate::request::{GenerateRequest, Input};
use crate::sampling::SamplingParams;

pub struct RunnerGrpc {
    core: Generator,
}

impl RunnerGrpc {
    pub fn server(core: Generator, max_message_bytes: usize) -> LlmRunnerServer<Self> {
        LlmRunnerServer::new(Self { core }).max_decoding_message_size(max_message_bytes)
    }

    fn check_model(&self, model: &str) -> Result<(), Status> {
        if model.is_empty() || model == self.core.info().model_id {
            Ok(())
        } else {
            Err(Status::not_found(format!(
                "model '{model}' is not served here (this runner serves '{}')",
                self.core.info().model_id
            )))
        }
    }
}

impl From<GenError> for Status {
    fn from(e: GenError) -> Self {
        let msg = e.to_string();
        match e {
            GenError::InvalidArgument(_) => Status::invalid_argument(msg),
            GenError::Overloaded { retry_after, .. } => {
                let mut s = Status::resource_exhausted(msg);
                // whole seconds, rounded up, as HTTP's Retry-After
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                if let Ok(v) = secs.to_string().parse() {
                    s.metadata_mut().insert("retry-after", v);
                }
                s
            }
            GenError::Model(_) => Status::failed_precondition(msg),
            GenError::Internal(_) => Status::internal(msg),
        }
    }
}

fn chat_input(c: pb::ChatMessages) -> Input {
    Input::Chat(crate::contract::chat_from_pb(c).0)
}

fn input_of(chat: Option<pb::ChatMessages>, text: Option<String>) -> Result<Input, Status> {
    match (chat, text) {
        (Some(c), _) => Ok(chat_input(c)),
        (None, Some(t)) => Ok(Input::Prompt(t)),
        (None, None) => Err(Status::invalid_argument("input is required: chat or text")),
    }
}

fn sampling(s: Option<pb::SamplingParams>) -> SamplingParams {
    let d = SamplingParams::default();
    let Some(s) = s else { return d };
    SamplingParams {
        temperature: s.temperature.unwrap_or(d.temperature),
        top_p: s.top_p.unwrap_or(d.top_p),
        top_k: s.top_k.unwrap_or(0) as usize,
        seed: s.seed,
        frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
        presence_penalty: s.presence_penalty.unwrap_or(0.0),
        repetition_penalty: s.repetition_penalty.unwrap_or(1.0),
    }
}

type DeltaStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateDelta, Status>> + Send>>;

fn delta_of(ev: Event) -> Result<pb::GenerateDelta, Status> {
    match ev {
        Event::Delta {
            text,
            token_ids,
            logprobs,
            tool_calls,
        } => Ok(pb::GenerateDelta {
            tool_calls: tool_calls
                .into_iter()
                .map(|c| pb::ToolCallDelta {
                    index: c.index,
                    name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
            text,
            token_ids,
            logprobs: logprobs
                .into_iter()
                .map(|l| pb::TokenLogprob {
                    token_id: l.token,
                    token: l.text,
                    logprob: l.logprob,
                    top: l
                        .top
                        .into_iter()
                        .map(|(id, t, lp)| pb::TopLogprob {
                            token_id: id,
                            token: t,
                            logprob: lp,
                        })
                        .collect(),
                })
                .collect(),
            finish_reason: pb::FinishReason::Unspecified as i32,
            usage: None,
        }),
        Event::Done {
            finish,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
        } => Ok(pb::GenerateDelta {
            finish_reason: match finish {
                FinishReason::Stop => pb::FinishReason::Stop as i32,
                FinishReason::Length => pb::FinishReason::Length as i32,
                FinishReason::ToolCalls => pb::FinishReason::ToolCalls as i32,
            },
            usage: Some(pb::GenerateUsage {
                prompt_tokens: prompt_tokens as u32,
                completion_tokens: completion_tokens as u32,
                cached_tokens: cached_tokens as u32,
            }),
            ..Default::default()
        }),
        Event::Error(e) => Err(e.into()),
    }
}

#[tonic::async_trait]
impl LlmRunner for RunnerGrpc {
    type GenerateStream = DeltaStream;

    async fn generate(
        &self,
        req: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let r = req.into_inner();
        self.check_model(&r.model)?;
        let (format, tools) = crate::contract::constraints_from_pb(&r)?;
        let mut history = crate::tools::ToolHistory::default();
        let input = match r.input {
            Some(pb::generate_request::Input::Chat(c)) => {
                let (turns, h) = crate::contract::chat_from_pb(c);
                history = h;
                Input::Chat(turns)
            }
            Some(pb::generate_request::Input::Prompt(p)) => Input::Prompt(p),
            None => {
                return Err(Status::invalid_argument(
                    "input is required: chat or prompt",
                ));
            }
        };
        let g = GenerateRequest {
            input,
            sampling: sampling(r.sampling),
            max_tokens: r.max_tokens.map(i64::from),
            stop: r.stop,
            logprobs: r.logprobs,
            top_logprobs: r.top_logprobs,
            request_id: r.request_id,
            ignore_eos: r.ignore_eos,
            stop_on_repeat: r.stop_on_repeat,
            cache_salt: r.cache_salt,
            format,
            tools,
            history,
        };
        let span = crate::trace::generate_span(&g, &self.core.info().model_id);
        let mut rx = self
            .core
            .generate_blocking(g)
            .instrument(span.clone())
            .await
            .inspect_err(|e| genai::error(&span, e.kind()))?;
        // the span lives with the stream: it ends with the last token
        let stream = async_stream::stream! {
            while let Some(ev) = rx.recv().await {
                crate::trace::record_event(&span, &ev);
                let done = matches!(ev, Event::Done { .. } | Event::Error(_));
                yield delta_of(ev);
                if done {
                    break;
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn tokenize(
        &self,
        req: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        let r = req.into_inner();
        self.check_model(&r.model)?;
        let (chat, text) = match r.input {
            Some(pb::tokenize_request::Input::Chat(c)) => (Some(c), None),
            Some(pb::tokenize_request::Input::Text(t)) => (None, Some(t)),
            None => (None, None),
        };
        let input = input_of(chat, text)?;
        let ids = self
            .core
            .tokenize_blocking(input, r.add_special_tokens)
            .await?;
        let tok = self.core.tokenizer();
        let tokens = ids.iter().map(|&i| tok.token_text(i)).collect();
        Ok(Response::new(pb::TokenizeResponse {
            token_ids: ids,
            tokens,
        }))
    }

    async fn count_tokens(
        &self,
        req: Request<pb::CountTokensRequest>,
    ) -> Result<Response<pb::CountTokensResponse>, Status> {
        let r = req.into_inner();
        self.check_model(&r.model)?;
        let (chat, text) = match r.input {
            Some(pb::count_tokens_request::Input::Chat(c)) => (Some(c), None),
            Some(pb::count_tokens_request::Input::Text(t)) => (None, Some(t)),
            None => (None, None),
        };
        let input = input_of(chat, text)?;
        let n = self.core.tokenize_blocking(input, true).await?.len();
        Ok(Response::new(pb::CountTokensResponse { count: n as u32 }))
    }

    async fn info(
        &self,
        _req: Request<pb::RunnerInfoRequest>,
    ) -> Result<Response<pb::RunnerInfoResponse>, Status> {
        let i = self.core.info();
        Ok(Response::new(pb::RunnerInfoResponse {
            model_id: i.model_id.clone(),
            architecture: i.architecture.clone(),
            context_length: i.context_length as u32,
            vocab_size: i.vocab_size as u32,
            max_sequences: i.max_sequences as u32,
            max_batched_tokens: i.max_batched_tokens as u32,
            has_chat_template: i.has_chat_template,
            contract_version: crate::contract::CONTRACT_VERSION,
            template_has_tools: i.template_has_tools,
        }))
    }

    async fn load(
        &self,
        _req: Request<pb::LoadRequest>,
    ) -> Result<Response<pb::LoadResponse>, Status> {
        let l = self.core.load_figures();
        Ok(Response::new(pb::LoadResponse {
            waiting: l.waiting as u32,
            running: l.running as u32,
            max_sequences: l.max_sequences as u32,
            kv_tokens_used: l.kv_tokens_used as u64,
            kv_tokens_capacity: l.kv_tokens_capacity as u64,
            cached_blocks: l.cached_blocks as u64,
        }))
    }
}
