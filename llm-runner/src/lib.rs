//! ragmesh llm-runner: GGUF text generation on candle with continuous
//! batching.
//!
//! - core: [`Generator`] (validation, tokenization, admission) feeding one
//!   engine thread ([`scheduler`]) that batches every running sequence into
//!   each forward of the llama model ([`model`], [`linear`], [`attention`],
//!   [`kv`]);
//!   tokenizer and chat template come from the GGUF file ([`tokenizer`],
//!   [`template`]); [`sampling`] picks tokens and matches stop sequences;
//!   [`grammar`] masks the tokens a response format or a tool call does not
//!   allow, and [`tools`] renders tools and reads calls out of the output.
//! - transports: [`grpc`] (`ragmesh.v1.LlmRunner` + `grpc.health.v1`),
//!   `/health` and `/metrics` over HTTP ([`server`]).

// links the static OpenBLAS behind ndarray's sgemm
use ragmesh_blas as _;

pub mod attention;
pub mod closing;
pub mod contract;
pub mod error;
pub mod generator;
pub mod gguf;
pub mod grammar;
pub mod grpc;
pub mod kv;
pub mod linear;
pub mod logits;
pub mod math;
pub mod metrics;
pub mod model;
pub mod penalty;
pub mod prefix;
pub mod repeat;
pub mod request;
pub mod sampling;
pub mod scheduler;
pub mod server;
pub mod template;
pub mod tokenizer;
pub mod tools;
pub mod trace;

pub use error::{GenError, Result};
pub use generator::{Event, FinishReason, Generator, GeneratorConfig, Load, ModelInfo, Stats};
pub use request::{GenerateRequest, Input, OutputFormat};
pub use sampling::SamplingParams;
pub use tools::{CallDelta, FunctionTool, ToolCall, ToolChoice, ToolHistory, Tools};
