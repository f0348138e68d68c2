//! ragmesh gateway: the OpenAI-compatible HTTP API and the RAG pipeline.
//!
//! - [`answer`]: the generation pipeline every front door calls (resolve,
//!   retrieve, fit the prompt, generate).
//! - [`openai`]: `/v1/chat/completions` (JSON and SSE), `/v1/completions`,
//!   `/v1/embeddings`, `/v1/models`; errors in OpenAI's shape ([`error`]).
//! - [`rag`]: collections and document ingest (token-aware chunking),
//!   profiles (a model name that retrieves), prompt templates with a
//!   context budget, citations.
//! - [`files`]: OpenAI's Files and Vector Stores (file bytes and records
//!   kept by the retriever's object store; a vector store is a collection).
//! - [`ingest`]: documents into a collection (chunk, embed, upsert).
//! - [`stages`]: the embedder and runner behind traits: in-process (the
//!   all-in-one) or gRPC clients over replicas ([`mesh`]).
//! - [`routing`]: model names → runner pools or external upstreams
//!   ([`upstream`], reqwest pass-through with fallback), aliases.
//! - [`auth`]: API keys → tenants, per-key rate and concurrency limits.
//! - [`server`]: the host; [`config`]: flags, env and the profile file.

pub mod answer;
pub mod auth;
pub mod body;
pub mod check;
pub mod config;
pub mod demo;
pub mod error;
pub mod fields;
pub mod files;
pub mod ingest;
pub mod json_scan;
pub mod listen;
pub mod mesh;
pub mod metrics;
pub mod openai;
pub mod origin;
#[cfg(test)]
mod props;
pub mod rag;
pub mod request_id;
pub mod responses;
pub mod routing;
pub mod server;
pub mod stages;
pub mod state;
pub mod trace;
pub mod upstream;
