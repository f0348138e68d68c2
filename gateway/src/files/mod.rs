//! OpenAI's Files and Vector Stores API, as a core with plain types (the
//! HTTP handlers are in [`crate::openai::files`] and
//! [`crate::openai::vector_stores`]).
//!
//! - Where things live: file bytes and the file, vector-store, attached
//!   file and batch objects are records in the retriever's object store
//!   ([`store`]); every gateway replica reads the same ones, so the
//!   gateway stays stateless. A vector store is also a retriever
//!   collection named by its id, holding the chunks of its files with the
//!   file id as document id: `rag: {collection: "vs_…"}` and
//!   `/v1/collections` work on it as on any collection.
//! - Attaching a file is asynchronous as in OpenAI ([`attach`]): the
//!   attached-file record is written `in_progress` and acknowledged, then
//!   a background task reads the bytes ([`extract`]), ingests them
//!   ([`crate::ingest::ingest`]) and sets `completed` or `failed` with
//!   `last_error`. The record survives a crash; a gateway that starts
//!   resumes every `in_progress` one ([`attach::resume`]).
//! - Counters (`file_counts`, `usage_bytes`, a store's `status`) are
//!   computed from the attached-file records when read, never kept, so
//!   concurrent attaches cannot make them drift.

pub mod attach;
pub mod extract;
pub mod ids;
pub mod search;
pub mod store;
pub mod stores;
pub mod types;
pub mod uploads;

use crate::error::{ApiError, not_found};

pub fn not_found_file(id: &str) -> ApiError {
    not_found(
        format!("No file found with id '{}'", clip(id)),
        Some("file_id"),
        "not_found",
    )
}

pub fn not_found_store(id: &str) -> ApiError {
    not_found(
        format!("No vector store found with id '{}'", clip(id)),
        Some("vector_store_id"),
        "not_found",
    )
}

/// An id echoed in an error, cut to a sane length.
fn clip(id: &str) -> String {
    id.chars().take(80).collect()
}
