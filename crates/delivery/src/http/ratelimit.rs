//! HTTP rate limiting (ADR 0006), before the handler runs: every `/v1/*` request (and the
//! playground's `POST /dev/token`) is keyed
//! `tenant|ip|METHOD|route template` ([`HttpLimitKey`]; unauthenticated requests per IP; the
//! IP is the client behind trusted proxies, [`super::client_addr`]),
//! decided by [`sba_application::ratelimit::RateLimits`], and answered with the IETF draft
//! -11 headers `RateLimit-Policy` and `RateLimit`; a refusal is 429 with `Retry-After` and
//! `retry_after_ms`.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, ResponseError as _, web};
use sba_application::ratelimit::{TENANT_AGGREGATE_POLICY, Verdict};
use sba_domain::Principal;
use sba_domain::ratelimit::{Decision, HttpLimitKey, Quota, TenantAggregateKey};

use super::auth::TenantStanding;
use super::client_addr::client_addr;
use super::error::{ApiError, ProblemCode};
use crate::http::AppState;

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let (Some(policies), Some(route)) = (
        state.rate_policies.clone(),
        super::route_template(req.request()).filter(|route| {
            route.starts_with("/v1/") || route.as_ref() == super::playground::dev_token::ROUTE
        }),
    ) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let method = req.method().clone();
    // The authentication middleware looked the tenant up already.
    let (tenant_id, tenant) = {
        let extensions = req.extensions();
        (
            extensions.get::<Principal>().map(|p| p.tenant_id),
            extensions.get::<TenantStanding>().and_then(TenantStanding::tenant).cloned(),
        )
    };
    let Some((policy, quota)) = policies.quota_for(method.as_str(), &route, tenant.as_ref()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let own_policy = policy.to_owned();
    let key = HttpLimitKey {
        tenant: tenant_id,
        ip: client_addr(req.request()),
        method: method.as_str(),
        route: &route,
    };
    // A known tenant's requests also count in its aggregate bucket, when configured.
    let aggregate = tenant_id.zip(policies.aggregate_quota(quota)).map(|(tenant, aggregate_quota)| {
        (TenantAggregateKey { tenant, method: method.as_str(), route: &route }.into(), aggregate_quota)
    });
    let (verdict, reported) =
        state.rate_limits.check_with_aggregate(key.into(), &own_policy, quota, aggregate).await;
    // The headers describe the bucket that decided: the aggregate when it refused or is
    // the tighter one.
    let (policy, quota) = match reported {
        Some(aggregate_quota) => (TENANT_AGGREGATE_POLICY, aggregate_quota),
        None => (own_policy.as_str(), quota),
    };

    match verdict {
        Verdict::Decided(Decision::Allowed { remaining, reset_us }) => {
            let mut response = next.call(req).await?;
            set_headers(response.headers_mut(), policy, quota, remaining, reset_us);
            Ok(response.map_into_left_body())
        }
        Verdict::Decided(Decision::Denied { retry_after_us, reset_us }) => {
            Ok(req.into_response(denied(policy, quota, retry_after_us, reset_us)).map_into_right_body())
        }
        Verdict::Unavailable => Ok(req.into_response(unavailable()).map_into_right_body()),
    }
}

/// The route part of the one rate-limit key of a client's CORS preflights
/// (`-|{ip}|OPTIONS|*`): `*` is the request target of an `OPTIONS` for the whole server.
/// A rule `<name> OPTIONS * <limit>` sets their quota.
pub const PREFLIGHT_ROUTE: &str = "*";

/// Counts a CORS preflight from `ip` against that client's preflight bucket; the refusal
/// to send when it is over its quota (or no limiter can decide and `fail_mode = closed`).
/// Preflights carry no token, so they are limited per client only.
pub async fn limit_preflight(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
) -> Option<actix_web::HttpResponse> {
    let policies = state.rate_policies.as_ref()?;
    let (policy, quota) =
        policies.quota_for(sba_domain::HttpMethod::Options.as_str(), PREFLIGHT_ROUTE, None)?;
    let key = HttpLimitKey {
        tenant: None,
        ip,
        method: sba_domain::HttpMethod::Options.as_str(),
        route: PREFLIGHT_ROUTE,
    };
    match state.rate_limits.check(key.into(), policy, quota, 1).await {
        Verdict::Decided(Decision::Allowed { .. }) => None,
        Verdict::Decided(Decision::Denied { retry_after_us, reset_us }) => {
            Some(denied(policy, quota, retry_after_us, reset_us))
        }
        Verdict::Unavailable => Some(unavailable()),
    }
}

/// 429 `rate_limited` with `Retry-After`, `retry_after_ms` and the draft -11 headers.
fn denied(policy: &str, quota: Quota, retry_after_us: u64, reset_us: u64) -> actix_web::HttpResponse {
    let error = ApiError::new(
        ProblemCode::RateLimited,
        format!("Too many requests; retry after {} s.", retry_after_secs(retry_after_us)),
    )
    .with_retry_after_ms(retry_after_us.div_ceil(1000));
    let mut response = error.error_response();
    let headers = response.headers_mut();
    set_headers(headers, policy, quota, 0, reset_us);
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(retry_after_us)));
    response
}

/// 503 `rate_limiter_unavailable` with `Retry-After: 1`.
fn unavailable() -> actix_web::HttpResponse {
    let error = ApiError::new(
        ProblemCode::RateLimiterUnavailable,
        "Requests cannot be admitted right now; retry shortly.",
    )
    .with_retry_after_ms(1000);
    let mut response = error.error_response();
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1_u64));
    response
}

fn set_headers(headers: &mut HeaderMap, policy: &str, quota: Quota, remaining: u32, reset_us: u64) {
    if let Ok(value) = HeaderValue::from_str(&policy_header(policy, quota)) {
        headers.insert(RATELIMIT_POLICY, value);
    }
    if let Ok(value) = HeaderValue::from_str(&ratelimit_header(policy, remaining, reset_us)) {
        headers.insert(RATELIMIT, value);
    }
}

const MICROS: u64 = 1_000_000;

/// `"<policy>";q=<limit>;w=<window secs>` (`RateLimit-Policy`, IETF httpapi draft -11).
fn policy_header(policy: &str, quota: Quota) -> String {
    format!("\"{policy}\";q={};w={}", quota.limit(), quota.window_secs())
}

/// `"<policy>";r=<remaining>;t=<secs until the quota is whole again>` (rounded up;
/// `RateLimit`, draft -11).
fn ratelimit_header(policy: &str, remaining: u32, reset_us: u64) -> String {
    format!("\"{policy}\";r={remaining};t={}", reset_us.div_ceil(MICROS))
}

/// `Retry-After` in whole seconds, rounded up and at least 1.
fn retry_after_secs(retry_after_us: u64) -> u64 {
    retry_after_us.div_ceil(MICROS).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_draft_11() {
        let quota = Quota::new(100, 60).unwrap();
        assert_eq!(policy_header("default", quota), "\"default\";q=100;w=60");
        assert_eq!(ratelimit_header("default", 42, 16_200_000), "\"default\";r=42;t=17");
        assert_eq!(ratelimit_header("default", 100, 0), "\"default\";r=100;t=0");
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(1_000_000), 1);
        assert_eq!(retry_after_secs(1_000_001), 2);
    }
}
