//! Prometheus metric names of the retriever (documented in
//! `docs/operations.md`).

pub const REQUESTS: &str = "ragmesh_retriever_requests_total";
pub const SEARCH_SECONDS: &str = "ragmesh_retriever_search_duration_seconds";
pub const UPSERT_SECONDS: &str = "ragmesh_retriever_upsert_duration_seconds";
pub const UPSERTED_POINTS: &str = "ragmesh_retriever_upserted_points_total";

pub fn describe() {
    metrics::describe_counter!(REQUESTS, "gRPC requests, by method and status code.");
    metrics::describe_histogram!(SEARCH_SECONDS, "Search latency in the core.");
    metrics::describe_histogram!(UPSERT_SECONDS, "Upsert latency (until durable).");
    metrics::describe_counter!(UPSERTED_POINTS, "Points upserted.");
}
