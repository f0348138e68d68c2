//! Log set-up: text for people (the default) or one JSON object per line
//! for collectors (`--log-format json`, `RAGMESH_LOG_FORMAT=json`), both to
//! stderr and filtered by `RUST_LOG`; and the OpenTelemetry layer beside
//! them when exporting is on ([`crate::otel`]), filtered on its own.
//!
//! A JSON line holds `timestamp`, `level`, `target`, `message`, the
//! event's fields, the fields of every span it happened in (outermost
//! first: the gateway's request span gives `request_id`, `tenant` and
//! `key_name`, never the key), `span` (the innermost span's name), and,
//! when traces are exported, `trace_id` and `span_id` of the nearest
//! traced span, so a log line leads to its trace. Span fields reach a line
//! only for spans `RUST_LOG` enables (the request spans are INFO: with
//! `RUST_LOG=warn` a warning carries no request id).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::FormatTime as _;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal only).
    #[default]
    Text,
    /// One JSON object per line, with trace and span ids.
    Json,
}

/// The flag every binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format on stderr: text, or json (one object per line with
    /// trace_id/span_id, request id, tenant and key name).
    #[arg(long, env = "RAGMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Installs the process's subscriber: logs in `format`, and traces when
/// the OpenTelemetry variables ask for them (then the handle to flush
/// them at exit). An OpenTelemetry setting that cannot work is an error.
pub fn init(service: &str, format: LogFormat) -> Result<Option<crate::otel::Tracing>, String> {
    use std::io::IsTerminal;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(crate::DEFAULT_LOG_FILTER))
    };
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(text_fields())
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
    };
    let (handle, traces) = match crate::otel::from_env(service)? {
        Some((handle, tracer)) => {
            // our own crates' spans at INFO and above, whatever RUST_LOG
            // says of logs; never the exporter's own work
            // (events at INFO, such as the access line, are logs: as span
            // events they would repeat the span's attributes on every
            // request; warnings and errors go on the span)
            let ours = tracing_subscriber::filter::filter_fn(|m| {
                let enough = if m.is_event() {
                    tracing::Level::WARN
                } else {
                    tracing::Level::INFO
                };
                m.target().starts_with("ragmesh") && *m.level() <= enough
            });
            // lean spans: no source location, thread or busy/idle
            // attributes (they cost every span and answer nothing the
            // span names do not); integer fields must be i64 (u64 ones
            // arrive as strings)
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_target(false)
                .with_filter(ours);
            (Some(handle), Some(layer))
        }
        None => (None, None),
    };
    // a second init (tests start several services in one process) keeps the first
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    Ok(handle)
}

/// Text fields as the default formatter writes them (`name=value`, the
/// message bare), less the `otel.*` fields that name and kind spans for
/// OpenTelemetry: a person reading a request's line needs its request id,
/// not its span kind.
fn text_fields() -> TextFields {
    TextFields
}

struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut v = TextVisitor {
            w: writer,
            first: true,
            out: Ok(()),
        };
        fields.record(&mut v);
        v.out
    }
}

struct TextVisitor<'w> {
    w: Writer<'w>,
    first: bool,
    out: fmt::Result,
}

impl Visit for TextVisitor<'_> {
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        let name = f.name();
        if self.out.is_err() || name.starts_with("otel.") {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.out = if name == "message" {
            write!(self.w, "{sep}{v:?}")
        } else {
            write!(self.w, "{sep}{name}={v:?}")
        };
    }
}

/// The JSON line format.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // the fields first (outermost span first, the event's last), then
        // the envelope, so a field named `target` or `level` cannot stand
        // for it
        let mut obj = serde_json::Map::new();
        let mut ids = None;
        let mut innermost = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(f) = ext.get::<FormattedFields<N>>()
                    && let Ok(serde_json::Value::Object(m)) =
                        serde_json::from_str::<serde_json::Value>(&f.fields)
                {
                    obj.extend(m.into_iter().filter(|(k, _)| !k.starts_with("otel.")));
                }
                // the nearest span that is traced names the trace
                if let Some(otel) = ext.get::<tracing_opentelemetry::OtelData>()
                    && let (Some(t), Some(s)) = (otel.trace_id(), otel.span_id())
                {
                    ids = Some((t, s));
                }
                innermost = Some(span.name());
            }
        }
        event.record(&mut Fields(&mut obj));
        let mut ts = String::new();
        if tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut ts))
            .is_ok()
        {
            obj.insert("timestamp".into(), ts.into());
        }
        let meta = event.metadata();
        obj.insert("level".into(), meta.level().as_str().into());
        obj.insert("target".into(), meta.target().into());
        if let Some(name) = innermost {
            obj.insert("span".into(), name.into());
        }
        if let Some((t, s)) = ids {
            obj.insert("trace_id".into(), t.to_string().into());
            obj.insert("span_id".into(), s.to_string().into());
        }
        let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
        writeln!(w, "{line}")
    }
}

/// Collects an event's fields as JSON values.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}").into());
    }
}
