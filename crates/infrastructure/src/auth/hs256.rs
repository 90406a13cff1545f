//! HS256 JWTs with several shared secrets: the first signs, all verify (key rotation).

use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode};
use sba_application::ports::{TokenError, TokenVerifier, VerifiedToken};
use sba_domain::{Role, TenantId, UserId};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::claims::{Claims, JwtRules, refusal, verified_from};

/// Verifies HS256 tokens against every configured secret.
pub struct HsJwtVerifier {
    keys: Vec<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for HsJwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsJwtVerifier").field("secrets", &self.keys.len()).finish_non_exhaustive()
    }
}

impl HsJwtVerifier {
    /// A verifier that accepts tokens signed with any of `secrets`.
    pub fn new(secrets: &[SecretString], rules: &JwtRules) -> Self {
        let keys = secrets.iter().map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes())).collect();
        Self { keys, validation: rules.validation(Algorithm::HS256) }
    }
}

#[async_trait]
impl TokenVerifier for HsJwtVerifier {
    async fn verify_token(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid);
        }
        let mut outcome = Err(TokenError::Invalid);
        for key in &self.keys {
            match decode::<Claims>(token, key, &self.validation) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                // Only a signature mismatch means "try the next secret"; any other failure
                // happened after the signature matched, so it is the token's final verdict.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                Err(e) => return Err(refusal(&e)),
            }
        }
        verified_from(outcome?, &self.validation)
    }
}

/// What a development token should say.
#[derive(Debug, Clone)]
pub struct DevTokenRequest {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: Role,
    pub ttl: Duration,
}

#[derive(Debug, Serialize)]
struct SignedClaims<'a> {
    sub: &'a str,
    tenant_id: String,
    role: &'static str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs tokens with the first configured secret (`sba dev-token`, tests).
pub struct HsJwtSigner {
    key: EncodingKey,
    rules: JwtRules,
}

impl std::fmt::Debug for HsJwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsJwtSigner").finish_non_exhaustive()
    }
}

impl HsJwtSigner {
    pub fn new(secret: &SecretString, rules: JwtRules) -> Self {
        Self { key: EncodingKey::from_secret(secret.expose_secret().as_bytes()), rules }
    }

    /// # Errors
    /// When the claims cannot be encoded (never expected for these claims).
    pub fn sign(&self, request: &DevTokenRequest) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = SignedClaims {
            sub: request.user_id.as_str(),
            tenant_id: request.tenant_id.to_string(),
            role: request.role.as_str(),
            iat: now,
            exp: now + request.ttl.as_secs(),
            iss: self.rules.issuer.as_deref(),
            aud: self.rules.audience.as_deref(),
        };
        Ok(encode(&Header::new(Algorithm::HS256), &claims, &self.key)?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    const TENANT: &str = "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    fn rules() -> JwtRules {
        JwtRules {
            issuer: Some("https://issuer.test".into()),
            audience: Some("sba".into()),
            leeway: Duration::ZERO,
        }
    }

    fn sign_raw(claims: &serde_json::Value, key: &str, alg: Algorithm) -> String {
        encode(&Header::new(alg), claims, &EncodingKey::from_secret(key.as_bytes())).unwrap()
    }

    fn valid_claims() -> serde_json::Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({"sub": "user-1", "tenant_id": TENANT, "role": "admin", "exp": now + 600,
               "iss": "https://issuer.test", "aud": "sba"})
    }

    fn verifier(secrets: &[&str]) -> HsJwtVerifier {
        let secrets: Vec<_> = secrets.iter().map(|s| secret(s)).collect();
        HsJwtVerifier::new(&secrets, &rules())
    }

    #[tokio::test]
    async fn accepts_a_token_signed_with_any_configured_secret() {
        let verifier = verifier(&["new-secret-new-secret-new-secret!", "old-secret-old-secret-old-secret!"]);
        for key in ["new-secret-new-secret-new-secret!", "old-secret-old-secret-old-secret!"] {
            let principal = verifier.verify(&sign_raw(&valid_claims(), key, Algorithm::HS256)).await.unwrap();
            assert_eq!(principal.tenant_id.to_string(), TENANT);
            assert_eq!(principal.role, Role::Admin);
            assert_eq!(principal.user_id.as_str(), "user-1");
        }
    }

    #[tokio::test]
    async fn a_verified_token_expires_at_its_exp_plus_the_leeway() {
        let claims = valid_claims();
        let exp = claims["exp"].as_u64().unwrap();
        let token = sign_raw(&claims, "k", Algorithm::HS256);
        let leeway = JwtRules { leeway: Duration::from_secs(30), ..rules() };
        let verified = HsJwtVerifier::new(&[secret("k")], &leeway).verify_token(&token).await.unwrap();
        assert_eq!(verified.expires_at, std::time::UNIX_EPOCH + Duration::from_secs(exp + 30));
        assert_eq!(verified.principal.user_id.as_str(), "user-1");
    }

    #[tokio::test]
    async fn rejects_a_token_signed_with_a_retired_secret() {
        let verifier = verifier(&["new-secret-new-secret-new-secret!"]);
        let token = sign_raw(&valid_claims(), "old-secret-old-secret-old-secret!", Algorithm::HS256);
        assert_eq!(verifier.verify(&token).await, Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn rejects_an_expired_token_as_expired() {
        let mut claims = valid_claims();
        claims["exp"] = json!(jsonwebtoken::get_current_timestamp() - 120);
        let token = sign_raw(&claims, "k", Algorithm::HS256);
        assert_eq!(verifier(&["k"]).verify(&token).await, Err(TokenError::Expired));
    }

    #[tokio::test]
    async fn rejects_wrong_issuer_or_audience() {
        for (claim, value) in [("iss", "https://evil.test"), ("aud", "other")] {
            let mut claims = valid_claims();
            claims[claim] = json!(value);
            let token = sign_raw(&claims, "k", Algorithm::HS256);
            assert_eq!(verifier(&["k"]).verify(&token).await, Err(TokenError::Invalid), "{claim}");
        }
    }

    #[tokio::test]
    async fn rejects_a_token_missing_the_configured_issuer_or_audience() {
        for claim in ["iss", "aud"] {
            let mut claims = valid_claims();
            claims.as_object_mut().unwrap().remove(claim);
            let token = sign_raw(&claims, "k", Algorithm::HS256);
            assert_eq!(verifier(&["k"]).verify(&token).await, Err(TokenError::Invalid), "{claim}");
        }
    }

    #[tokio::test]
    async fn rejects_a_token_that_is_not_valid_yet() {
        let mut claims = valid_claims();
        claims["nbf"] = json!(jsonwebtoken::get_current_timestamp() + 300);
        let token = sign_raw(&claims, "k", Algorithm::HS256);
        assert_eq!(verifier(&["k"]).verify(&token).await, Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn rejects_alg_none_and_other_algorithms() {
        let header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"none","typ":"JWT"}"#,
        );
        let body = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            valid_claims().to_string(),
        );
        assert_eq!(verifier(&["k"]).verify(&format!("{header}.{body}.")).await, Err(TokenError::Invalid));
        let hs512 = sign_raw(&valid_claims(), "k", Algorithm::HS512);
        assert_eq!(verifier(&["k"]).verify(&hs512).await, Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn takes_the_tenant_from_app_metadata_but_never_from_user_metadata() {
        let mut claims = valid_claims();
        claims.as_object_mut().unwrap().remove("tenant_id");
        claims["app_metadata"] = json!({"tenant_id": TENANT});
        let token = sign_raw(&claims, "k", Algorithm::HS256);
        assert_eq!(verifier(&["k"]).verify(&token).await.unwrap().tenant_id.to_string(), TENANT);

        claims.as_object_mut().unwrap().remove("app_metadata");
        claims["user_metadata"] = json!({"tenant_id": TENANT});
        let token = sign_raw(&claims, "k", Algorithm::HS256);
        assert_eq!(verifier(&["k"]).verify(&token).await, Err(TokenError::TenantMissing));
    }

    #[tokio::test]
    async fn rejects_unknown_roles_and_malformed_tenants() {
        let mut claims = valid_claims();
        claims["role"] = json!("anon");
        assert_eq!(
            verifier(&["k"]).verify(&sign_raw(&claims, "k", Algorithm::HS256)).await,
            Err(TokenError::Invalid)
        );
        let mut claims = valid_claims();
        claims["tenant_id"] = json!("acme");
        assert_eq!(
            verifier(&["k"]).verify(&sign_raw(&claims, "k", Algorithm::HS256)).await,
            Err(TokenError::Invalid)
        );
    }

    #[tokio::test]
    async fn rejects_garbage() {
        for token in ["", "abc", "a.b.c", "Bearer x"] {
            assert_eq!(verifier(&["k"]).verify(token).await, Err(TokenError::Invalid), "{token}");
        }
    }

    #[tokio::test]
    async fn signer_tokens_verify_with_the_same_rules() {
        let signer = HsJwtSigner::new(&secret("k"), rules());
        let request = DevTokenRequest {
            tenant_id: TenantId::from_uuid(Uuid::now_v7()),
            user_id: UserId::parse("dev").unwrap(),
            role: Role::Agent,
            ttl: Duration::from_mins(1),
        };
        let principal = verifier(&["k"]).verify(&signer.sign(&request).unwrap()).await.unwrap();
        assert_eq!(principal.tenant_id, request.tenant_id);
        assert_eq!(principal.role, Role::Agent);
    }
}
