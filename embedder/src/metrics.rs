//! Prometheus metrics: names are part of the API (documented in
//! `docs/operations.md`), so change them only with the docs and dashboards.

use metrics_exporter_prometheus::PrometheusHandle;

pub const REQUESTS: &str = "ragmesh_embedder_requests_total";
pub const REQUEST_SECONDS: &str = "ragmesh_embedder_request_duration_seconds";
pub const QUEUE_DEPTH: &str = "ragmesh_embedder_queue_depth";
pub const QUEUE_SECONDS: &str = "ragmesh_embedder_queue_duration_seconds";
pub const BATCH_SIZE: &str = "ragmesh_embedder_batch_size";
pub const BATCH_TOKENS: &str = "ragmesh_embedder_batch_tokens";
pub const FORWARD_SECONDS: &str = "ragmesh_embedder_forward_duration_seconds";
pub const INPUT_TOKENS: &str = "ragmesh_embedder_input_tokens_total";

/// Installs (once) the process-wide Prometheus recorder with the
/// embedder's histogram buckets. `None` when another recorder was installed
/// first, in which case that host renders metrics.
pub fn prometheus() -> Option<PrometheusHandle> {
    ragmesh_telemetry::prometheus(BUCKETS)
}

/// Histogram buckets by metric name (also installed by the all-in-one
/// gateway, which hosts the embedder in-process).
pub const BUCKETS: &[(&str, &[f64])] = &[
    (
        BATCH_SIZE,
        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
    ),
    (
        BATCH_TOKENS,
        &[16.0, 64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0],
    ),
];

/// Registers descriptions so `/metrics` has HELP lines from the start.
pub fn describe() {
    metrics::describe_counter!(REQUESTS, "Embedding requests, by transport and outcome.");
    metrics::describe_histogram!(REQUEST_SECONDS, "End-to-end request latency.");
    metrics::describe_gauge!(QUEUE_DEPTH, "Requests waiting for the compute thread.");
    metrics::describe_histogram!(
        QUEUE_SECONDS,
        "Time a request waited before its batch started."
    );
    metrics::describe_histogram!(BATCH_SIZE, "Sequences per forward pass.");
    metrics::describe_histogram!(BATCH_TOKENS, "Tokens per forward pass.");
    metrics::describe_histogram!(FORWARD_SECONDS, "Duration of one forward pass.");
    metrics::describe_counter!(INPUT_TOKENS, "Input tokens embedded.");
}
