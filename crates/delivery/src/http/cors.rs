//! Per-tenant CORS (ADR 0004): the global allow-list plus each tenant's own origins.
//!
//! - Preflights carry no token, so an origin passes when it is global or listed by any
//!   active tenant (an in-memory set, never a lookup by the client's origin); the
//!   preflight itself returns no data. Preflights are rate limited per client IP.
//! - Actual requests are decided after the handler, when the caller is known: a global
//!   origin, or one of the caller's tenant (the record admission loaded). A page of tenant
//!   A's origin therefore cannot
//!   read tenant B's data with a B token. Unauthenticated answers (401s) follow the
//!   preflight rule, so the page can read why it was refused.
//! - A disallowed origin gets no CORS header at all; `*` is never sent, so credentials are
//!   never combined with a wildcard.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, HttpResponse, ResponseError as _, web};
use sba_domain::Principal;

use super::auth::TenantStanding;
use super::error::{ApiError, ProblemCode};
use crate::http::AppState;

/// Methods the API serves.
const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Request headers a page may send.
pub const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, x-request-id";
/// Response headers a page may read.
const EXPOSE_HEADERS: &str =
    "x-request-id, location, idempotent-replayed, retry-after, ratelimit, ratelimit-policy";
/// How long a browser may reuse a preflight answer, in seconds.
const MAX_AGE: &str = "600";

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (Some(origin), Some(state)) = (origin, req.app_data::<web::Data<AppState>>().cloned()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    if is_preflight(&req) {
        if let Some(refusal) =
            super::ratelimit::limit_preflight(&state, super::client_addr::client_addr(req.request())).await
        {
            return Ok(req.into_response(refusal).map_into_right_body());
        }
        let allowed = state.origins.allows_anonymous(&origin).await;
        let response = if allowed {
            let mut response = HttpResponse::NoContent();
            response
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE));
            response.finish()
        } else {
            tracing::info!(origin, "CORS preflight from a disallowed origin refused");
            ApiError::new(ProblemCode::OriginNotAllowed, "This origin is not allowed to call the API.")
                .error_response()
        };
        let mut response = req.into_response(response);
        decorate(response.headers_mut(), &origin, allowed);
        return Ok(response.map_into_right_body());
    }

    let mut response = next.call(req).await?;
    // An authenticated caller is decided by its tenant's record, which admission loaded.
    let allowed = {
        let extensions = response.request().extensions();
        extensions.get::<Principal>().map(|_| {
            let tenant = extensions.get::<TenantStanding>().and_then(TenantStanding::tenant);
            state.origins.allows_for(&origin, tenant)
        })
    };
    let allowed = match allowed {
        Some(allowed) => allowed,
        None => state.origins.allows_anonymous(&origin).await,
    };
    decorate(response.headers_mut(), &origin, allowed);
    if allowed {
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
    }
    Ok(response.map_into_left_body())
}

fn is_preflight(req: &ServiceRequest) -> bool {
    req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// `Vary: Origin` always (the answer depends on it), and the allow headers when allowed.
fn decorate(headers: &mut actix_web::http::header::HeaderMap, origin: &str, allowed: bool) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if !allowed {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
}
