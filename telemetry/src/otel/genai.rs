//! The OpenTelemetry GenAI semantic conventions' attribute names, and the
//! helpers that put them on spans. A GenAI span is named
//! `{gen_ai.operation.name} {gen_ai.request.model}` (`chat smollm2`,
//! `embeddings all-minilm-l6-v2`), set through `otel.name` when the span is
//! made. Message contents are recorded only when
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`
//! ([`capture_content`]).

use opentelemetry::{KeyValue, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const OPERATION: &str = "gen_ai.operation.name";
pub const PROVIDER: &str = "gen_ai.provider.name";
pub const REQUEST_MODEL: &str = "gen_ai.request.model";
pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const MAX_TOKENS: &str = "gen_ai.request.max_tokens";
pub const TEMPERATURE: &str = "gen_ai.request.temperature";
pub const TOP_P: &str = "gen_ai.request.top_p";
pub const SEED: &str = "gen_ai.request.seed";
pub const RESPONSE_ID: &str = "gen_ai.response.id";
pub const FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
pub const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const EMBEDDING_DIMENSIONS: &str = "gen_ai.embeddings.dimension.count";
pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const ERROR_TYPE: &str = "error.type";

/// `gen_ai.provider.name` for what ragmesh serves itself (the spec lets a
/// system name itself where no well-known value fits).
pub const PROVIDER_RAGMESH: &str = "ragmesh";

/// Whether message contents may go on spans (off unless opted in: they
/// may hold personal data).
pub fn capture_content() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
    })
}

/// Sets one attribute on a span (a no-op when traces are not exported).
pub fn set(span: &tracing::Span, key: &'static str, value: impl Into<Value>) {
    span.set_attribute(key, value);
}

/// `server.address` and `server.port` from an endpoint (`http://h:p`,
/// `h:p` or `[v6]:p`).
pub fn server(span: &tracing::Span, endpoint: &str) {
    let hostport = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .trim_end_matches('/');
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h, p.parse::<u16>().ok()),
        _ => (hostport, None),
    };
    set(
        span,
        SERVER_ADDRESS,
        host.trim_matches(['[', ']']).to_owned(),
    );
    if let Some(p) = port {
        set(span, SERVER_PORT, i64::from(p));
    }
}

/// A gRPC status code as the RPC conventions write it (`UNAVAILABLE`).
pub fn grpc_code(code: tonic::Code) -> String {
    let name = format!("{code:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `gen_ai.response.finish_reasons`: a string array.
pub fn finish_reasons(span: &tracing::Span, reasons: &[&str]) {
    let v: Vec<opentelemetry::StringValue> =
        reasons.iter().map(|r| (*r).to_owned().into()).collect();
    span.set_attribute(FINISH_REASONS, Value::Array(v.into()));
}

/// Marks a span failed with `error.type` (a short, low-cardinality name:
/// an HTTP status, a gRPC code, `timeout`).
pub fn error(span: &tracing::Span, kind: impl Into<String>) {
    let kind = kind.into();
    span.set_status(opentelemetry::trace::Status::error(kind.clone()));
    span.set_attribute(ERROR_TYPE, kind);
}

/// A span event (OpenTelemetry only: no log line).
pub fn event(span: &tracing::Span, name: &'static str, attrs: Vec<KeyValue>) {
    span.add_event(name, attrs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_are_screaming_snake_case() {
        assert_eq!(grpc_code(tonic::Code::Unavailable), "UNAVAILABLE");
        assert_eq!(
            grpc_code(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
        assert_eq!(grpc_code(tonic::Code::Ok), "OK");
    }
}
