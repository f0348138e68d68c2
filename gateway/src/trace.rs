//! The gateway's spans (issue 18), beside the code they time: one GenAI
//! span per model call, named `{operation} {model}` as the OpenTelemetry
//! GenAI conventions say, with the request's sampling parameters, and
//! the response's id, model, finish reasons and token usage once its
//! stream ends. Stages (auth, embed, search, prompt build, generate,
//! upstream attempts) are child spans; the HTTP server span is
//! `request_id::middleware`'s. With exporting off these are plain
//! `tracing` spans and cost little (docs/benchmarks.md, "Tracing").

use futures::StreamExt;
use futures::stream::BoxStream;
use ragmesh_llm_runner::Event;
use ragmesh_telemetry::otel::genai;
use tracing::Span;

use crate::openai::params::GenParams;

/// The span of one GenAI operation (`chat`, `text_completion`,
/// `embeddings`) on `model` as the client named it.
pub fn genai_span(operation: &'static str, model: &str, provider: &str) -> Span {
    let span = tracing::info_span!(
        "gen_ai",
        otel.name = %format!("{operation} {model}"),
        otel.kind = "client",
    );
    genai::set(&span, genai::OPERATION, operation);
    genai::set(&span, genai::PROVIDER, provider.to_owned());
    genai::set(&span, genai::REQUEST_MODEL, model.to_owned());
    span
}

/// The request's generation parameters, as sent.
pub fn record_params(span: &Span, p: &GenParams) {
    if let Some(m) = p.max_tokens {
        genai::set(span, genai::MAX_TOKENS, m);
    }
    if let Some(t) = p.temperature {
        genai::set(span, genai::TEMPERATURE, f64::from(t));
    }
    genai::set(span, genai::TOP_P, f64::from(p.top_p));
    if let Some(s) = p.seed {
        genai::set(span, genai::SEED, s as i64);
    }
}

/// Passes `events` through, recording on `span` the response's id and
/// model, and at the end its finish reason and usage (the same numbers
/// the response's `usage` reports) or its error. The span lives as long
/// as the stream, so a streamed answer's span ends with its last token.
///
/// It also holds the request's slot in `ragmesh_gateway_requests_in_flight`
/// (`in_flight`), released with the stream.
pub fn traced(
    events: BoxStream<'static, Event>,
    span: Span,
    response_id: &str,
    response_model: &str,
    in_flight: crate::metrics::InFlight,
) -> BoxStream<'static, Event> {
    genai::set(&span, genai::RESPONSE_ID, response_id.to_owned());
    genai::set(&span, genai::RESPONSE_MODEL, response_model.to_owned());
    let mut text = genai::capture_content().then(String::new);
    events
        .inspect(move |ev| match ev {
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
                ..
            } => {
                if let Some(t) = text.take() {
                    let out = serde_json::json!([{"role": "assistant",
                        "parts": [{"type": "text", "content": t}],
                        "finish_reason": finish.as_str()}]);
                    genai::set(&span, genai::OUTPUT_MESSAGES, out.to_string());
                }
                genai::finish_reasons(&span, &[finish.as_str()]);
                genai::set(&span, genai::INPUT_TOKENS, *prompt_tokens as i64);
                genai::set(&span, genai::OUTPUT_TOKENS, *completion_tokens as i64);
            }
            Event::Error(e) => genai::error(&span, e.kind()),
            Event::Delta { text: delta, .. } => {
                let _ = &in_flight;
                if let Some(t) = text.as_mut() {
                    t.push_str(delta);
                }
            }
        })
        .boxed()
}

/// The gateway's side of one generation: from the request to the first
/// token (the pool's attempts, one client span each, are its children;
/// the stream goes on under the GenAI span).
pub fn generate_span(model: &str) -> Span {
    tracing::info_span!("generate", otel.name = %format!("generate {model}"))
}

/// `gen_ai.input.messages` (the messages as the model gets them, retrieved
/// context included), only when content capture is opted in.
pub fn input_messages(span: &Span, messages: &[(String, String)]) {
    if !genai::capture_content() {
        return;
    }
    let v: Vec<serde_json::Value> = messages
        .iter()
        .map(|(role, text)| {
            serde_json::json!({"role": role, "parts": [{"type": "text", "content": text}]})
        })
        .collect();
    genai::set(
        span,
        genai::INPUT_MESSAGES,
        serde_json::Value::Array(v).to_string(),
    );
}

/// `gen_ai.provider.name` for a resolved model: `ragmesh` for what the
/// mesh serves, `openai` for an OpenAI-compatible upstream.
pub fn provider(target: &crate::state::Target) -> &'static str {
    match target {
        crate::state::Target::Upstream(_) => "openai",
        _ => genai::PROVIDER_RAGMESH,
    }
}

/// Marks `span` failed when the request failed (`error.type`: the status).
pub fn on_error<T>(span: &Span, out: &crate::error::ApiResult<T>) {
    if let Err(e) = out {
        genai::error(span, e.status().as_u16().to_string());
    }
}
