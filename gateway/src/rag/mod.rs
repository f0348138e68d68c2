//! Retrieval-augmented generation: chunking and ingest, profiles, prompt
//! templates with the context budget, query-time retrieval, filters.

pub mod chunk;
pub mod collections;
pub mod filter;
pub mod profile;
pub mod prompt;
pub mod retrieve;
