//! One verifier for every algorithm SBA accepts, routing each token by its header's `alg`.
//!
//! Each verifier behind it knows only its own keys: HS256 tokens are checked against the
//! configured shared secrets and nothing else, RS256/ES256 tokens against the JWKS public
//! keys and nothing else. A token cannot pick a key meant for another algorithm (the
//! "HS256 signed with the RSA public key" confusion), whatever its header says.

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, decode_header};
use sba_application::ports::{TokenError, TokenVerifier, VerifiedToken};

use super::{HsJwtVerifier, JwksVerifier};

/// Verifies HS256 tokens with the shared secrets and RS256/ES256 tokens with the JWKS,
/// whichever are configured; every other algorithm is refused.
#[derive(Debug)]
pub struct JwtVerifier {
    hs256: Option<HsJwtVerifier>,
    jwks: Option<JwksVerifier>,
}

impl JwtVerifier {
    /// Tokens of an algorithm whose verifier is `None` are refused as invalid.
    pub fn new(hs256: Option<HsJwtVerifier>, jwks: Option<JwksVerifier>) -> Self {
        Self { hs256, jwks }
    }
}

#[async_trait]
impl TokenVerifier for JwtVerifier {
    async fn verify_token(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        match (header.alg, &self.hs256, &self.jwks) {
            (Algorithm::HS256, Some(hs256), _) => hs256.verify_token(token).await,
            (Algorithm::RS256 | Algorithm::ES256, _, Some(jwks)) => jwks.verify_token(token).await,
            _ => Err(TokenError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{EncodingKey, Header, encode};
    use secrecy::SecretString;
    use serde_json::json;
    use url::Url;

    use super::*;
    use crate::auth::{JwksSettings, JwtRules};

    const TENANT: &str = "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";
    const SECRET: &str = "shared-secret-shared-secret-shared";

    fn hs256() -> HsJwtVerifier {
        HsJwtVerifier::new(&[SecretString::from(SECRET.to_owned())], &JwtRules::default())
    }

    /// A JWKS verifier whose endpoint refuses connections: tokens routed to it fail
    /// without needing a server.
    fn unreachable_jwks() -> JwksVerifier {
        let mut settings = JwksSettings::new(Url::parse("http://127.0.0.1:9/jwks.json").unwrap());
        settings.fetch_timeout = Duration::from_millis(200);
        JwksVerifier::new(settings, &JwtRules::default()).unwrap()
    }

    fn token(alg: Algorithm, secret: &str) -> String {
        let claims = json!({"sub": "u", "tenant_id": TENANT,
                            "exp": jsonwebtoken::get_current_timestamp() + 600});
        let mut header = Header::new(alg);
        header.kid = Some("some-kid".into());
        encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[tokio::test]
    async fn routes_hs256_tokens_to_the_shared_secrets() {
        let verifier = JwtVerifier::new(Some(hs256()), Some(unreachable_jwks()));
        let principal = verifier.verify(&token(Algorithm::HS256, SECRET)).await.unwrap();
        assert_eq!(principal.tenant_id.to_string(), TENANT);
    }

    #[tokio::test]
    async fn refuses_hs256_tokens_when_no_secret_is_configured() {
        let verifier = JwtVerifier::new(None, Some(unreachable_jwks()));
        assert_eq!(verifier.verify(&token(Algorithm::HS256, SECRET)).await, Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn refuses_rs256_and_es256_tokens_when_no_jwks_is_configured() {
        let verifier = JwtVerifier::new(Some(hs256()), None);
        let header = |alg: &str| {
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                format!(r#"{{"alg":"{alg}","kid":"k"}}"#),
            )
        };
        for alg in ["RS256", "ES256"] {
            let unsigned = format!("{}.e30.c2ln", header(alg));
            assert_eq!(verifier.verify(&unsigned).await, Err(TokenError::Invalid), "{alg}");
        }
    }

    #[tokio::test]
    async fn refuses_every_other_algorithm() {
        let verifier = JwtVerifier::new(Some(hs256()), Some(unreachable_jwks()));
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            assert_eq!(verifier.verify(&token(alg, SECRET)).await, Err(TokenError::Invalid), "{alg:?}");
        }
        for garbage in ["", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
            assert_eq!(verifier.verify(garbage).await, Err(TokenError::Invalid), "{garbage}");
        }
    }
}
