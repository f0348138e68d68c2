//! The objects of OpenAI's Files and Vector Stores API, field for field
//! (as the official SDKs read them), and what the store keeps of each.
//! Each is stored as a record of its own kind (see [`super::store`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `purpose` values this gateway accepts for an upload.
pub const PURPOSES: [&str; 2] = ["assistants", "user_data"];

/// `{"object": "file", ...}`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileObject {
    pub id: String,
    pub object: String,
    pub bytes: u64,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub filename: String,
    pub purpose: String,
    /// Deprecated in OpenAI's API, still sent: always `processed` here
    /// (the bytes are durable before the object is returned).
    pub status: String,
    pub status_details: Option<String>,
}

/// `{"anchor": "created_at" | "last_active_at", "days"}` on stores;
/// files use `{"anchor": "created_at", "seconds"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExpiresAfter {
    pub anchor: String,
    pub days: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileCounts {
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub total: u64,
}

impl FileCounts {
    pub fn add(&mut self, status: FileStatus) {
        match status {
            FileStatus::InProgress => self.in_progress += 1,
            FileStatus::Completed => self.completed += 1,
            FileStatus::Failed => self.failed += 1,
            FileStatus::Cancelled => self.cancelled += 1,
        }
        self.total += 1;
    }
}

/// `{"object": "vector_store", ...}`. `file_counts`, `usage_bytes` and
/// `status` are computed from the store's files when it is read, so two
/// gateway replicas attaching files never race on a counter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VectorStore {
    pub id: String,
    pub object: String,
    pub created_at: u64,
    pub name: String,
    pub usage_bytes: u64,
    pub file_counts: FileCounts,
    pub status: String,
    pub expires_after: Option<ExpiresAfter>,
    pub expires_at: Option<u64>,
    pub last_active_at: Option<u64>,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl FileStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "in_progress" => Self::InProgress,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastError {
    /// `server_error`, `unsupported_file` or `invalid_file`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct StaticChunking {
    pub max_chunk_size_tokens: u64,
    pub chunk_overlap_tokens: u64,
}

/// As returned: `auto` is resolved to the static sizes it stands for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkingStrategy {
    #[serde(rename = "type")]
    pub kind: StaticTag,
    #[serde(rename = "static")]
    pub sizes: StaticChunking,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StaticTag {
    Static,
}

/// `{"object": "vector_store.file", ...}`: a file attached to a store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VectorStoreFile {
    pub id: String,
    pub object: String,
    pub usage_bytes: u64,
    pub created_at: u64,
    pub vector_store_id: String,
    pub status: FileStatus,
    pub last_error: Option<LastError>,
    pub chunking_strategy: ChunkingStrategy,
    pub attributes: Map<String, Value>,
}

/// `{"object": "vector_store.files_batch", ...}`. Its counts are computed
/// from its files' records when read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileBatch {
    pub id: String,
    pub object: String,
    pub created_at: u64,
    pub vector_store_id: String,
    pub status: FileStatus,
    pub file_counts: FileCounts,
}

/// `{"object": "list", "data", "first_id", "last_id", "has_more"}`
#[derive(Debug, Clone, Serialize)]
pub struct ListPage<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// `{"id", "object", "deleted": true}`
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}

/// One hit of `POST /v1/vector_stores/{id}/search`.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub file_id: String,
    pub filename: String,
    pub score: f32,
    pub attributes: Map<String, Value>,
    pub content: Vec<TextPart>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TextPart {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchPage {
    pub object: &'static str,
    pub search_query: Vec<String>,
    pub data: Vec<SearchHit>,
    pub has_more: bool,
    pub next_page: Option<String>,
}
