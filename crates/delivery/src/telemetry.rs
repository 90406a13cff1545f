//! Logs and traces. Logs go to stderr, readable for people or JSON for machines, filtered by
//! `RUST_LOG`; every line written while a request is served carries its `request_id` and
//! `trace_id` (the request span's fields). Traces are exported over OTLP (HTTP/protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set: the `tracing` spans of the `sba` crates become
//! OpenTelemetry spans, batched by the SDK's own thread, so a slow or absent collector never
//! blocks a request. Without an endpoint there is no OpenTelemetry layer, no propagator and
//! no exporter at all (ADR 0020).

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use base64::Engine as _;
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use percent_encoding::percent_decode_str;
use sba_infrastructure::config::{LogFormat, LogSettings};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};
use url::Url;

/// The exporter's bound on one export call.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long stopping waits for the last spans to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Set once traces are exported by this process.
static EXPORTING: OnceLock<()> = OnceLock::new();

/// What [`init`] installed; [`Telemetry::shutdown`] sends the spans still queued.
#[derive(Debug)]
#[must_use = "call `shutdown` before the process exits, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is queued (bounded by a few seconds) and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!(%error, "the last spans could not be exported");
        }
    }
}

/// Installs the global subscriber: the log layer, and the trace layer when `otlp_endpoint` is
/// set. A second call (tests) leaves the first in place and exports nothing.
pub fn init(settings: &LogSettings, otlp_endpoint: Option<&Url>) -> Telemetry {
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|error| {
        eprintln!("RUST_LOG `{}` is not a valid filter ({error}); using `info`", settings.filter);
        EnvFilter::new("info")
    });
    let logs = match settings.format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
    }
    .with_filter(filter);
    let (provider, exporter_error) = match otlp_endpoint.map(tracer_provider).transpose() {
        Ok(provider) => (provider, None),
        Err(error) => (None, Some(error)),
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("sba")).with_filter(trace_filter())
    });
    if tracing_subscriber::registry().with(logs).with(traces).try_init().is_err() {
        return Telemetry { provider: None };
    }
    if let Some(error) = exporter_error {
        tracing::error!(error = format!("{error:#}"), "traces are not exported");
    }
    if let Some(endpoint) = otlp_endpoint.filter(|_| provider.is_some()) {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let _ = EXPORTING.set(());
        tracing::info!(endpoint = %without_credentials(endpoint), "exporting traces over OTLP");
    }
    Telemetry { provider }
}

/// Whether spans are exported by this process.
pub fn exporting() -> bool {
    EXPORTING.get().is_some()
}

/// The spans and span events that become OpenTelemetry data: the `sba` crates' at `info`,
/// their dependency calls (`sba::dependency`) and WebSocket connections and ops
/// (`sba::stream`), both at `debug` so that the logs leave them out by default (an idle
/// connection's span would otherwise cost it memory even without an exporter). Libraries'
/// own spans are left out: the service's spans name what they did.
fn trace_filter() -> Targets {
    Targets::new()
        .with_target("sba", Level::INFO)
        .with_target("sba::dependency", Level::DEBUG)
        .with_target("sba::stream", Level::DEBUG)
}

/// The SDK pipeline sending to `<endpoint>/v1/traces`. Credentials in the URL become an
/// `Authorization: Basic` header, so the URL the exporter holds (and could print in an error)
/// has none.
fn tracer_provider(endpoint: &Url) -> anyhow::Result<SdkTracerProvider> {
    let mut headers = std::collections::HashMap::new();
    if !endpoint.username().is_empty() || endpoint.password().is_some() {
        let user = percent_decode_str(endpoint.username()).decode_utf8_lossy();
        let password = percent_decode_str(endpoint.password().unwrap_or_default()).decode_utf8_lossy();
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers.insert("authorization".to_owned(), format!("Basic {credentials}"));
    }
    let mut traces = without_credentials(endpoint);
    traces.set_path(&format!("{}/v1/traces", traces.path().trim_end_matches('/')));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .with_headers(headers)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("sba")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// `endpoint` without user name and password.
fn without_credentials(endpoint: &Url) -> Url {
    let mut url = endpoint.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

/// The W3C trace context of an incoming request's `traceparent` (and `tracestate`).
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(actix_web::http::header::HeaderName::as_str).collect()
    }
}

/// Makes `span` (a request's root span, declared with an empty `trace_id` field) continue the
/// trace of the caller's `traceparent` when there is a valid one, and records its trace id.
/// Without an exporter the id is still recorded, for the logs: the caller's trace id, or a
/// fresh one.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    // Neither logged nor exported (`RUST_LOG=warn`, no endpoint): nothing to record.
    if span.is_disabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let trace_id = if exporting() {
        let _ = span.set_parent(parent);
        span.context().span().span_context().trace_id().to_string()
    } else {
        log_trace_id(parent.span().span_context())
    };
    span.record("trace_id", trace_id);
}

/// The trace id logged without an exporter: the caller's, or a fresh random one.
fn log_trace_id(caller: &SpanContext) -> String {
    if caller.is_valid() { caller.trace_id().to_string() } else { uuid::Uuid::new_v4().simple().to_string() }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn caller(traceparent: Option<&'static str>) -> SpanContext {
        let mut headers = HeaderMap::new();
        if let Some(value) = traceparent {
            headers.insert(HeaderName::from_static("traceparent"), HeaderValue::from_static(value));
        }
        TraceContextPropagator::new().extract(&Headers(&headers)).span().span_context().clone()
    }

    #[test]
    fn credentials_leave_the_endpoint_url() {
        let url = Url::parse("http://otel:p%40ss@collector:4318/base/").unwrap();
        assert_eq!(without_credentials(&url).as_str(), "http://collector:4318/base/");
    }

    #[test]
    fn logs_carry_the_callers_trace_id_or_a_fresh_one() {
        assert_eq!(log_trace_id(&caller(Some(TRACEPARENT))), "4bf92f3577b34da6a3ce929d0e0e4736");
        for malformed in [
            None,
            Some("00-zz-00f067aa0ba902b7-01"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            let fresh = log_trace_id(&caller(malformed));
            assert_eq!(fresh.len(), 32, "{fresh}");
            assert!(fresh.bytes().all(|b| b.is_ascii_hexdigit()), "{fresh}");
            assert_ne!(fresh, log_trace_id(&caller(malformed)), "a fresh id per request");
        }
    }
}
