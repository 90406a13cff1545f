//! `POST /dev/token`: the playground's development tokens, signed with the server's first
//! HS256 secret exactly as `sba dev-token` signs them. Served only in development with the
//! playground on (`PlaygroundSettings::dev_tokens`); everywhere else the route does not
//! exist (404). Not in the OpenAPI document, which describes every deployment.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use sba_domain::{Role, TenantId, UserId};
use sba_infrastructure::auth::{DevTokenRequest, HsJwtSigner};
use serde::{Deserialize, Serialize};

use crate::http::error::{ApiError, FieldErrors};

/// The route (its rate limit is keyed by it, like a `/v1/*` route's).
pub const ROUTE: &str = "/dev/token";

/// The tenant of a token whose request names none: the README's example tenant, so the
/// playground's runs and the curl examples' are the same tenant's.
pub const DEFAULT_TENANT: &str = "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";

/// The user of a token whose request names none.
pub const DEFAULT_USER: &str = "playground";

/// How long a minted token is valid: a session at the page, after which it mints another.
pub const TTL: Duration = Duration::from_hours(1);

/// Signs the playground's tokens; in the app state only where [`ROUTE`] is served.
#[derive(Debug, Clone)]
pub struct DevTokenIssuer(Arc<HsJwtSigner>);

impl DevTokenIssuer {
    pub fn new(signer: HsJwtSigner) -> Self {
        Self(Arc::new(signer))
    }
}

/// Body of `POST /dev/token`; every member is optional. Unknown members are rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MintRequest {
    /// A UUID; [`DEFAULT_TENANT`] when absent.
    tenant_id: Option<String>,
    /// The token's `sub`; [`DEFAULT_USER`] when absent.
    user_id: Option<String>,
    /// `authenticated` (the default) or `admin`: the roles of a person at the page. Agent
    /// and service tokens are for programs, which use `sba dev-token`.
    role: Option<String>,
}

impl MintRequest {
    /// Parses every member, reporting all invalid ones at once.
    fn try_into_request(self) -> Result<DevTokenRequest, ApiError> {
        let mut errors = FieldErrors::default();
        let tenant_id = self.tenant_id.as_deref().unwrap_or(DEFAULT_TENANT).parse::<TenantId>().ok();
        if tenant_id.is_none() {
            errors.reject("tenant_id", "must be a UUID");
        }
        let user_id = UserId::parse(self.user_id.as_deref().unwrap_or(DEFAULT_USER)).ok();
        if user_id.is_none() {
            errors.reject("user_id", "must be 1-255 characters without control characters");
        }
        let role = match self.role.as_deref().unwrap_or("authenticated") {
            "authenticated" => Some(Role::Authenticated),
            "admin" => Some(Role::Admin),
            _ => {
                errors.reject("role", "must be `authenticated` or `admin`");
                None
            }
        };
        let request = tenant_id.zip(user_id).zip(role).map(|((tenant_id, user_id), role)| DevTokenRequest {
            tenant_id,
            user_id,
            role,
            ttl: TTL,
        });
        errors.finish(request)
    }
}

/// A minted token and what it says.
#[derive(Debug, Serialize)]
struct MintedToken {
    token: String,
    token_type: &'static str,
    expires_at: DateTime<Utc>,
    tenant_id: TenantId,
    user_id: String,
    role: &'static str,
}

/// Signs a token for the requested (or default) tenant, user and role.
pub(super) async fn mint(
    issuer: web::Data<DevTokenIssuer>,
    body: web::Json<MintRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner().try_into_request()?;
    let token = issuer.0.sign(&request).map_err(ApiError::internal)?;
    let expires_at = Utc::now() + TTL;
    Ok(HttpResponse::Ok()
        // A credential: no cache keeps it.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(MintedToken {
            token,
            token_type: "Bearer",
            expires_at,
            tenant_id: request.tenant_id,
            user_id: request.user_id.to_string(),
            role: request.role.as_str(),
        }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn request(json: serde_json::Value) -> Result<DevTokenRequest, ApiError> {
        serde_json::from_value::<MintRequest>(json).unwrap().try_into_request()
    }

    #[test]
    fn an_empty_request_is_an_authenticated_user_of_the_default_tenant_for_an_hour() {
        let minted = request(serde_json::json!({})).unwrap();
        assert_eq!(minted.tenant_id.to_string(), DEFAULT_TENANT);
        assert_eq!(minted.user_id.as_str(), DEFAULT_USER);
        assert_eq!(minted.role, Role::Authenticated);
        assert_eq!(minted.ttl, Duration::from_hours(1));
    }

    #[test]
    fn only_the_roles_of_a_person_are_minted() {
        assert_eq!(request(serde_json::json!({"role": "admin"})).unwrap().role, Role::Admin);
        for role in ["agent", "service", "root", ""] {
            let error = request(serde_json::json!({ "role": role })).unwrap_err();
            assert_eq!(error.code().as_str(), "validation_failed", "{role}");
        }
    }

    #[test]
    fn every_invalid_member_is_refused() {
        let error =
            request(serde_json::json!({"tenant_id": "acme", "user_id": "", "role": "agent"})).unwrap_err();
        assert_eq!(error.code().as_str(), "validation_failed");
        assert!(serde_json::from_value::<MintRequest>(serde_json::json!({"ttl": 5})).is_err());
    }
}
