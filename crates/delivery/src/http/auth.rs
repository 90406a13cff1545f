//! Authentication: the `Authorization: Bearer` token becomes a [`RequestContext`].
//!
//! The middleware verifies a presented token once, before rate limiting (which keys by the
//! caller's tenant) and the handler; the [`Authenticated`] extractor then turns its outcome
//! into the context or the 401 problem. Routes without the extractor (`/healthz`) never
//! fail on a bad token.

use std::future::{Ready, ready};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage as _, HttpRequest, web};
use sba_application::RequestContext;
use sba_application::admission::{AdmissionError, AdmittedTenant};
use sba_application::context::AccessToken;
use sba_application::ports::TokenError;
use sba_domain::{Principal, Tenant};

use super::client_addr::client_addr;
use super::error::{ApiError, ProblemCode};
use super::request_id::RequestId;
use super::stream::handshake::Presented;
use super::stream::{self, TokenExpiry};
use crate::http::AppState;

/// A request whose bearer token verified; handlers that take it are authenticated.
#[derive(Debug, Clone)]
pub struct Authenticated(pub RequestContext);

/// What the middleware found, kept in the request's extensions.
#[derive(Debug, Clone)]
enum Credentials {
    Missing,
    Refused(TokenError),
}

/// Whether the caller's tenant may use the service: the
/// [`TenantAdmission`](sba_application::admission::TenantAdmission) decision, made once per
/// request after the token verified.
#[derive(Debug)]
pub struct TenantStanding(Result<AdmittedTenant, AdmissionError>);

impl TenantStanding {
    /// The tenant's settings, when the directory answered (a suspended tenant's too: the
    /// rate limiter reads its plan and quota).
    pub const fn tenant(&self) -> Option<&Tenant> {
        match &self.0 {
            Ok(admitted) => Some(admitted.tenant()),
            Err(AdmissionError::Suspended(tenant)) => Some(tenant),
            Err(AdmissionError::Unknown(_) | AdmissionError::DirectoryUnavailable(_)) => None,
        }
    }

    /// The refusal of a request of this tenant, if any: 403 for a suspended or unknown
    /// tenant, 503 while the directory cannot say (never a guess).
    fn refusal(&self) -> Option<ApiError> {
        match &self.0 {
            Ok(_) => None,
            Err(AdmissionError::Suspended(_)) => Some(ApiError::new(
                ProblemCode::TenantSuspended,
                "This tenant is suspended; contact the platform's operators.",
            )),
            Err(AdmissionError::Unknown(_)) => Some(ApiError::new(
                ProblemCode::TenantUnknown,
                "The token names a tenant this service does not know.",
            )),
            Err(AdmissionError::DirectoryUnavailable(_)) => Some(
                ApiError::new(
                    ProblemCode::TenantDirectoryUnavailable,
                    "The caller's tenant cannot be checked right now; retry shortly.",
                )
                .with_retry_after_ms(1000),
            ),
        }
    }
}

/// Verifies the bearer token, if any, and records the outcome: the [`Principal`] itself
/// and its [`TenantStanding`] when it verified (CORS and rate limits read them),
/// [`Credentials`] otherwise.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    // The WebSocket handshake may carry its token elsewhere (browsers cannot set headers).
    let presented = if super::route_template(req.request()).as_deref() == Some(stream::ROUTE) {
        match stream::handshake::token(req.request()) {
            Presented::Token(token) => Ok(token),
            Presented::Unreadable => Err(Credentials::Refused(TokenError::Invalid)),
            Presented::Missing => Err(Credentials::Missing),
        }
    } else {
        bearer_token(req.request())
    };
    let outcome = match presented {
        Err(credentials) => Err(credentials),
        Ok(token) => match req.app_data::<web::Data<AppState>>() {
            Some(state) => match state.verifier.verify_token(&token).await {
                Ok(verified) => {
                    let standing = TenantStanding(state.admission.admit(&verified.principal).await);
                    Ok((verified, AccessToken::new(&token), standing))
                }
                Err(error) => Err(Credentials::Refused(error)),
            },
            None => Err(Credentials::Refused(TokenError::Invalid)),
        },
    };
    match outcome {
        Ok((verified, token, standing)) => {
            // The request span (request_id.rs) names the tenant it served.
            tracing::Span::current().record("tenant", tracing::field::display(verified.principal.tenant_id));
            let mut extensions = req.extensions_mut();
            extensions.insert(verified.principal);
            extensions.insert(TokenExpiry(verified.expires_at));
            extensions.insert(token);
            extensions.insert(standing);
        }
        Err(credentials) => {
            req.extensions_mut().insert(credentials);
        }
    }
    next.call(req).await
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (request_id, client_request_id) = req.extensions().get::<RequestId>().map_or_else(
            || (uuid::Uuid::now_v7().to_string(), None),
            |id| (id.own().to_owned(), id.client().map(str::to_owned)),
        );
        // X-Forwarded-For only through trusted proxies: otherwise it is the client's own
        // claim. Worked out before `extensions` is borrowed (it may be stored there).
        let ip = client_addr(req).map(|ip| ip.to_string());
        let extensions = req.extensions();
        let refusal = extensions.get::<TenantStanding>().and_then(TenantStanding::refusal);
        let result = match (extensions.get::<Principal>(), extensions.get::<Credentials>()) {
            (Some(principal), _) => refusal.map_or_else(
                || {
                    Ok(Self(RequestContext {
                        principal: principal.clone(),
                        ip,
                        request_id,
                        client_request_id,
                        token: extensions.get::<AccessToken>().cloned(),
                    }))
                },
                Err,
            ),
            (None, Some(Credentials::Refused(error))) => Err(ApiError::from(error.clone())),
            (None, Some(Credentials::Missing) | None) => Err(missing()),
        };
        ready(result)
    }
}

fn missing() -> ApiError {
    ApiError::new(ProblemCode::TokenMissing, "An `Authorization: Bearer <token>` header is required.")
}

fn bearer_token(req: &HttpRequest) -> Result<String, Credentials> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(Credentials::Missing);
    };
    let text = value.to_str().map_err(|_| Credentials::Refused(TokenError::Invalid))?;
    let (scheme, token) = text.trim().split_once(' ').ok_or(Credentials::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Credentials::Missing);
    }
    Ok(token.trim().to_owned())
}
