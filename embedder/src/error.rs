//! The embedder's error type. Transports map it once: `http.rs` to an
//! OpenAI-style JSON body with a status, `grpc.rs` to a `tonic::Status`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The caller sent something we will not process; the message names the
    /// field and the limit.
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<&'static str>,
    },
    /// A model id other than the served one.
    #[error("model '{0}' is not served here")]
    UnknownModel(String),
    /// The queue is full; retry after the embedder's mean request time.
    #[error("embedder overloaded: {limit} requests already queued or running")]
    Overloaded {
        limit: usize,
        retry_after: std::time::Duration,
    },
    /// A model file is missing or unreadable: raised at start-up only.
    #[error("cannot load model file {path}: {reason} (run: scripts/fetch-models.sh)")]
    ModelFile { path: PathBuf, reason: String },
    /// The forward pass failed: a bug or resource exhaustion, never the caller.
    #[error("embedding backend failed: {0}")]
    Backend(String),
    /// The batching worker has stopped (process shutting down).
    #[error("embedder is shutting down")]
    Unavailable,
}

impl EmbedError {
    pub fn invalid(message: impl Into<String>, param: &'static str) -> Self {
        Self::Invalid {
            message: message.into(),
            param: Some(param),
        }
    }
}

impl From<candle_core::Error> for EmbedError {
    fn from(e: candle_core::Error) -> Self {
        Self::Backend(e.to_string())
    }
}

pub type Result<T, E = EmbedError> = std::result::Result<T, E>;
