//! Prometheus series, named as vLLM names them (`vllm:` becomes
//! `ragmesh_llm_`), so existing dashboards and autoscaling rules map over.
//!
//! The three gauges an endpoint picker reads (Kubernetes Gateway API
//! Inference Extension, llm-d) are also exported under vLLM's own names,
//! `vllm:num_requests_waiting`, `vllm:num_requests_running` and
//! `vllm:kv_cache_usage_perc` (0-1), with the `model_name` label vLLM
//! gives them, so a runner pod can sit in an InferencePool as it is.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::generator::FinishReason;

/// Latency buckets (seconds) reaching from one decode step to a long
/// generation.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
];

/// Histogram buckets by metric name, for whichever host installs the
/// Prometheus recorder (the runner binary or the all-in-one gateway).
pub const BUCKETS: &[(&str, &[f64])] = &[
    ("ragmesh_llm_time_to_first_token_seconds", LATENCY_BUCKETS),
    ("ragmesh_llm_inter_token_latency_seconds", LATENCY_BUCKETS),
    ("ragmesh_llm_e2e_request_latency_seconds", LATENCY_BUCKETS),
    ("ragmesh_llm_request_queue_time_seconds", LATENCY_BUCKETS),
    (
        "ragmesh_llm_step_sequences",
        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
    ),
    (
        "ragmesh_llm_grammar_compile_seconds",
        &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
    ),
];

pub fn describe() {
    describe_histogram!(
        "ragmesh_llm_time_to_first_token_seconds",
        "arrival to first generated token"
    );
    describe_histogram!(
        "ragmesh_llm_inter_token_latency_seconds",
        "time between generated tokens of a request"
    );
    describe_histogram!(
        "ragmesh_llm_e2e_request_latency_seconds",
        "arrival to last token"
    );
    describe_histogram!(
        "ragmesh_llm_request_queue_time_seconds",
        "time waiting for a sequence slot"
    );
    describe_histogram!("ragmesh_llm_step_duration_seconds", "one batched forward");
    describe_histogram!(
        "ragmesh_llm_grammar_compile_seconds",
        "compiling a request's response format or tools into its output grammar"
    );
    describe_counter!(
        "ragmesh_llm_constrained_requests_total",
        "requests whose output a grammar held (kind: json_object, json_schema, regex, lark, tools), and refusals of their schemas (outcome)"
    );
    describe_histogram!(
        "ragmesh_llm_step_sequences",
        "sequences in one batched forward"
    );
    describe_counter!("ragmesh_llm_prompt_tokens_total", "prompt tokens processed");
    describe_counter!(
        "ragmesh_llm_prefix_cache_queries_total",
        "prompt tokens looked up in the prefix cache"
    );
    describe_counter!(
        "ragmesh_llm_prefix_cache_hits_total",
        "prompt tokens served from the prefix cache (not prefilled)"
    );
    describe_counter!("ragmesh_llm_generation_tokens_total", "tokens generated");
    describe_counter!(
        "ragmesh_llm_queue_timeouts_total",
        "queued requests refused after waiting --max-queue-wait-s for a slot"
    );
    describe_counter!(
        "ragmesh_llm_request_success_total",
        "finished requests by finish reason"
    );
    describe_counter!(
        "ragmesh_llm_request_cancelled_total",
        "requests whose client went away"
    );
    describe_gauge!(
        "ragmesh_llm_num_requests_running",
        "sequences in the running batch"
    );
    describe_gauge!(
        "ragmesh_llm_num_requests_waiting",
        "requests waiting for a slot"
    );
    describe_gauge!(
        "ragmesh_llm_kv_cache_usage_perc",
        "KV-cache tokens held / capacity (0-1)"
    );
    describe_gauge!(
        "vllm:num_requests_running",
        "sequences in the running batch (vLLM's name, for endpoint pickers)"
    );
    describe_gauge!(
        "vllm:num_requests_waiting",
        "requests waiting for a slot (vLLM's name, for endpoint pickers)"
    );
    describe_gauge!(
        "vllm:kv_cache_usage_perc",
        "KV-cache tokens held / capacity, 0-1 (vLLM's name, for endpoint pickers)"
    );
    describe_counter!(
        "vllm:prefix_cache_queries_total",
        "prompt tokens looked up in the prefix cache (vLLM's name)"
    );
    describe_counter!(
        "vllm:prefix_cache_hits_total",
        "prompt tokens served from the prefix cache (vLLM's name)"
    );
}

pub fn ttft(d: Duration) {
    histogram!("ragmesh_llm_time_to_first_token_seconds").record(d.as_secs_f64());
}

pub fn itl(d: Duration) {
    histogram!("ragmesh_llm_inter_token_latency_seconds").record(d.as_secs_f64());
}

pub fn queue_time(d: Duration) {
    histogram!("ragmesh_llm_request_queue_time_seconds").record(d.as_secs_f64());
}

pub fn step(seqs: usize, prompt_tokens: usize, _decoding: usize, d: Duration) {
    histogram!("ragmesh_llm_step_duration_seconds").record(d.as_secs_f64());
    histogram!("ragmesh_llm_step_sequences").record(seqs as f64);
    counter!("ragmesh_llm_prompt_tokens_total").increment(prompt_tokens as u64);
}

pub fn generation_tokens(n: u64) {
    counter!("ragmesh_llm_generation_tokens_total").increment(n);
}

pub fn finished(e2e: Duration, _prompt: usize, finish: FinishReason) {
    histogram!("ragmesh_llm_e2e_request_latency_seconds").record(e2e.as_secs_f64());
    counter!("ragmesh_llm_request_success_total", "finished_reason" => finish.as_str())
        .increment(1);
}

/// A queued request refused for waiting longer than the queue deadline.
pub fn queue_timeout() {
    counter!("ragmesh_llm_queue_timeouts_total").increment(1);
}

pub fn cancelled() {
    counter!("ragmesh_llm_request_cancelled_total").increment(1);
}

pub fn running(model: &str, n: usize) {
    gauge!("ragmesh_llm_num_requests_running").set(n as f64);
    gauge!("vllm:num_requests_running", "model_name" => model.to_owned()).set(n as f64);
}

pub fn waiting(model: &str, n: usize) {
    gauge!("ragmesh_llm_num_requests_waiting").set(n as f64);
    gauge!("vllm:num_requests_waiting", "model_name" => model.to_owned()).set(n as f64);
}

/// One admission's prefix-cache lookup, in tokens: the prompt's length
/// (queried) and the positions reused (hit), as vLLM counts them.
pub fn prefix_cache(model: &str, queried: usize, hit: usize) {
    counter!("ragmesh_llm_prefix_cache_queries_total").increment(queried as u64);
    counter!("ragmesh_llm_prefix_cache_hits_total").increment(hit as u64);
    let m = model.to_owned();
    counter!("vllm:prefix_cache_queries_total", "model_name" => m.clone())
        .increment(queried as u64);
    counter!("vllm:prefix_cache_hits_total", "model_name" => m).increment(hit as u64);
}

pub fn kv_usage(model: &str, used: usize, capacity: usize) {
    let f = used as f64 / capacity.max(1) as f64;
    gauge!("ragmesh_llm_kv_cache_usage_perc").set(f);
    gauge!("vllm:kv_cache_usage_perc", "model_name" => model.to_owned()).set(f);
}

/// A request's output grammar compiled (`outcome` ok) or refused
/// (`invalid`).
pub fn grammar(kind: &'static str, ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "invalid" };
    counter!("ragmesh_llm_constrained_requests_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
    histogram!("ragmesh_llm_grammar_compile_seconds").record(took.as_secs_f64());
}
