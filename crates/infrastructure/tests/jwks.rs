//! `JwksVerifier` and `JwtVerifier` against a JWKS endpoint served by the test itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use sba_application::ports::{TokenError, TokenVerifier};
use sba_domain::Role;
use sba_infrastructure::auth::{HsJwtVerifier, JwksSettings, JwksVerifier, JwtRules, JwtVerifier};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use url::Url;

const TENANT: &str = "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";
const ISSUER: &str = "https://project.supabase.test/auth/v1";
const AUDIENCE: &str = "authenticated";

const RSA_A_KID: &str = "rsa-key-a";
const RSA_B_KID: &str = "rsa-key-b";
const EC_KID: &str = "ec-key";
const RSA_A_PRIVATE: &str = include_str!("fixtures/rsa-a.private.pem");
const RSA_A_PUBLIC: &str = include_str!("fixtures/rsa-a.public.pem");
const RSA_A_JWK: &str = include_str!("fixtures/rsa-a.jwk.json");
const RSA_B_PRIVATE: &str = include_str!("fixtures/rsa-b.private.pem");
const RSA_B_JWK: &str = include_str!("fixtures/rsa-b.jwk.json");
const EC_PRIVATE: &str = include_str!("fixtures/ec.private.pem");
const EC_JWK: &str = include_str!("fixtures/ec.jwk.json");

// ---------------------------------------------------------------------------------------
// A JWKS endpoint: one HTTP/1.1 exchange per connection, answer chosen by the test.

#[derive(Clone)]
enum Reply {
    /// `status` with `body`, `Content-Length` set.
    Body { status: u16, body: String },
    /// 200 with `body` and no `Content-Length`: the body ends when the connection closes.
    Unframed(String),
    /// 200 with `body`, after `delay`.
    Delayed(Duration, String),
    /// Reads the request and never answers.
    Stall,
}

struct JwksServer {
    url: Url,
    hits: Arc<AtomicUsize>,
    reply: Arc<Mutex<Reply>>,
}

impl JwksServer {
    async fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            Url::parse(&format!("http://{}/auth/v1/.well-known/jwks.json", listener.local_addr().unwrap()))
                .unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let reply = Arc::new(Mutex::new(reply));
        let (counter, current) = (Arc::clone(&hits), Arc::clone(&reply));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, Arc::clone(&counter), Arc::clone(&current)));
            }
        });
        Self { url, hits, reply }
    }

    fn serving(keys: &[&str]) -> Reply {
        Reply::Body { status: 200, body: key_set(keys) }
    }

    fn reply_with(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn settings(&self) -> JwksSettings {
        JwksSettings::new(self.url.clone())
    }
}

async fn answer(mut socket: TcpStream, hits: Arc<AtomicUsize>, reply: Arc<Mutex<Reply>>) {
    let mut request = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let reply = reply.lock().unwrap().clone();
    let (status, body, framed) = match reply {
        Reply::Body { status, body } => (status, body, true),
        Reply::Unframed(body) => (200, body, false),
        Reply::Delayed(delay, body) => {
            tokio::time::sleep(delay).await;
            (200, body, true)
        }
        Reply::Stall => {
            tokio::time::sleep(Duration::from_hours(1)).await;
            return;
        }
    };
    let length = if framed { format!("Content-Length: {}\r\n", body.len()) } else { String::new() };
    let head =
        format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n");
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(body.as_bytes()).await;
    let _ = socket.shutdown().await;
}

fn key_set(keys: &[&str]) -> String {
    let keys: Vec<Value> = keys.iter().map(|k| serde_json::from_str(k).unwrap()).collect();
    json!({ "keys": keys }).to_string()
}

// ---------------------------------------------------------------------------------------
// Tokens.

/// The DER inside a PEM file: `rust_crypto`'s `from_rsa_der` takes PKCS#1 ("RSA PRIVATE
/// KEY"), `from_ec_der` PKCS#8 ("PRIVATE KEY"); the fixtures are stored that way.
fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn rsa_a() -> EncodingKey {
    EncodingKey::from_rsa_der(&der(RSA_A_PRIVATE))
}

fn rsa_b() -> EncodingKey {
    EncodingKey::from_rsa_der(&der(RSA_B_PRIVATE))
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_der(&der(EC_PRIVATE))
}

fn rules() -> JwtRules {
    JwtRules { issuer: Some(ISSUER.into()), audience: Some(AUDIENCE.into()), leeway: Duration::ZERO }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// What Supabase puts in an access token, with the tenant set by an admin in `app_metadata`.
fn claims() -> Value {
    json!({"sub": "7d1c0b2a-3e4f-4a5b-8c6d-9e0f1a2b3c4d", "role": "authenticated",
           "app_metadata": {"provider": "email", "tenant_id": TENANT}, "user_metadata": {},
           "iat": now(), "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE})
}

fn sign(claims: &Value, alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, key).unwrap()
}

fn rs256_a() -> String {
    sign(&claims(), Algorithm::RS256, RSA_A_KID, &rsa_a())
}

fn unsigned(header: &Value, claims: &Value) -> String {
    let encode = |part: &Value| URL_SAFE_NO_PAD.encode(part.to_string());
    format!("{}.{}.", encode(header), encode(claims))
}

/// `token` under a header naming a random kid; its signature no longer matches, which does
/// not matter for a kid that is never found (and is what a forger would send).
fn with_random_kid(token: &str) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": uuid::Uuid::new_v4().to_string()});
    let (_, rest) = token.split_once('.').unwrap();
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
}

fn verifier(settings: JwksSettings) -> JwksVerifier {
    JwksVerifier::new(settings, &rules()).unwrap()
}

// ---------------------------------------------------------------------------------------
// Verification.

#[tokio::test]
async fn verifies_an_rs256_token_by_its_kid_with_one_fetch() {
    let server = JwksServer::start(JwksServer::serving(&[EC_JWK, RSA_A_JWK])).await;
    let verifier = verifier(server.settings());
    for _ in 0..3 {
        let principal = verifier.verify(&rs256_a()).await.unwrap();
        assert_eq!(principal.tenant_id.to_string(), TENANT);
        assert_eq!(principal.user_id.as_str(), "7d1c0b2a-3e4f-4a5b-8c6d-9e0f1a2b3c4d");
        assert_eq!(principal.role, Role::Authenticated);
    }
    assert_eq!(server.hits(), 1, "a known kid never triggers a fetch");
}

#[tokio::test]
async fn verifies_an_es256_token() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK, EC_JWK])).await;
    let verifier = verifier(server.settings());
    let mut claims = claims();
    claims["role"] = json!("service_role");
    let principal = verifier.verify(&sign(&claims, Algorithm::ES256, EC_KID, &ec())).await.unwrap();
    assert_eq!(principal.tenant_id.to_string(), TENANT);
    assert_eq!(principal.role, Role::Service);
}

#[tokio::test]
async fn prefetch_loads_the_keys_so_the_first_token_needs_no_fetch() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    let verifier = verifier(server.settings());
    verifier.prefetch().await;
    assert_eq!(server.hits(), 1);
    verifier.verify(&rs256_a()).await.unwrap();
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn prefetch_against_a_failing_server_returns_without_failing() {
    let server = JwksServer::start(Reply::Body { status: 503, body: String::new() }).await;
    let verifier = verifier(server.settings());
    verifier.prefetch().await;
    assert_eq!(server.hits(), 1);
}

// ---------------------------------------------------------------------------------------
// Refreshing.

#[tokio::test]
async fn a_rotated_in_kid_verifies_after_one_refresh() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    let mut settings = server.settings();
    settings.min_refresh_interval = Duration::ZERO;
    let verifier = verifier(settings);
    verifier.verify(&rs256_a()).await.unwrap();
    assert_eq!(server.hits(), 1);

    server.reply_with(JwksServer::serving(&[RSA_A_JWK, RSA_B_JWK]));
    let rotated = sign(&claims(), Algorithm::RS256, RSA_B_KID, &rsa_b());
    verifier.verify(&rotated).await.unwrap();
    assert_eq!(server.hits(), 2);
    verifier.verify(&rotated).await.unwrap();
    verifier.verify(&rs256_a()).await.unwrap();
    assert_eq!(server.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_unknown_kids_causes_at_most_one_fetch_per_interval() {
    // The delay keeps the first fetch in flight while the other tokens arrive.
    let server = JwksServer::start(Reply::Delayed(Duration::from_millis(200), key_set(&[RSA_A_JWK]))).await;
    let verifier = Arc::new(verifier(server.settings()));
    let genuine = rs256_a();
    for _ in 0..2 {
        let mut flood = JoinSet::new();
        for _ in 0..50 {
            let verifier = Arc::clone(&verifier);
            let forged = with_random_kid(&genuine);
            flood.spawn(async move { verifier.verify(&forged).await });
        }
        for verdict in flood.join_all().await {
            assert_eq!(verdict, Err(TokenError::Invalid));
        }
    }
    assert_eq!(server.hits(), 1);
    verifier.verify(&rs256_a()).await.unwrap();
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_stalled_jwks_server_makes_verification_fail_within_the_timeout() {
    let server = JwksServer::start(Reply::Stall).await;
    let mut settings = server.settings();
    settings.fetch_timeout = Duration::from_millis(300);
    let verifier = verifier(settings);
    let started = Instant::now();
    assert_eq!(verifier.verify(&rs256_a()).await, Err(TokenError::Invalid));
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn failed_refreshes_keep_the_cached_keys_working() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    let mut settings = server.settings();
    settings.min_refresh_interval = Duration::ZERO;
    let verifier = verifier(settings);
    verifier.verify(&rs256_a()).await.unwrap();

    let unknown = sign(&claims(), Algorithm::RS256, RSA_B_KID, &rsa_b());
    let failures = [
        Reply::Body { status: 500, body: key_set(&[RSA_B_JWK]) },
        Reply::Body { status: 200, body: "<html>not json</html>".into() },
        Reply::Body { status: 200, body: json!({"keys": "none"}).to_string() },
        Reply::Unframed(format!("{}{}", key_set(&[RSA_B_JWK]), " ".repeat(300 * 1024))),
    ];
    for (attempt, failure) in failures.into_iter().enumerate() {
        server.reply_with(failure);
        assert_eq!(verifier.verify(&unknown).await, Err(TokenError::Invalid), "attempt {attempt}");
        assert_eq!(server.hits(), attempt + 2, "attempt {attempt} refreshed");
        verifier.verify(&rs256_a()).await.unwrap();
    }
}

#[tokio::test]
async fn an_oversized_key_set_is_refused() {
    let padded = format!("{}{}", key_set(&[RSA_A_JWK]), " ".repeat(300 * 1024));
    for reply in [Reply::Body { status: 200, body: padded.clone() }, Reply::Unframed(padded)] {
        let server = JwksServer::start(reply).await;
        let verifier = verifier(server.settings());
        assert_eq!(verifier.verify(&rs256_a()).await, Err(TokenError::Invalid));
        assert_eq!(server.hits(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_verifying_after_the_background_refresh() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    let mut settings = server.settings();
    settings.min_refresh_interval = Duration::ZERO;
    settings.max_key_age = Duration::ZERO;
    let verifier = verifier(settings);
    verifier.verify(&rs256_a()).await.unwrap();

    server.reply_with(JwksServer::serving(&[RSA_B_JWK]));
    // Answered from the cache while the stale set is refetched in the background.
    verifier.verify(&rs256_a()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while verifier.verify(&rs256_a()).await.is_ok() {
        assert!(Instant::now() < deadline, "the revoked key still verifies");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(verifier.verify(&rs256_a()).await, Err(TokenError::Invalid));
    verifier.verify(&sign(&claims(), Algorithm::RS256, RSA_B_KID, &rsa_b())).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Algorithms.

#[tokio::test]
async fn a_header_alg_other_than_the_keys_is_invalid() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK, EC_JWK])).await;
    let verifier = verifier(server.settings());
    // ES256 claimed for the RSA key, and RS256 for the EC key.
    let es256_for_rsa = sign(&claims(), Algorithm::ES256, RSA_A_KID, &ec());
    assert_eq!(verifier.verify(&es256_for_rsa).await, Err(TokenError::Invalid));
    let rs256_for_ec = sign(&claims(), Algorithm::RS256, EC_KID, &rsa_a());
    assert_eq!(verifier.verify(&rs256_for_ec).await, Err(TokenError::Invalid));
    // Same key family, other hash: refused before any key is looked up.
    let rs384 = sign(&claims(), Algorithm::RS384, RSA_A_KID, &rsa_a());
    assert_eq!(verifier.verify(&rs384).await, Err(TokenError::Invalid));
}

#[tokio::test]
async fn alg_none_and_tokens_without_kid_are_invalid_without_a_fetch() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    let jwks = verifier(server.settings());
    let none = unsigned(&json!({"alg": "none", "typ": "JWT", "kid": RSA_A_KID}), &claims());
    assert_eq!(jwks.verify(&none).await, Err(TokenError::Invalid));
    let no_kid = encode(&Header::new(Algorithm::RS256), &claims(), &rsa_a()).unwrap();
    assert_eq!(jwks.verify(&no_kid).await, Err(TokenError::Invalid));
    let composite = JwtVerifier::new(None, Some(jwks));
    assert_eq!(composite.verify(&none).await, Err(TokenError::Invalid));
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_rsa_public_key_is_invalid() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    let hs256 =
        HsJwtVerifier::new(&[SecretString::from("the-real-shared-secret-0123456789".to_owned())], &rules());
    let composite = JwtVerifier::new(Some(hs256), Some(verifier(server.settings())));
    // The classic confusion: the public key (as PEM, and as DER) used as an HMAC secret.
    for public in [RSA_A_PUBLIC.as_bytes().to_vec(), der(RSA_A_PUBLIC)] {
        let forged = sign(&claims(), Algorithm::HS256, RSA_A_KID, &EncodingKey::from_secret(&public));
        assert_eq!(composite.verify(&forged).await, Err(TokenError::Invalid));
    }
    // The genuine tokens of both kinds still pass, so the refusal is not a blanket one.
    composite.verify(&rs256_a()).await.unwrap();
    let shared = EncodingKey::from_secret(b"the-real-shared-secret-0123456789");
    composite.verify(&sign(&claims(), Algorithm::HS256, "any", &shared)).await.unwrap();
}

#[tokio::test]
async fn symmetric_keys_published_in_the_key_set_are_never_used() {
    let secret = b"published-hmac-secret-0123456789";
    let oct = json!({"kty": "oct", "kid": "hmac", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret)});
    let server = JwksServer::start(JwksServer::serving(&[&oct.to_string(), RSA_A_JWK])).await;
    let jwks = verifier(server.settings());
    let token = sign(&claims(), Algorithm::HS256, "hmac", &EncodingKey::from_secret(secret));
    assert_eq!(jwks.verify(&token).await, Err(TokenError::Invalid));
    let composite = JwtVerifier::new(None, Some(jwks));
    assert_eq!(composite.verify(&token).await, Err(TokenError::Invalid));
}

// ---------------------------------------------------------------------------------------
// Claims.

async fn verdict(claims: &Value) -> Result<sba_domain::Principal, TokenError> {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    verifier(server.settings()).verify(&sign(claims, Algorithm::RS256, RSA_A_KID, &rsa_a())).await
}

#[tokio::test]
async fn an_expired_token_is_expired() {
    let mut claims = claims();
    claims["exp"] = json!(now() - 120);
    assert_eq!(verdict(&claims).await, Err(TokenError::Expired));
}

#[tokio::test]
async fn a_wrong_or_missing_issuer_or_audience_is_invalid() {
    for (claim, value) in
        [("iss", json!("https://evil.test")), ("aud", json!("other")), ("aud", json!(["other"]))]
    {
        let mut claims = claims();
        claims[claim] = value;
        assert_eq!(verdict(&claims).await, Err(TokenError::Invalid), "{claim}");
    }
    for claim in ["iss", "aud", "sub", "exp"] {
        let mut claims = claims();
        claims.as_object_mut().unwrap().remove(claim);
        assert_eq!(verdict(&claims).await, Err(TokenError::Invalid), "without {claim}");
    }
}

#[tokio::test]
async fn a_token_not_valid_before_a_future_nbf_is_invalid() {
    let mut claims = claims();
    claims["nbf"] = json!(now() + 300);
    assert_eq!(verdict(&claims).await, Err(TokenError::Invalid));
}

#[tokio::test]
async fn a_tenant_only_in_user_metadata_is_tenant_missing() {
    let mut claims = claims();
    claims["app_metadata"] = json!({"provider": "email"});
    claims["user_metadata"] = json!({"tenant_id": TENANT});
    assert_eq!(verdict(&claims).await, Err(TokenError::TenantMissing));
}

#[tokio::test]
async fn a_tenant_in_app_metadata_or_at_the_top_level_is_accepted() {
    let from_app_metadata = verdict(&claims()).await.unwrap();
    assert_eq!(from_app_metadata.tenant_id.to_string(), TENANT);
    let mut claims = claims();
    claims["app_metadata"] = json!({});
    claims["tenant_id"] = json!(TENANT);
    assert_eq!(verdict(&claims).await.unwrap().tenant_id.to_string(), TENANT);
}

#[tokio::test]
async fn an_unknown_role_is_invalid() {
    let mut claims = claims();
    claims["role"] = json!("anon");
    assert_eq!(verdict(&claims).await, Err(TokenError::Invalid));
}
