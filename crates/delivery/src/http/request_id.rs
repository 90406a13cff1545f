//! Request ids: echo a well-formed incoming `X-Request-Id`, otherwise make one; put it on
//! every response, in every problem body and in the request's log line.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _};
use sba_domain::HttpMethod;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

tokio::task_local! {
    /// The id of the request whose service future is being polled: set around the rest of
    /// the middleware chain, so every problem rendered while serving it (in a handler, an
    /// extractor or a middleware) carries it without anyone passing it along.
    static CURRENT: RequestId;
}

/// The id of the request being served, when called while serving one.
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.0.clone()).ok()
}

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An incoming id is kept only if it is 1–128 characters of `[A-Za-z0-9._-]`.
    fn accept(incoming: Option<&HeaderValue>) -> Self {
        let valid = incoming.and_then(|v| v.to_str().ok()).filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
        Self(valid.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned))
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
    let started = Instant::now();
    let mut response = CURRENT.scope(id.clone(), next.call(req)).await?;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(HEADER, value);
    }
    let route =
        super::route_template(response.request()).map_or_else(|| "unmatched".to_owned(), |r| r.to_string());
    let status = response.status().as_u16();
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
        request_id = id.as_str(),
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
    fn well_formed_incoming_ids_are_kept() {
        let value = HeaderValue::from_static("abc-123_x.y");
        assert_eq!(RequestId::accept(Some(&value)).as_str(), "abc-123_x.y");
    }

    #[test]
    fn malformed_or_overlong_ids_are_replaced() {
        for bad in ["", "has space", "semi;colon", &"a".repeat(129)] {
            let value = HeaderValue::from_str(bad).unwrap();
            let id = RequestId::accept(Some(&value));
            assert_ne!(id.as_str(), bad);
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok());
        }
    }
}
