//! ragmesh embedder: sentence embeddings with candle.
//!
//! - core: [`Embedder`] (load a sentence-transformers directory, embed with
//!   dynamic batching) — knows no transport;
//! - transports: [`grpc`] (`ragmesh.v1.Embedder` + `grpc.health.v1`) and
//!   [`http`] (OpenAI `POST /v1/embeddings`, `/health`, `/metrics`);
//! - [`server`]: the binary's configuration and serve loop.

// links the static OpenBLAS behind ndarray's sgemm
#[cfg(feature = "openblas")]
use ragmesh_blas as _;

mod batch;
mod bert;
mod counter;
mod embedder;
pub mod error;
pub mod grpc;
pub mod http;
mod linear;
pub mod metrics;
mod model;
mod pooling;
mod queue;
pub mod server;

pub use batch::BatchPolicy;
pub use counter::TokenCounter;
pub use embedder::{EmbedOptions, EmbedOutput, Embedder, EmbedderConfig, ModelInfo, model_matches};
pub use error::EmbedError;
pub use pooling::Pooling;
