//! HS256 test tokens, signed as the server's configured secret expects (claims of
//! ARCHITECTURE.md §7: `sub`, `tenant_id`, `role`, `exp`, `iss`, `aud`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::Serialize;

/// Who the tokens speak for: one tenant, its rules of issuer and audience.
#[derive(Debug, Clone)]
pub struct Signer {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
    tenant: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    tenant_id: &'a str,
    role: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

impl Signer {
    pub fn new(secret: &str, issuer: Option<String>, audience: Option<String>, tenant: String) -> Self {
        Self { key: EncodingKey::from_secret(secret.as_bytes()), issuer, audience, tenant }
    }

    /// A token of user `sub` with `role` (`authenticated`, `agent`, ...), valid for `ttl`.
    pub fn sign(&self, sub: &str, role: &str, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            sub,
            tenant_id: &self.tenant,
            role,
            iat: now,
            exp: now + ttl.as_secs(),
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.key)
    }
}
