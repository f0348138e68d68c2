//! ragmesh retriever: collections of chunks with dense and hybrid search,
//! isolated per tenant.
//!
//! - core: [`Retriever`] over one [`Backend`]: the embedded [`EdgeBackend`]
//!   (Qdrant Edge, the default) or [`QdrantBackend`] (a Qdrant server or
//!   cluster), chosen by `--backend`.
//! - [`objects`]: durable records and blobs (the gateway's Files and
//!   Vector Stores), served as `ragmesh.v1.Objects`.
//! - transports: [`grpc`] (`ragmesh.v1.Retriever` + `grpc.health.v1`);
//!   `/health` and `/metrics` over HTTP ([`server`]).

mod backend;
pub mod edge;
mod edge_index;
mod edge_shard;
mod error;
pub mod filter;
#[cfg(test)]
mod filter_props;
pub mod grpc;
pub mod metrics;
pub mod objects;
pub mod qdrant;
mod retriever;
pub mod server;
mod types;
mod validate;
pub mod wire;

pub use backend::Backend;
pub use edge::EdgeBackend;
pub use error::{Result, RetrieverError};
pub use qdrant::{QdrantBackend, QdrantConfig};
pub use retriever::Retriever;
pub use types::{
    Chunk, CollectionInfo, Condition, Distance, Fusion, MetaFilter, ScoredChunk, SearchQuery,
};
pub use validate::{MAX_BATCH, MAX_TOP_K};
