//! Request ids. Every request gets the server's own id (a UUIDv7, never the client's): the
//! audit trail's `request_id` and the request's log lines. A well-formed incoming
//! `X-Request-Id` is kept apart as the client's id (`client_request_id` in audit entries and
//! the log line) and echoed, on the response and in problem bodies; without one, the
//! server's id is shown there instead (ARCHITECTURE.md §7).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _};
use sba_domain::HttpMethod;
use tracing::Instrument as _;

use crate::telemetry;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The ids of the request being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    /// Made by the server for this request: unique, whatever the client sends.
    own: String,
    /// The client's well-formed `X-Request-Id`, if any.
    client: Option<String>,
}

tokio::task_local! {
    /// The id of the request whose service future is being polled: set around the rest of
    /// the middleware chain, so every problem rendered while serving it (in a handler, an
    /// extractor or a middleware) carries it without anyone passing it along.
    static CURRENT: RequestId;
}

/// The id shown to the client of the request being served (see [`RequestId::shown`]), when
/// called while serving one.
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.shown().to_owned()).ok()
}

/// The server's own id of the request being served, for log lines.
pub fn current_own() -> Option<String> {
    CURRENT.try_with(|id| id.own.clone()).ok()
}

impl RequestId {
    /// The server's own id: what audit entries and log lines call `request_id`.
    pub fn own(&self) -> &str {
        &self.own
    }

    /// The client's `X-Request-Id`, when it sent a well-formed one.
    pub fn client(&self) -> Option<&str> {
        self.client.as_deref()
    }

    /// What the response header and problem bodies carry: the client's id echoed, or the
    /// server's own when the client sent none (or a malformed one).
    pub fn shown(&self) -> &str {
        self.client.as_deref().unwrap_or(&self.own)
    }

    /// An incoming id is kept only if it is 1–128 characters of `[A-Za-z0-9._-]`.
    fn accept(incoming: Option<&HeaderValue>) -> Self {
        let valid = incoming.and_then(|v| v.to_str().ok()).filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
        Self { own: uuid::Uuid::now_v7().to_string(), client: valid.map(str::to_owned) }
    }
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = RequestId::accept(req.headers().get(HEADER));
    req.extensions_mut().insert(id.clone());
    // A fixed set: a client inventing methods must not grow the label set.
    let method = HttpMethod::classify(req.method().as_str());
    let route =
        super::route_template(req.request()).map_or_else(|| "unmatched".to_owned(), |r| r.to_string());
    let span = tracing::info_span!(
        "request",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method.as_str(),
        http.route = route.as_str(),
        http.response.status_code = tracing::field::Empty,
        request_id = id.own(),
        trace_id = tracing::field::Empty,
        tenant = tracing::field::Empty,
    );
    if telemetry::exporting() {
        span.record("otel.name", format!("{method} {route}"));
    }
    telemetry::continue_trace(&span, req.headers());
    let started = Instant::now();
    let mut response = CURRENT.scope(id.clone(), next.call(req)).instrument(span.clone()).await?;
    if let Ok(value) = HeaderValue::from_str(id.shown()) {
        response.headers_mut().insert(HEADER, value);
    }
    let status = response.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    let _entered = span.enter();
    metrics::counter!(
        "sba_http_requests_total",
        "method" => method.as_str(),
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!("sba_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    tracing::info!(
        request_id = id.own(),
        client_request_id = id.client(),
        method = %method,
        route,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_millis(),
        "request"
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_incoming_ids_are_shown_but_never_the_servers_own() {
        let value = HeaderValue::from_static("abc-123_x.y");
        let id = RequestId::accept(Some(&value));
        assert_eq!(id.shown(), "abc-123_x.y");
        assert_eq!(id.client(), Some("abc-123_x.y"));
        assert!(uuid::Uuid::parse_str(id.own()).is_ok(), "{}", id.own());
        assert_ne!(RequestId::accept(Some(&value)).own(), id.own(), "two requests, two ids");
    }

    #[test]
    fn malformed_or_overlong_ids_are_replaced() {
        for bad in ["", "has space", "semi;colon", &"a".repeat(129)] {
            let value = HeaderValue::from_str(bad).unwrap();
            let id = RequestId::accept(Some(&value));
            assert_eq!(id.client(), None);
            assert_eq!(id.shown(), id.own());
            assert!(uuid::Uuid::parse_str(id.shown()).is_ok());
        }
    }
}
