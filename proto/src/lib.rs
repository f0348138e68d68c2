//! The ragmesh gRPC contracts, version 1.
//!
//! Three leaf services — `Embedder`, `Retriever`, `LlmRunner` — each also
//! serving `grpc.health.v1`. The gateway is their only client.

/// `ragmesh.v1`: messages, clients (`*_client`) and servers (`*_server`).
pub mod v1 {
    tonic::include_proto!("ragmesh.v1");
}
