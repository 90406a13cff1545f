//! Verification of bearer tokens.

use std::time::SystemTime;

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

/// A verified token: who it proves, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub principal: Principal,
    /// The instant from which the verifier refuses the token as expired (its `exp` plus the
    /// configured leeway): a WebSocket connection opened with it is closed then.
    pub expires_at: SystemTime,
}

/// Turns a bearer token into the [`Principal`] it proves.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TokenVerifier: std::fmt::Debug + Send + Sync + 'static {
    /// The principal `token` proves and when it stops proving it.
    ///
    /// # Errors
    /// A [`TokenError`] saying why the token does not prove a principal.
    async fn verify_token(&self, token: &str) -> Result<VerifiedToken, TokenError>;

    /// The principal `token` proves.
    ///
    /// # Errors
    /// As [`Self::verify_token`].
    async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        self.verify_token(token).await.map(|verified| verified.principal)
    }
}
