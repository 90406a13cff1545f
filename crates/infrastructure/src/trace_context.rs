//! W3C trace context across process boundaries: the `traceparent` of the current span for
//! outgoing HTTP calls (PostgREST, JWKS) and for queued event batches, and links from a span
//! to the trace a batch was accepted in. Without an OpenTelemetry layer (no
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) the current span has no trace context: nothing is sent and
//! nothing linked.

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header (and queue field) that carries a trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of the current span, when traces are exported.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Adds the current span's `traceparent` to an outgoing request.
pub fn inject(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match current_traceparent() {
        Some(value) => request.header(TRACEPARENT, value),
        None => request,
    }
}

/// The span context a `traceparent` value names, if it is well formed.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let carrier = std::collections::HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let span_context = TraceContextPropagator::new().extract(&carrier).span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// Links `span` to the span a `traceparent` names (a worker's batch to the ingest that
/// accepted it): a link, not a parent, as one batch gathers many ingests.
pub fn link(span: &tracing::Span, traceparent: &str) {
    if let Some(span_context) = parse(traceparent) {
        span.add_link(span_context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_name_a_span() {
        let parsed = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(parsed.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parsed.is_sampled());
        for bad in
            ["", "00-zz-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"]
        {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_propagated() {
        let span = tracing::info_span!("request");
        let _entered = span.enter();
        assert_eq!(current_traceparent(), None);
    }
}
