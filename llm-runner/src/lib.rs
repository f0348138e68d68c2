//! ragmesh llm-runner: GGUF text generation with continuous batching.
//!
//! The core (`Generator`), scheduler and transports land with the llm-runner
//! issue; this crate currently only fixes the contract it will serve.

/// The gRPC contract this service implements.
pub use ragmesh_proto::v1::llm_runner_server::LlmRunner as LlmRunnerService;
