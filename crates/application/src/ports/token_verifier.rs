//! Verification of bearer tokens.

use async_trait::async_trait;
use sba_domain::Principal;

/// Why a token was refused. The variants are the machine-readable codes clients see, and
/// deliberately carry no detail that would help an attacker forge a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token's `exp` (plus leeway) has passed.
    #[error("the token has expired")]
    Expired,
    /// The token verifies but names no tenant in `tenant_id` or `app_metadata.tenant_id`.
    #[error("the token names no tenant")]
    TenantMissing,
    /// Anything else: malformed, bad signature, wrong algorithm, issuer, audience or role.
    #[error("the token is invalid")]
    Invalid,
}

/// Turns a bearer token into the [`Principal`] it proves.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TokenVerifier: std::fmt::Debug + Send + Sync + 'static {
    /// # Errors
    /// A [`TokenError`] saying why the token does not prove a principal.
    async fn verify(&self, token: &str) -> Result<Principal, TokenError>;
}
