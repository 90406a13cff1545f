//! RS256 and ES256 JWTs verified with the public keys of a JWKS endpoint (Supabase's
//! asymmetric signing keys), cached in memory.
//!
//! When the keys are fetched:
//! - lazily, for the first token (or at startup with [`JwksVerifier::prefetch`]);
//! - when a token names a `kid` the cache does not know (a rotation), but at most once per
//!   `min_refresh_interval` whatever triggers it, and one fetch at a time: tokens with forged
//!   kids cannot make SBA hammer the endpoint;
//! - in the background of a request whose key is older than `max_key_age`, so that a key
//!   removed from the set (revoked) stops verifying without a restart. That request, and
//!   every other until the fetch lands, is answered from the cache: a known kid never waits
//!   for the network.
//!
//! A failed fetch (timeout, non-2xx, oversized or malformed body) keeps the cached keys and
//! logs a warning; a successful one replaces the whole set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use sba_application::ports::{TokenError, TokenVerifier, VerifiedToken};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use tracing::Instrument as _;
use url::Url;

use crate::trace_context;

use super::claims::{Claims, JwtRules, refusal, verified_from};

/// A key set is a few KiB; anything much larger is not one.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Where the keys come from and how often they may be fetched.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// The key set, e.g. `https://<project>.supabase.co/auth/v1/.well-known/jwks.json`.
    pub url: Url,
    /// The shortest time between two fetches, whatever asks for them.
    pub min_refresh_interval: Duration,
    /// Cached keys older than this are refetched in the background of the next request.
    pub max_key_age: Duration,
    /// The longest one fetch may take, connecting and reading the body included.
    pub fetch_timeout: Duration,
}

impl JwksSettings {
    pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_KEY_AGE: Duration = Duration::from_mins(10);
    pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(2);

    /// Settings for `url` with the default intervals (30 s, 10 min, 2 s).
    pub fn new(url: Url) -> Self {
        Self {
            url,
            min_refresh_interval: Self::DEFAULT_MIN_REFRESH_INTERVAL,
            max_key_age: Self::DEFAULT_MAX_KEY_AGE,
            fetch_timeout: Self::DEFAULT_FETCH_TIMEOUT,
        }
    }
}

/// Verifies RS256 and ES256 tokens whose header names a `kid` published at a JWKS URL.
pub struct JwksVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    url: Url,
    /// The URL without credentials or query, for logs.
    source: String,
    min_refresh_interval: Duration,
    max_key_age: Duration,
    fetch_timeout: Duration,
    client: reqwest::Client,
    rs256: Validation,
    es256: Validation,
    cache: RwLock<Cache>,
    /// Held while a fetch runs (one at a time); says when the last one started.
    last_fetch: Arc<Mutex<Option<Instant>>>,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<VerifyingKey>>,
    fetched_at: Option<Instant>,
}

/// A public key and the one algorithm it verifies, as the key set (not the token) says.
struct VerifyingKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

impl std::fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.inner;
        f.debug_struct("JwksVerifier")
            .field("source", &inner.source)
            .field("min_refresh_interval", &inner.min_refresh_interval)
            .field("max_key_age", &inner.max_key_age)
            .field("fetch_timeout", &inner.fetch_timeout)
            .finish_non_exhaustive()
    }
}

impl JwksVerifier {
    /// A verifier for the keys at `settings.url`, checking claims by `rules`. Fetches
    /// nothing yet.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (its TLS backend failed to initialise).
    pub fn new(settings: JwksSettings, rules: &JwtRules) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.fetch_timeout)
            .timeout(settings.fetch_timeout)
            .user_agent(concat!("sba/", env!("CARGO_PKG_VERSION")))
            // The keys come from the configured URL and nowhere else: a redirect (to plain
            // http, or to a host an attacker controls) is a failed fetch.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the JWKS HTTP client")?;
        let mut source = settings.url.clone();
        source.set_query(None);
        source.set_fragment(None);
        // Both only fail for URLs that cannot carry credentials, which then have none.
        let _ = source.set_username("");
        let _ = source.set_password(None);
        Ok(Self {
            inner: Arc::new(Inner {
                url: settings.url,
                source: source.to_string(),
                min_refresh_interval: settings.min_refresh_interval,
                max_key_age: settings.max_key_age,
                fetch_timeout: settings.fetch_timeout,
                client,
                rs256: rules.validation(Algorithm::RS256),
                es256: rules.validation(Algorithm::ES256),
                cache: RwLock::default(),
                last_fetch: Arc::default(),
            }),
        })
    }

    /// Fetches the keys now rather than for the first token. Never fails: a failure is
    /// logged, the cache stays empty, and a token retries once `min_refresh_interval` has
    /// passed.
    pub async fn prefetch(&self) {
        let mut last_fetch = self.inner.last_fetch.lock().await;
        self.inner.refresh(&mut last_fetch).await;
    }

    async fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        {
            let cache = self.inner.cache.read().await;
            if let Some(key) = cache.keys.get(kid) {
                if cache.fetched_at.is_some_and(|at| at.elapsed() > self.inner.max_key_age) {
                    self.inner.refresh_in_background();
                }
                return Some(Arc::clone(key));
            }
        }
        self.inner.refresh_for(kid).await
    }
}

#[async_trait]
impl TokenVerifier for JwksVerifier {
    async fn verify_token(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        let validation = match header.alg {
            Algorithm::RS256 => &self.inner.rs256,
            Algorithm::ES256 => &self.inner.es256,
            _ => return Err(TokenError::Invalid),
        };
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let key = self.key(&kid).await.ok_or(TokenError::Invalid)?;
        // The key says which algorithm it verifies; a header claiming another is a forgery
        // (or a misconfiguration), never a reason to switch algorithms.
        if key.algorithm != header.alg {
            return Err(TokenError::Invalid);
        }
        let data = decode::<Claims>(token, &key.key, validation).map_err(|e| refusal(&e))?;
        verified_from(data.claims, validation)
    }
}

impl Inner {
    async fn cached(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.cache.read().await.keys.get(kid).cloned()
    }

    fn may_fetch(&self, last_fetch: Option<Instant>) -> bool {
        last_fetch.is_none_or(|at| at.elapsed() >= self.min_refresh_interval)
    }

    /// Fetches the set for a `kid` the cache does not know, unless a fetch ran recently.
    async fn refresh_for(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        let mut last_fetch = self.last_fetch.lock().await;
        // The fetch we may have queued behind can have brought the key.
        if let Some(key) = self.cached(kid).await {
            return Some(key);
        }
        if !self.may_fetch(*last_fetch) {
            return None;
        }
        self.refresh(&mut last_fetch).await;
        drop(last_fetch);
        self.cached(kid).await
    }

    /// Starts a fetch in the background unless one is running or ran recently.
    fn refresh_in_background(self: &Arc<Self>) {
        let Ok(mut last_fetch) = Arc::clone(&self.last_fetch).try_lock_owned() else {
            return;
        };
        if !self.may_fetch(*last_fetch) {
            return;
        }
        let inner = Arc::clone(self);
        tokio::spawn(async move { inner.refresh(&mut last_fetch).await });
    }

    /// Fetches the set and replaces the cache with it, or keeps the cache on failure.
    /// The caller holds the `last_fetch` lock.
    async fn refresh(&self, last_fetch: &mut Option<Instant>) {
        *last_fetch = Some(Instant::now());
        let span = tracing::debug_span!(
            target: "sba::dependency",
            "dependency call",
            otel.name = "jwks fetch",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
        );
        let fetched = self.fetch().instrument(span.clone()).await;
        if fetched.is_err() {
            span.record("otel.status_code", "error");
        }
        match fetched {
            Ok(keys) => {
                tracing::info!(jwks = %self.source, keys = keys.len(), "fetched the JWKS");
                *self.cache.write().await = Cache { keys, fetched_at: Some(Instant::now()) };
            }
            Err(error) => {
                tracing::warn!(
                    jwks = %self.source,
                    error = %chain(&error),
                    "could not fetch the JWKS; keeping the cached keys"
                );
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<VerifyingKey>>, FetchError> {
        let request = |e: reqwest::Error| FetchError::Request(e.without_url());
        let mut response =
            trace_context::inject(self.client.get(self.url.clone())).send().await.map_err(request)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        if response.content_length().is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let document: Document = serde_json::from_slice(&body).map_err(FetchError::Malformed)?;
        Ok(usable_keys(document.keys))
    }
}

/// Why a fetch failed; logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("the request failed")]
    Request(#[source] reqwest::Error),
    #[error("the server answered {0}")]
    Status(u16),
    #[error("the response is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the response is not a JWK set")]
    Malformed(#[source] serde_json::Error),
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A JWK set whose keys are parsed one by one, so one odd key does not hide the others.
#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The keys SBA can verify with, by `kid`; the first of duplicate kids wins.
fn usable_keys(raw: Vec<serde_json::Value>) -> HashMap<String, Arc<VerifyingKey>> {
    let mut keys = HashMap::new();
    for value in raw {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
        let (Some(kid), Some(key)) = (jwk.common.key_id.clone(), VerifyingKey::from_jwk(&jwk)) else {
            continue;
        };
        keys.entry(kid).or_insert_with(|| Arc::new(key));
    }
    keys
}

impl VerifyingKey {
    /// The key, if it is a signature key for RS256 or ES256.
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if jwk.common.public_key_use.as_ref().is_some_and(|usage| *usage != PublicKeyUse::Signature) {
            return None;
        }
        if jwk.common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify)) {
            return None;
        }
        let algorithm = algorithm_of(jwk)?;
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self { key, algorithm })
    }
}

/// RSA keys verify RS256 and P-256 keys ES256; a key whose `alg` says otherwise, and every
/// other key type (symmetric `oct` keys above all), verifies nothing here.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let (by_type, declared) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(alg) if alg == declared => Some(by_type),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const RSA_JWK: &str = include_str!("../../tests/fixtures/rsa-a.jwk.json");
    const EC_JWK: &str = include_str!("../../tests/fixtures/ec.jwk.json");

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn with(mut jwk: Value, field: &str, value: Value) -> Value {
        jwk[field] = value;
        jwk
    }

    fn without(mut jwk: Value, field: &str) -> Value {
        jwk.as_object_mut().unwrap().remove(field);
        jwk
    }

    fn algorithm(jwk: Value) -> Option<Algorithm> {
        VerifyingKey::from_jwk(&serde_json::from_value(jwk).unwrap()).map(|key| key.algorithm)
    }

    #[test]
    fn rsa_keys_verify_rs256_and_p256_keys_es256_declared_or_not() {
        assert_eq!(algorithm(fixture(RSA_JWK)), Some(Algorithm::RS256));
        assert_eq!(algorithm(without(fixture(RSA_JWK), "alg")), Some(Algorithm::RS256));
        assert_eq!(algorithm(fixture(EC_JWK)), Some(Algorithm::ES256));
        assert_eq!(algorithm(without(fixture(EC_JWK), "alg")), Some(Algorithm::ES256));
    }

    #[test]
    fn keys_declaring_another_algorithm_are_unusable() {
        for alg in ["PS256", "RS512", "ES256", "HS256", "RSA-OAEP", "made-up"] {
            assert_eq!(algorithm(with(fixture(RSA_JWK), "alg", json!(alg))), None, "RSA {alg}");
        }
        for alg in ["ES384", "RS256", "HS256"] {
            assert_eq!(algorithm(with(fixture(EC_JWK), "alg", json!(alg))), None, "EC {alg}");
        }
    }

    #[test]
    fn symmetric_other_curves_and_encryption_keys_are_unusable() {
        let oct = json!({"kty": "oct", "kid": "h", "alg": "HS256", "k": "c2VjcmV0"});
        assert_eq!(algorithm(oct), None);
        let p384 = without(with(fixture(EC_JWK), "crv", json!("P-384")), "alg");
        assert_eq!(algorithm(p384), None);
        assert_eq!(algorithm(with(fixture(RSA_JWK), "use", json!("enc"))), None);
        assert_eq!(algorithm(with(fixture(EC_JWK), "key_ops", json!(["sign"]))), None);
    }

    #[test]
    fn a_key_set_keeps_usable_keys_with_a_kid_and_skips_the_rest() {
        let rsa = fixture(RSA_JWK);
        let keys = usable_keys(vec![
            json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
            without(fixture(EC_JWK), "kid"),
            json!({"kid": 42}),
            json!("not a key"),
            rsa.clone(),
            with(fixture(EC_JWK), "kid", rsa["kid"].clone()),
        ]);
        assert_eq!(keys.len(), 1);
        let only = &keys[rsa["kid"].as_str().unwrap()];
        assert_eq!(only.algorithm, Algorithm::RS256, "the first of duplicate kids wins");
    }

    #[test]
    fn settings_default_to_30_s_between_fetches_10_min_key_age_and_2_s_timeout() {
        let settings =
            JwksSettings::new(Url::parse("https://p.supabase.co/auth/v1/.well-known/jwks.json").unwrap());
        assert_eq!(settings.min_refresh_interval, Duration::from_secs(30));
        assert_eq!(settings.max_key_age, Duration::from_mins(10));
        assert_eq!(settings.fetch_timeout, Duration::from_secs(2));
    }

    #[test]
    fn debug_shows_neither_credentials_nor_query_of_the_url() {
        let url = Url::parse("https://user:hunter2@p.supabase.co/jwks.json?apikey=sekret").unwrap();
        let verifier = JwksVerifier::new(JwksSettings::new(url), &JwtRules::default()).unwrap();
        let debug = format!("{verifier:?}");
        assert!(debug.contains("https://p.supabase.co/jwks.json"), "{debug}");
        for secret in ["user", "hunter2", "apikey", "sekret"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }
}
