//! `LlmStage` over llm-runner replicas (`ragmesh.v1.LlmRunner`).
//!
//! A generation is bound to a replica once its first delta arrives: a
//! replica that refuses (down, queue full) before that is replaced by
//! another, invisibly to the caller. A replica lost mid-stream ends the
//! stream with an error event: tokens already sent cannot be taken back,
//! and a silent restart elsewhere would repeat them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use ragmesh_llm_runner::generator::TokenLogprob;
use ragmesh_llm_runner::{
    CallDelta, Event, FinishReason, GenError, GenerateRequest, Input, contract,
};
use ragmesh_proto::v1 as pb;
use ragmesh_proto::v1::llm_runner_client::LlmRunnerClient;
use tonic::{Code, Status};

use super::pool::{InFlight, Pool, PoolConfig, Probe, Routing};
use crate::error::{ApiResult, from_status};
use crate::metrics::WAITING_FOR_REPLICA;
use crate::stages::LlmStage;

pub struct RemoteRunner {
    pool: Arc<Pool>,
    model_id: String,
    /// 0 until a replica has described the model (a standby pool).
    context_length: AtomicUsize,
    /// The replicas' contract version (`u32::MAX` until one has said):
    /// response formats and tools go only to runners that read them.
    contract: AtomicU32,
    /// A pool that may be scaled to zero: how long a request waits for a
    /// replica to come up (`None`: replicas were there at start-up).
    standby: Option<Duration>,
}

/// Polls `Load` for least-outstanding balancing across gateways.
fn load_probe() -> Probe {
    Arc::new(|ch| {
        Box::pin(async move {
            let l = LlmRunnerClient::new(ch)
                .load(pb::LoadRequest {})
                .await?
                .into_inner();
            Ok(Some((
                (l.waiting + l.running) as usize,
                l.max_sequences as usize,
            )))
        })
    })
}

impl RemoteRunner {
    /// Starts the pool and waits up to `wait` for a replica to describe
    /// the model (pods of a mesh may start in any order).
    pub async fn connect(cfg: PoolConfig, wait: Duration) -> anyhow::Result<Self> {
        let pool = Pool::start(cfg, load_probe()).await?;
        let info = super::wait_for(&pool, wait, |ch| async move {
            LlmRunnerClient::new(ch)
                .info(pb::RunnerInfoRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await?;
        tracing::info!(model = %info.model_id, replicas = pool.replicas().len(), "llm-runner replicas connected");
        Ok(Self {
            pool,
            model_id: info.model_id,
            context_length: AtomicUsize::new(info.context_length as usize),
            contract: AtomicU32::new(info.contract_version),
            standby: None,
        })
    }

    /// A pool that may have no replica now (scaled to zero): starts at
    /// once under the configured `name`; each request waits up to `wait`
    /// for a replica, counted in [`WAITING_FOR_REPLICA`].
    pub async fn standby(cfg: PoolConfig, name: String, wait: Duration) -> anyhow::Result<Self> {
        let pool = Pool::start(cfg, load_probe()).await?;
        tracing::info!(model = %name, replicas = pool.replicas().len(), wait_s = wait.as_secs(), "llm-runner pool on standby (may scale to zero)");
        metrics::gauge!(WAITING_FOR_REPLICA, "model" => name.clone()).set(0.0);
        Ok(Self {
            pool,
            model_id: name,
            context_length: AtomicUsize::new(0),
            contract: AtomicU32::new(u32::MAX),
            standby: Some(wait),
        })
    }
}

fn chat_pb(msgs: &[(String, String)]) -> pb::ChatMessages {
    contract::chat_pb(msgs, &Default::default())
}

fn request_pb(r: GenerateRequest) -> pb::GenerateRequest {
    let mut out = pb::GenerateRequest::default();
    contract::constraints_pb(&r, &mut out);
    let s = r.sampling;
    pb::GenerateRequest {
        model: String::new(),
        input: Some(match r.input {
            Input::Chat(m) => pb::generate_request::Input::Chat(contract::chat_pb(&m, &r.history)),
            Input::Prompt(p) => pb::generate_request::Input::Prompt(p),
        }),
        sampling: Some(pb::SamplingParams {
            temperature: Some(s.temperature),
            top_p: Some(s.top_p),
            top_k: Some(u32::try_from(s.top_k).unwrap_or(u32::MAX)),
            seed: s.seed,
            frequency_penalty: Some(s.frequency_penalty),
            presence_penalty: Some(s.presence_penalty),
            repetition_penalty: Some(s.repetition_penalty),
        }),
        // the gateway validated max_tokens >= 0; beyond u32 the runner's
        // own window check answers
        max_tokens: r
            .max_tokens
            .map(|m| u32::try_from(m.max(0)).unwrap_or(u32::MAX)),
        stop: r.stop,
        logprobs: r.logprobs,
        top_logprobs: r.top_logprobs,
        request_id: r.request_id,
        ignore_eos: r.ignore_eos,
        stop_on_repeat: r.stop_on_repeat,
        cache_salt: r.cache_salt,
        ..out
    }
}

fn gen_error(s: Status) -> GenError {
    let msg = s.message().to_owned();
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange => GenError::InvalidArgument(msg),
        Code::ResourceExhausted => GenError::Overloaded {
            retry_after: crate::error::status_retry_after(&s).unwrap_or(Duration::from_secs(1)),
            message: msg,
        },
        _ => GenError::Internal(format!("llm-runner: {msg}")),
    }
}

/// The events one delta carries.
fn events_of(d: pb::GenerateDelta) -> (Vec<Event>, bool) {
    let mut out = Vec::with_capacity(2);
    if !d.text.is_empty() || !d.token_ids.is_empty() || !d.tool_calls.is_empty() {
        out.push(Event::Delta {
            tool_calls: d
                .tool_calls
                .into_iter()
                .map(|c| CallDelta {
                    index: c.index,
                    name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
            text: d.text,
            token_ids: d.token_ids,
            logprobs: d
                .logprobs
                .into_iter()
                .map(|l| TokenLogprob {
                    token: l.token_id,
                    text: l.token,
                    logprob: l.logprob,
                    top: l
                        .top
                        .into_iter()
                        .map(|t| (t.token_id, t.token, t.logprob))
                        .collect(),
                })
                .collect(),
        });
    }
    let finish = match pb::FinishReason::try_from(d.finish_reason) {
        Ok(pb::FinishReason::Stop) => Some(FinishReason::Stop),
        Ok(pb::FinishReason::Length) => Some(FinishReason::Length),
        Ok(pb::FinishReason::ToolCalls) => Some(FinishReason::ToolCalls),
        _ => None,
    };
    let done = finish.is_some();
    if let Some(finish) = finish {
        let u = d.usage.unwrap_or_default();
        out.push(Event::Done {
            finish,
            prompt_tokens: u.prompt_tokens as usize,
            completion_tokens: u.completion_tokens as usize,
            cached_tokens: u.cached_tokens as usize,
        });
    }
    (out, done)
}

fn relay(
    slot: InFlight,
    first: Option<pb::GenerateDelta>,
    mut stream: tonic::Streaming<pb::GenerateDelta>,
) -> BoxStream<'static, Event> {
    async_stream::stream! {
        // holds the replica's in-flight count until the stream ends
        let slot = slot;
        let mut next = first;
        loop {
            let Some(delta) = next else {
                yield Event::Error(GenError::Internal(format!(
                    "llm-runner {} ended the stream without finishing",
                    slot.replica().addr
                )));
                break;
            };
            let (events, done) = events_of(delta);
            for e in events {
                yield e;
            }
            if done {
                break;
            }
            next = match stream.message().await {
                Ok(m) => m,
                Err(s) => {
                    yield Event::Error(gen_error(Status::new(
                        s.code(),
                        format!("replica {} failed mid-stream: {}", slot.replica().addr, s.message()),
                    )));
                    break;
                }
            };
        }
    }
    .boxed()
}

/// A connection that broke before the first delta (a replica killed while
/// it read the prompt) surfaces from the transport with whatever code h2's
/// error maps to, often UNKNOWN. Nothing reached the client and a
/// generation has no side effects, so it is UNAVAILABLE: the pool moves the
/// call to another replica. Statuses the runner itself sent (no transport
/// error behind them) keep their code.
fn lost_is_unavailable(s: Status) -> Status {
    use std::error::Error;
    if s.code() == Code::Unavailable || s.source().is_none() {
        return s;
    }
    Status::unavailable(format!(
        "connection lost before the first token: {}",
        s.message()
    ))
}

impl RemoteRunner {
    /// A standby pool's wait for a replica (bounded, counted in the gauge
    /// that wakes the pool); it also learns the model's context window.
    async fn wait_for_replica(&self) -> ApiResult<()> {
        let Some(wait) = self.standby else {
            return Ok(());
        };
        let gauge = metrics::gauge!(WAITING_FOR_REPLICA, "model" => self.model_id.clone());
        gauge.increment(1.0);
        let info = super::wait_for(&self.pool, wait, |ch| async move {
            LlmRunnerClient::new(ch)
                .info(pb::RunnerInfoRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await;
        gauge.decrement(1.0);
        match info {
            Ok(info) => {
                self.context_length
                    .store(info.context_length as usize, Relaxed);
                self.contract.store(info.contract_version, Relaxed);
                Ok(())
            }
            // the pool was woken: a replica may come up within another
            // wait (the operator sets it to the model's cold start)
            Err(e) => Err(crate::error::unavailable(
                format!(
                    "model {}: no replica came up within {} s (the pool may be scaled to zero): {e}",
                    self.model_id,
                    wait.as_secs()
                ),
                wait.min(Duration::from_secs(60)),
            )),
        }
    }

    /// Runs a call; on a standby pool, a call that found no replica
    /// (UNAVAILABLE: the pool went back to zero, its old addresses are
    /// gone) waits for one and is tried once more.
    async fn with_standby<T, F, Fut>(&self, f: F) -> Result<T, Status>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        match f().await {
            Err(s) if s.code() == Code::Unavailable && self.standby.is_some() => {
                self.wait_for_replica().await.map_err(|e| {
                    // keep the wait as the Retry-After the caller sees
                    let secs = e.retry_after().map_or(1, crate::error::retry_secs);
                    let mut s = Status::unavailable(e.into_message());
                    if let Ok(v) = secs.to_string().parse() {
                        s.metadata_mut().insert("retry-after", v);
                    }
                    s
                })?;
                f().await
            }
            other => other,
        }
    }
}

#[async_trait]
impl LlmStage for RemoteRunner {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn context_length(&self) -> usize {
        self.context_length.load(Relaxed)
    }

    async fn ready(&self) -> ApiResult<()> {
        if self.standby.is_some() && self.context_length.load(Relaxed) == 0 {
            self.wait_for_replica().await?;
        }
        Ok(())
    }

    async fn count_tokens(&self, input: &Input) -> ApiResult<usize> {
        let input = match input {
            Input::Chat(m) => pb::count_tokens_request::Input::Chat(chat_pb(m)),
            Input::Prompt(p) => pb::count_tokens_request::Input::Text(p.clone()),
        };
        let r = self
            .with_standby(|| {
                self.pool.call(|ch| {
                    let input = input.clone();
                    async move {
                        LlmRunnerClient::new(ragmesh_telemetry::otel::traced(ch))
                            .count_tokens(pb::CountTokensRequest {
                                model: String::new(),
                                input: Some(input),
                            })
                            .await
                    }
                })
            })
            .await
            .map_err(from_status)?;
        Ok(r.into_inner().count as usize)
    }

    async fn generate(
        &self,
        req: GenerateRequest,
        route: &crate::stages::Route,
    ) -> ApiResult<BoxStream<'static, Event>> {
        let key = match self.pool.routing {
            Routing::LeastOutstanding => None,
            Routing::Prefix => route.prefix,
            Routing::Session => route.session,
        };
        // what the request uses of contract version 2, named by its field
        let v2 = contract::needs_v2(&req).then(|| {
            if req.tools.is_some() || !req.history.is_empty() {
                "tools"
            } else {
                "response_format"
            }
        });
        let msg = request_pb(req);
        // bound to a replica once its first delta arrives; before that the
        // pool may move the call
        let ((stream, first), slot) = self
            .with_standby(|| {
                self.pool.call_routed(key, |ch| {
                    let msg = msg.clone();
                    // read per attempt: a standby pool learns its
                    // replicas' version when one comes up
                    let version = self.contract.load(Relaxed);
                    let model = &self.model_id;
                    async move {
                        if let Some(refused) = too_old(v2, version, model) {
                            return Err(refused);
                        }
                        let mut stream = LlmRunnerClient::new(ragmesh_telemetry::otel::traced(ch))
                            .generate(msg)
                            .await
                            .map_err(lost_is_unavailable)?
                            .into_inner();
                        let first = stream.message().await.map_err(lost_is_unavailable)?;
                        Ok((stream, first))
                    }
                })
            })
            .await
            .map_err(from_status)?;
        Ok(relay(slot, first, stream))
    }
}

/// The refusal of a request that uses contract version 2 (`field`: the
/// first such field) by replicas that speak `version`: they would ignore
/// the fields and answer unconstrained.
fn too_old(field: Option<&str>, version: u32, model: &str) -> Option<Status> {
    let field = field.filter(|_| version < contract::CONTRACT_VERSION)?;
    Some(Status::failed_precondition(format!(
        "{field}: model {model}'s llm-runner replicas speak contract version {version}, which predates response formats and tools (version {}): upgrade them",
        contract::CONTRACT_VERSION
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constrained_requests_skip_old_runners() {
        let s = too_old(Some("tools"), 0, "m").map(|s| s.message().to_owned());
        assert!(
            s.as_deref()
                .is_some_and(|m| m.starts_with("tools: model m") && m.contains("version 0")),
            "{s:?}"
        );
        assert!(too_old(Some("response_format"), contract::CONTRACT_VERSION, "m").is_none());
        assert!(
            too_old(None, 0, "m").is_none(),
            "a plain request goes to any runner"
        );
        // the gateway's answer names the field
        let e = crate::error::from_status(
            too_old(Some("response_format"), 1, "m").unwrap_or_else(|| Status::ok("")),
        );
        assert_eq!(e.to_json()["error"]["param"], "response_format");
    }

    #[test]
    fn a_finishing_delta_yields_text_then_done() {
        let (ev, done) = events_of(pb::GenerateDelta {
            text: "hi".into(),
            token_ids: vec![5],
            finish_reason: pb::FinishReason::Length as i32,
            usage: Some(pb::GenerateUsage {
                prompt_tokens: 3,
                completion_tokens: 1,
                cached_tokens: 2,
            }),
            ..Default::default()
        });
        assert!(done);
        assert!(matches!(&ev[0], Event::Delta { text, .. } if text == "hi"));
        assert!(matches!(
            ev[1],
            Event::Done {
                finish: FinishReason::Length,
                prompt_tokens: 3,
                completion_tokens: 1,
                cached_tokens: 2
            }
        ));
        let (ev, done) = events_of(pb::GenerateDelta::default());
        assert!(!done && ev.is_empty());
    }
}
