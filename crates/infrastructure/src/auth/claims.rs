//! The claim rules every verifier applies, whatever signed the token: lifetime, issuer,
//! audience, and where the tenant and the role come from.

use std::time::Duration;

use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, Validation};
use sba_application::ports::{TokenError, VerifiedToken};
use sba_domain::{Principal, Role, TenantId, UserId};
use serde::Deserialize;

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, Default)]
pub struct JwtRules {
    /// When set, `iss` is required and must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` is required and must contain it.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

impl JwtRules {
    /// How `jsonwebtoken` checks a token signed with `algorithm` (and only that one) under
    /// these rules: `exp` and `sub` always required, `nbf` honoured when present.
    pub(super) fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                // jsonwebtoken only checks `aud` when the token has one; a configured
                // audience must not be bypassed by leaving the claim out.
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        validation
    }
}

/// The claims SBA reads. The tenant is taken from `tenant_id` or `app_metadata.tenant_id`,
/// never from `user_metadata`, which users can edit themselves.
#[derive(Debug, Deserialize)]
pub(super) struct Claims {
    sub: String,
    /// Required by every validation ([`JwtRules::validation`]).
    #[serde(default)]
    exp: u64,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    app_metadata: Option<AppMetadata>,
}

#[derive(Debug, Deserialize)]
struct AppMetadata {
    #[serde(default)]
    tenant_id: Option<String>,
}

/// 9999-12-31T23:59:59Z: later expiries are taken as this one.
const LATEST_EXP: u64 = 253_402_300_799;

/// What a token `validation` accepted proves, and until when: its `exp` plus the leeway
/// the validation allows.
pub(super) fn verified_from(claims: Claims, validation: &Validation) -> Result<VerifiedToken, TokenError> {
    // Capped, so that an absurd `exp` from a trusted issuer cannot overflow `SystemTime`.
    let exp = claims.exp.saturating_add(validation.leeway).min(LATEST_EXP);
    let expires_at = std::time::UNIX_EPOCH + Duration::from_secs(exp);
    Ok(VerifiedToken { principal: principal_from(claims)?, expires_at })
}

/// The principal a verified token proves. A role SBA does not grant (Supabase's `anon`, and
/// its `service_role`, which is no tenant's principal) makes the token invalid.
pub(super) fn principal_from(claims: Claims) -> Result<Principal, TokenError> {
    let user_id = UserId::parse(&claims.sub).map_err(|_| TokenError::Invalid)?;
    let role = match claims.role.as_deref() {
        Some(name) => name.parse::<Role>().map_err(|_| TokenError::Invalid)?,
        None => Role::Authenticated,
    };
    let tenant = claims.tenant_id.or_else(|| claims.app_metadata.and_then(|m| m.tenant_id));
    let tenant_id =
        tenant.ok_or(TokenError::TenantMissing)?.parse::<TenantId>().map_err(|_| TokenError::Invalid)?;
    Ok(Principal { tenant_id, user_id, role })
}

/// The verdict on a token `jsonwebtoken` refused. It checks the signature before the
/// claims, so `Expired` is only ever said of a genuine token.
pub(super) fn refusal(error: &Error) -> TokenError {
    match error.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        _ => TokenError::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TENANT: &str = "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";

    fn principal(claims: serde_json::Value) -> Result<Principal, TokenError> {
        principal_from(serde_json::from_value(claims).unwrap())
    }

    #[test]
    fn an_absurd_expiry_is_capped_rather_than_overflowing() {
        let claims =
            serde_json::from_value(json!({"sub": "u", "tenant_id": TENANT, "exp": u64::MAX})).unwrap();
        let verified = verified_from(claims, &JwtRules::default().validation(Algorithm::HS256)).unwrap();
        assert_eq!(verified.expires_at, std::time::UNIX_EPOCH + Duration::from_secs(LATEST_EXP));
    }

    #[test]
    fn a_missing_role_means_authenticated() {
        let plain = principal(json!({"sub": "u", "tenant_id": TENANT})).unwrap();
        assert_eq!(plain.role, Role::Authenticated);
        let service = principal(json!({"sub": "u", "tenant_id": TENANT, "role": "service"})).unwrap();
        assert_eq!(service.role, Role::Service);
    }

    #[test]
    fn a_supabase_service_role_token_is_not_a_tenant_principal() {
        let claims = json!({"sub": "u", "tenant_id": TENANT, "role": "service_role"});
        assert_eq!(principal(claims), Err(TokenError::Invalid));
    }

    #[test]
    fn the_top_level_tenant_wins_over_app_metadata() {
        let other = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
        let principal =
            principal(json!({"sub": "u", "tenant_id": TENANT, "app_metadata": {"tenant_id": other}}))
                .unwrap();
        assert_eq!(principal.tenant_id.to_string(), TENANT);
    }

    #[test]
    fn user_metadata_never_names_the_tenant() {
        let claims = json!({"sub": "u", "user_metadata": {"tenant_id": TENANT}});
        assert_eq!(principal(claims), Err(TokenError::TenantMissing));
    }

    #[test]
    fn validation_requires_the_configured_issuer_and_audience_claims() {
        let rules = JwtRules { issuer: Some("i".into()), audience: Some("a".into()), leeway: Duration::ZERO };
        let validation = rules.validation(Algorithm::RS256);
        for claim in ["exp", "sub", "iss", "aud"] {
            assert!(validation.required_spec_claims.contains(claim), "{claim}");
        }
        assert_eq!(validation.algorithms, vec![Algorithm::RS256]);

        let open = JwtRules::default().validation(Algorithm::HS256);
        assert!(!open.validate_aud);
        assert!(!open.required_spec_claims.contains("iss"));
    }
}
