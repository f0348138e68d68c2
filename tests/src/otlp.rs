//! A real OTLP trace receiver for the tracing tests, speaking both
//! transports of the protocol on loopback: gRPC (the collector's
//! `TraceService/Export`, tonic) and HTTP/protobuf (`POST /v1/traces`,
//! axum), with the `opentelemetry-proto` messages. It keeps every span it
//! is sent, flattened for assertions. Stopping it closes both ports, as a
//! collector that went away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use tonic::{Request, Response, Status};

/// One received span, with its service and attributes as strings/numbers.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// 1 internal, 2 server, 3 client (OTLP's `SpanKind`).
    pub kind: i32,
    pub attrs: HashMap<String, serde_json::Value>,
    pub events: Vec<(String, HashMap<String, serde_json::Value>)>,
    /// 2: error (OTLP's `StatusCode`).
    pub status: i32,
}

impl Span {
    pub fn attr(&self, k: &str) -> Option<&serde_json::Value> {
        self.attrs.get(k)
    }
    pub fn int(&self, k: &str) -> Option<i64> {
        self.attrs.get(k).and_then(serde_json::Value::as_i64)
    }
    pub fn str(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).and_then(serde_json::Value::as_str)
    }
}

fn value(v: Option<&Any>) -> serde_json::Value {
    match v {
        Some(Any::StringValue(s)) => s.clone().into(),
        Some(Any::IntValue(i)) => (*i).into(),
        Some(Any::DoubleValue(d)) => (*d).into(),
        Some(Any::BoolValue(b)) => (*b).into(),
        Some(Any::ArrayValue(a)) => a
            .values
            .iter()
            .map(|x| value(x.value.as_ref()))
            .collect::<Vec<_>>()
            .into(),
        _ => serde_json::Value::Null,
    }
}

fn attrs(
    kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> HashMap<String, serde_json::Value> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                value(kv.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect()
}

/// What arrived: the spans (unless counting only) and their number.
#[derive(Clone, Default)]
struct Sink {
    spans: Arc<Mutex<Vec<Span>>>,
    count: Arc<std::sync::atomic::AtomicU64>,
    count_only: bool,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.keep(req.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// `POST /v1/traces` with an `application/x-protobuf` body.
async fn http_export(
    axum::extract::State(sink): axum::extract::State<Sink>,
    body: bytes::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use prost::Message;
    match ExportTraceServiceRequest::decode(body) {
        Ok(req) => {
            sink.keep(req);
            let answer = ExportTraceServiceResponse {
                partial_success: None,
            }
            .encode_to_vec();
            ([("content-type", "application/x-protobuf")], answer).into_response()
        }
        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

impl Sink {
    fn keep(&self, req: ExportTraceServiceRequest) {
        if self.count_only {
            let n: usize = req
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum();
            self.count
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let mut out = Vec::new();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .map(|r| attrs(&r.attributes))
                .and_then(|a| {
                    a.get("service.name")
                        .and_then(|v| v.as_str().map(str::to_owned))
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        service: service.clone(),
                        name: s.name.clone(),
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent_span_id: hex::encode(&s.parent_span_id),
                        kind: s.kind,
                        attrs: attrs(&s.attributes),
                        events: s
                            .events
                            .iter()
                            .map(|e| (e.name.clone(), attrs(&e.attributes)))
                            .collect(),
                        status: s.status.as_ref().map_or(0, |st| st.code),
                    });
                }
            }
        }
        self.count
            .fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut all) = self.spans.lock() {
            all.extend(out);
        }
    }
}

/// The receiver; dropped or [`Receiver::stop`]ped, its port closes.
pub struct Receiver {
    /// The gRPC port.
    pub addr: std::net::SocketAddr,
    /// The HTTP/protobuf port.
    pub http_addr: std::net::SocketAddr,
    sink: Sink,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    http_task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on 127.0.0.1 (`port` 0: any free port).
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        Self::start_with(port, false).await
    }

    /// As [`Receiver::start`]; `count_only` keeps no span, only their
    /// number (a benchmark's receiver: memory stays flat).
    pub async fn start_with(port: u16, count_only: bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let sink = Sink {
            count_only,
            ..Sink::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = TraceServiceServer::new(sink.clone());
        let http_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let http_addr = http_listener.local_addr()?;
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(http_export))
            .with_state(sink.clone());
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(http_listener, app).await;
        });
        let task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            http_addr,
            sink,
            stop: Some(tx),
            task: Some(task),
            http_task: Some(http_task),
        })
    }

    /// The gRPC `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The HTTP/protobuf one (the exporter appends `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.sink
            .spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Spans received so far.
    pub fn count(&self) -> u64 {
        self.sink.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (up to `within`) until `done` holds for the spans received.
    pub async fn wait_for(
        &self,
        within: std::time::Duration,
        done: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let until = std::time::Instant::now() + within;
        loop {
            let s = self.spans();
            if done(&s) || std::time::Instant::now() > until {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Closes the port (a collector that went away).
    pub async fn stop(&mut self) {
        if let Some(t) = self.http_task.take() {
            t.abort();
            let _ = t.await;
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            // graceful first; an exporter's open connection must not hold it
            let abort = t.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}
