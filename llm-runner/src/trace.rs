//! The runner's side of a generation's trace (issue 18): one GenAI span
//! per request (`chat <model>` or `text_completion <model>`, under the
//! gRPC server span, or under the gateway's span when the runner is in its
//! process), with span events from the engine as the request moves:
//! `queued` (time waiting for a slot), `first_token` (time to first
//! token), `done` (decode time), then the usage and finish reason.

use std::time::Duration;

use ragmesh_telemetry::otel::{KeyValue, genai};
use tracing::Span;

use crate::generator::Event;
use crate::request::{GenerateRequest, Input};

pub fn generate_span(req: &GenerateRequest, model: &str) -> Span {
    let op = match req.input {
        Input::Chat(_) => "chat",
        Input::Prompt(_) => "text_completion",
    };
    let span = tracing::info_span!("gen_ai", otel.name = %format!("{op} {model}"));
    genai::set(&span, genai::OPERATION, op);
    genai::set(&span, genai::PROVIDER, genai::PROVIDER_RAGMESH);
    genai::set(&span, genai::REQUEST_MODEL, model.to_owned());
    genai::set(&span, genai::RESPONSE_MODEL, model.to_owned());
    if let Some(m) = req.max_tokens {
        genai::set(&span, genai::MAX_TOKENS, m);
    }
    genai::set(
        &span,
        genai::TEMPERATURE,
        f64::from(req.sampling.temperature),
    );
    genai::set(&span, genai::TOP_P, f64::from(req.sampling.top_p));
    if let Some(s) = req.sampling.seed {
        genai::set(&span, genai::SEED, s as i64);
    }
    if !req.request_id.is_empty() {
        genai::set(&span, genai::RESPONSE_ID, req.request_id.clone());
    }
    span
}

/// Usage and finish reason when the stream ends; the error otherwise.
pub fn record_event(span: &Span, ev: &Event) {
    match ev {
        Event::Done {
            finish,
            prompt_tokens,
            completion_tokens,
            ..
        } => {
            genai::finish_reasons(span, &[finish.as_str()]);
            genai::set(span, genai::INPUT_TOKENS, *prompt_tokens as i64);
            genai::set(span, genai::OUTPUT_TOKENS, *completion_tokens as i64);
        }
        Event::Error(e) => genai::error(span, e.kind()),
        Event::Delta { .. } => {}
    }
}

/// A prefix-cache hit at admission: the prompt positions reused.
pub fn cached(span: &Span, tokens: usize) {
    genai::event(
        span,
        "prefix_cache_hit",
        vec![KeyValue::new("ragmesh.cached_tokens", tokens as i64)],
    );
}

/// A span event from the engine thread, with one duration in seconds.
pub fn timing(span: &Span, name: &'static str, key: &'static str, d: Duration) {
    genai::event(span, name, vec![KeyValue::new(key, d.as_secs_f64())]);
}
