//! OpenTelemetry traces, configured only by the standard variables:
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`):
//!   unset or empty turns exporting off, and no span goes to OpenTelemetry;
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (`..._TRACES_PROTOCOL`): `grpc` or
//!   `http/protobuf` (the specification's default);
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` (the binary's name,
//!   `ragmesh-gateway` etc., when neither names the service);
//! - `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (the SDK reads them;
//!   default `parentbased_always_on`);
//! - `OTEL_BSP_*` for the queue ([`export::Sizes`]), `OTEL_EXPORTER_OTLP_TIMEOUT`
//!   and `OTEL_EXPORTER_OTLP_HEADERS` for the exporter.
//!
//! Spans come from `tracing`: only those of ragmesh's own crates (targets
//! `ragmesh*`) at INFO or above, whatever `RUST_LOG` says of logs, so the
//! exporter's own HTTP/2 work never traces itself. Span names and kinds use
//! `tracing-opentelemetry`'s `otel.name` / `otel.kind` fields; attribute
//! names are the GenAI semantic conventions' ([`genai`]).
//!
//! W3C `traceparent`/`tracestate` travel on HTTP headers and gRPC metadata
//! ([`extract_http`], [`inject_http`], [`inject_grpc`], [`grpc_server_span`]).

pub mod export;
pub mod genai;

pub use opentelemetry::KeyValue;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Exporting, once set up; `shutdown` flushes what is queued.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    pub fn shutdown(&self, within: std::time::Duration) {
        let _ = self.provider.shutdown_with_timeout(within);
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether the environment asks for exporting.
pub fn wanted() -> bool {
    env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_some()
        && env("OTEL_SDK_DISABLED").as_deref() != Some("true")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    HttpProtobuf,
}

fn protocol() -> Result<Protocol, String> {
    let p =
        env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
    match p.as_deref() {
        None | Some("http/protobuf") => Ok(Protocol::HttpProtobuf),
        Some("grpc") => Ok(Protocol::Grpc),
        Some(other) => Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: use grpc or http/protobuf"
        )),
    }
}

/// The tracer provider and the `tracing` layer feeding it, when the
/// environment asks for exporting (`Ok(None)` when it does not). A bad
/// setting is an error: the binary says so and exits, rather than run
/// without the traces its operator asked for.
pub fn from_env(
    default_service: &str,
) -> Result<Option<(Tracing, opentelemetry_sdk::trace::Tracer)>, String> {
    if !wanted() {
        return Ok(None);
    }
    let protocol = protocol()?;
    let mut resource = opentelemetry_sdk::Resource::builder().build();
    let named = resource
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if !named {
        resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(default_service.to_owned())
            .build();
    }
    let for_exporter = resource.clone();
    let processor = export::BoundedBatch::start(export::Sizes::from_env(), move || {
        use opentelemetry_otlp::WithExportConfig as _;
        use opentelemetry_sdk::trace::SpanExporter as _;
        let built = match protocol {
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build(),
        };
        let mut exporter = built.map_err(|e| format!("OTLP exporter: {e}"))?;
        exporter.set_resource(&for_exporter);
        Ok(exporter)
    })?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("ragmesh");
    Ok(Some((Tracing { provider }, tracer)))
}

struct Headers<'a>(&'a http::HeaderMap);
struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The W3C propagator, whether or not exporting is on: an incoming
/// `traceparent` is read the same either way (the spans are simply not
/// recorded when it is off).
fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

/// The remote parent a request names in `traceparent`/`tracestate` (an
/// empty context when it names none or a malformed one).
pub fn extract_http(headers: &http::HeaderMap) -> opentelemetry::Context {
    propagator().extract(&Headers(headers))
}

/// Sets `traceparent`/`tracestate` for the current span on an outgoing
/// HTTP request (nothing when no span is recorded).
pub fn inject_http(headers: &mut http::HeaderMap) {
    let cx = tracing::Span::current().context();
    propagator().inject_context(&cx, &mut HeadersMut(headers));
}

/// The same for an outgoing gRPC call's metadata.
pub fn inject_grpc(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    let mut headers = http::HeaderMap::new();
    propagator().inject_context(&cx, &mut HeadersMut(&mut headers));
    for (k, v) in &headers {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_str().as_bytes()),
            tonic::metadata::MetadataValue::try_from(v.as_bytes()),
        ) {
            metadata.insert(k, v);
        }
    }
}

/// Sets a span's remote parent from a request's headers.
pub fn set_parent_from(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = extract_http(headers);
    use opentelemetry::trace::TraceContextExt as _;
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The server span of one gRPC call (tonic's `Server::trace_fn`): named
/// by its method (`ragmesh.v1.LlmRunner/Generate`), a child of the
/// caller's span when the metadata carries `traceparent`. Handlers add
/// their own spans under it. Health checks and the gateways' probes
/// (`Load`, `Info`: several a second per gateway) get none.
pub fn grpc_server_span(req: &http::Request<()>) -> tracing::Span {
    let method = req.uri().path().trim_start_matches('/');
    let (service, rpc) = method.split_once('/').unwrap_or((method, ""));
    if service.starts_with("grpc.health.") || matches!(rpc, "Load" | "Info") {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: "ragmesh_grpc",
        "grpc_server",
        otel.name = %method,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %rpc,
    );
    set_parent_from(&span, req.headers());
    span
}

/// A gRPC channel whose every call carries the current span's context in
/// its metadata: `XClient::new(otel::traced(channel))`.
pub type Traced = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
>;

pub fn traced(channel: tonic::transport::Channel) -> Traced {
    fn inject(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_grpc(req.metadata_mut());
        Ok(req)
    }
    tonic::service::interceptor::InterceptedService::new(channel, inject as fn(_) -> _)
}

/// Middleware: the server span of one HTTP request to a leaf service's
/// API (the embedder's `/v1/embeddings`), named `<METHOD> <route>`, a
/// child of the caller's `traceparent`. (The gateway has its own, with the
/// request id and tenant: `request_id::middleware`.)
pub async fn http_server_span(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", axum::extract::MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        target: "ragmesh_http",
        "http_request",
        otel.name = %format!("{} {route}", req.method()),
        otel.kind = "server",
    );
    set_parent_from(&span, req.headers());
    genai::set(&span, "http.request.method", req.method().to_string());
    genai::set(&span, "http.route", route);
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    genai::set(&span, "http.response.status_code", i64::from(status));
    if status >= 500 {
        genai::error(&span, status.to_string());
    }
    resp
}
