//! The runner's error type, mapped once to a gRPC status in `grpc.rs`.

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The caller sent something invalid; the message says what and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// Queue full: retry after the runner's estimate of when a slot frees.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: std::time::Duration,
    },
    /// The model file is missing, damaged or unsupported (start-up only).
    #[error("{0}")]
    Model(String),
    /// Inference failed: not the caller's fault.
    #[error("inference error: {0}")]
    Internal(String),
}

impl GenError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    /// A short, stable name for the kind (a span's `error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "invalid_argument",
            Self::Overloaded { .. } => "overloaded",
            Self::Model(_) => "model",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<candle_core::Error> for GenError {
    fn from(e: candle_core::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

pub type Result<T, E = GenError> = std::result::Result<T, E>;
