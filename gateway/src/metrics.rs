//! The gateway's Prometheus metrics (`ragmesh_gateway_*`). Latencies are
//! what the client sees, so they include retrieval and queueing.

use crate::openai::output::Meta;

pub const REQUESTS: &str = "ragmesh_gateway_requests_total";
pub const TTFT: &str = "ragmesh_gateway_time_to_first_token_seconds";
pub const E2E: &str = "ragmesh_gateway_e2e_request_latency_seconds";
pub const PROMPT_TOKENS: &str = "ragmesh_gateway_prompt_tokens_total";
pub const GENERATION_TOKENS: &str = "ragmesh_gateway_generation_tokens_total";
pub const RAG_STAGE: &str = "ragmesh_gateway_rag_stage_seconds";
pub const RAG_DROPPED: &str = "ragmesh_gateway_rag_chunks_dropped_total";
pub const INGESTED_CHUNKS: &str = "ragmesh_gateway_ingested_chunks_total";
pub const RATE_LIMITED: &str = "ragmesh_gateway_rate_limited_total";
pub const RETRIES: &str = "ragmesh_gateway_backend_retries_total";
pub const UPSTREAM: &str = "ragmesh_gateway_upstream_requests_total";
pub const CONNECTIONS_REFUSED: &str = "ragmesh_gateway_connections_refused_total";
/// Requests waiting for a replica of a pool scaled to zero, by model: the
/// signal that wakes the pool (the chart's KEDA trigger reads it).
pub const WAITING_FOR_REPLICA: &str = "ragmesh_gateway_requests_waiting_for_replica";
/// Generations in flight through this gateway, by model (an HPA's custom
/// metric for the gateway, a view of each pool's load from the front).
pub const IN_FLIGHT: &str = "ragmesh_gateway_requests_in_flight";
/// Files attached to vector stores, by how their processing ended.
pub const ATTACHED: &str = "ragmesh_gateway_attached_files_total";
/// Attached files being extracted and ingested, or waiting for a slot.
pub const ATTACHING: &str = "ragmesh_gateway_files_attaching";

pub fn describe() {
    metrics::describe_counter!(
        ATTACHED,
        "Files attached to vector stores, by outcome (completed, failed, cancelled)"
    );
    metrics::describe_gauge!(
        ATTACHING,
        "Attached files this gateway is processing or has queued"
    );
    metrics::describe_gauge!(
        IN_FLIGHT,
        "Generations in flight through this gateway (request to last token), by model"
    );
    metrics::describe_gauge!(
        WAITING_FOR_REPLICA,
        "Requests waiting for a replica of a runner pool scaled to zero, by model"
    );
    metrics::describe_counter!(REQUESTS, "HTTP requests by route and status");
    metrics::describe_histogram!(TTFT, "Seconds from request to the first generated token");
    metrics::describe_histogram!(E2E, "Seconds from request to the last generated token");
    metrics::describe_counter!(PROMPT_TOKENS, "Prompt tokens sent to the runner");
    metrics::describe_counter!(GENERATION_TOKENS, "Tokens generated");
    metrics::describe_histogram!(
        RAG_STAGE,
        "Seconds per retrieval stage (embed, search, prompt)"
    );
    metrics::describe_counter!(
        RAG_DROPPED,
        "Retrieved chunks dropped to fit the context window"
    );
    metrics::describe_counter!(INGESTED_CHUNKS, "Chunks written by document ingest");
    metrics::describe_counter!(
        RETRIES,
        "Calls moved to another replica after one refused them, by stage"
    );
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections answered 503 and closed because --max-connections were open"
    );
    metrics::describe_counter!(
        UPSTREAM,
        "Proxied requests to external upstreams, by model and outcome"
    );
    metrics::describe_counter!(
        RATE_LIMITED,
        "Requests refused by a key's rate or concurrency limit"
    );
}

pub fn first_token(meta: &Meta) {
    metrics::histogram!(TTFT, "model" => meta.model.clone())
        .record(meta.started.elapsed().as_secs_f64());
}

pub fn finished(meta: &Meta, prompt: usize, completion: usize) {
    metrics::histogram!(E2E, "model" => meta.model.clone())
        .record(meta.started.elapsed().as_secs_f64());
    metrics::counter!(PROMPT_TOKENS, "model" => meta.model.clone()).increment(prompt as u64);
    metrics::counter!(GENERATION_TOKENS, "model" => meta.model.clone())
        .increment(completion as u64);
}

pub fn request(route: &'static str, status: u16) {
    metrics::counter!(REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
}

/// Every handler's last step: count the request under `route` with its
/// status, and turn an error into its OpenAI JSON.
pub fn reply<T: axum::response::IntoResponse>(
    route: &'static str,
    r: crate::error::ApiResult<T>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match r {
        Ok(v) => {
            request(route, 200);
            v.into_response()
        }
        Err(e) => {
            request(route, e.status().as_u16());
            e.into_response()
        }
    }
}

/// Counts one generation in [`IN_FLIGHT`] until dropped.
pub struct InFlight(metrics::Gauge);

impl InFlight {
    pub fn new(model: &str) -> Self {
        let g = metrics::gauge!(IN_FLIGHT, "model" => model.to_owned());
        g.increment(1.0);
        Self(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
