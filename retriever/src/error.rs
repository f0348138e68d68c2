//! The retriever's error type, mapped once to a gRPC status in `grpc.rs`.

#[derive(Debug, thiserror::Error)]
pub enum RetrieverError {
    /// The caller sent something invalid; the message says what and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown collection (or one owned by another tenant: same answer, so
    /// existence never leaks across tenants).
    #[error("collection '{0}' not found")]
    NotFound(String),
    #[error("collection '{0}' already exists")]
    AlreadyExists(String),
    /// Another request is changing the same thing (e.g. creating or
    /// deleting the same collection): retry.
    #[error("{0}")]
    Conflict(String),
    /// A remote retriever could not be reached or refused for load: retry.
    #[error("retriever unavailable: {0}")]
    Unavailable(String),
    /// The storage engine failed: not the caller's fault. The text is for
    /// the log; [`crate::Retriever`] replaces it before it leaves the
    /// process, since engine messages name files under the data directory.
    #[error("storage error: {0}")]
    Backend(String),
}

impl RetrieverError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
}

pub type Result<T, E = RetrieverError> = std::result::Result<T, E>;
