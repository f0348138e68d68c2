//! ragmesh retriever: collections of chunks with dense and hybrid search.
//!
//! The core (`Retriever`) and its backends (embedded Qdrant Edge, a Qdrant
//! cluster) land with the retriever issue; this crate currently only fixes the
//! contract it will serve.

/// The gRPC contract this service implements.
pub use ragmesh_proto::v1::retriever_server::Retriever as RetrieverService;
