//! ragmesh gateway: the OpenAI-compatible front door and the RAG orchestrator.
//!
//! It reaches each stage through a trait with an in-process and a remote
//! implementation. Today only the embedding stage exists (in-process, via
//! `ragmesh_embedder`); chat, retrieval and routing land with their issues.

pub use ragmesh_embedder::Embedder;
