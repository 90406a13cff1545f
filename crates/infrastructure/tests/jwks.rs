//! `JwksVerifier` and `JwtVerifier` against a JWKS endpoint served by wiremock (and, for
//! bodies without `Content-Length`, by a hand-rolled server).
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
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockGuard, MockServer, ResponseTemplate};

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
// A JWKS endpoint on wiremock, answer chosen by the test.

const JWKS_PATH: &str = "/auth/v1/.well-known/jwks.json";

struct JwksServer {
    /// The mounted answer; dropping it unmounts it. Declared first to be dropped first.
    answer: Option<MockGuard>,
    server: MockServer,
}

impl JwksServer {
    async fn start(reply: ResponseTemplate) -> Self {
        let mut server = Self { answer: None, server: MockServer::start().await };
        server.reply_with(reply).await;
        server
    }

    fn serving(keys: &[&str]) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(key_set(keys))
    }

    /// Answers every later request with `reply`. The new mock is mounted before the old one
    /// is dropped (the older of two matching mocks wins), so no request falls between them.
    async fn reply_with(&mut self, reply: ResponseTemplate) {
        let mock = Mock::given(method("GET")).and(path(JWKS_PATH)).respond_with(reply);
        self.answer = Some(mock.mount_as_scoped(&self.server).await);
    }

    /// Every request received, whether a mock matched it or not.
    async fn hits(&self) -> usize {
        self.server.received_requests().await.unwrap().len()
    }

    fn settings(&self) -> JwksSettings {
        JwksSettings::new(Url::parse(&format!("{}{JWKS_PATH}", self.server.uri())).unwrap())
    }
}

/// Reads the request and answers an hour later: for the test, a server that never answers.
fn stall() -> ResponseTemplate {
    ResponseTemplate::new(200).set_delay(Duration::from_hours(1))
}

fn key_set(keys: &[&str]) -> Value {
    let keys: Vec<Value> = keys.iter().map(|k| serde_json::from_str(k).unwrap()).collect();
    json!({ "keys": keys })
}

// ---------------------------------------------------------------------------------------
// A hand-rolled JWKS endpoint, only for the cases wiremock cannot serve: a body without
// `Content-Length` that ends when the connection closes. wiremock answers through hyper,
// which always frames a body (`Content-Length`, or chunked when the length is unknown), so
// the size limit on a body of unknown length can only be reached through this server.
// One HTTP/1.1 exchange per connection.

#[derive(Clone)]
enum RawReply {
    /// `status` with `body`, `Content-Length` set.
    Body { status: u16, body: String },
    /// 200 with `body` and no `Content-Length`: the body ends when the connection closes.
    Unframed(String),
}

struct RawJwksServer {
    url: Url,
    hits: Arc<AtomicUsize>,
    reply: Arc<Mutex<RawReply>>,
}

impl RawJwksServer {
    async fn start(reply: RawReply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}{JWKS_PATH}", listener.local_addr().unwrap())).unwrap();
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

    fn reply_with(&self, reply: RawReply) {
        *self.reply.lock().unwrap() = reply;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn settings(&self) -> JwksSettings {
        JwksSettings::new(self.url.clone())
    }
}

async fn answer(mut socket: TcpStream, hits: Arc<AtomicUsize>, reply: Arc<Mutex<RawReply>>) {
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
        RawReply::Body { status, body } => (status, body, true),
        RawReply::Unframed(body) => (200, body, false),
    };
    let length = if framed { format!("Content-Length: {}\r\n", body.len()) } else { String::new() };
    let head =
        format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n");
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(body.as_bytes()).await;
    let _ = socket.shutdown().await;
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
    assert_eq!(server.hits().await, 1, "a known kid never triggers a fetch");
}

#[tokio::test]
async fn verifies_an_es256_token() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK, EC_JWK])).await;
    let verifier = verifier(server.settings());
    let mut claims = claims();
    claims["role"] = json!("service");
    let principal = verifier.verify(&sign(&claims, Algorithm::ES256, EC_KID, &ec())).await.unwrap();
    assert_eq!(principal.tenant_id.to_string(), TENANT);
    assert_eq!(principal.role, Role::Service);
}

/// Supabase's `service_role` key is a platform credential that bypasses row-level security,
/// not a principal of one tenant: a genuine token carrying it is refused.
#[tokio::test]
async fn refuses_a_genuine_supabase_service_role_token_as_invalid() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK, EC_JWK])).await;
    let verifier = verifier(server.settings());
    let mut claims = claims();
    claims["role"] = json!("service_role");
    let refused = verifier.verify(&sign(&claims, Algorithm::ES256, EC_KID, &ec())).await;
    assert_eq!(refused, Err(TokenError::Invalid));
}

#[tokio::test]
async fn prefetch_loads_the_keys_so_the_first_token_needs_no_fetch() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    let verifier = verifier(server.settings());
    verifier.prefetch().await;
    assert_eq!(server.hits().await, 1);
    verifier.verify(&rs256_a()).await.unwrap();
    assert_eq!(server.hits().await, 1);
}

#[tokio::test]
async fn a_redirect_from_the_jwks_url_is_not_followed_and_loads_no_key() {
    let keys = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    let target = format!("{}{JWKS_PATH}", keys.server.uri());
    let redirecting =
        JwksServer::start(ResponseTemplate::new(302).insert_header("Location", target.as_str())).await;
    let verifier = verifier(redirecting.settings());
    verifier.prefetch().await;
    assert_eq!(verifier.verify(&rs256_a()).await.unwrap_err(), TokenError::Invalid);
    assert_eq!(redirecting.hits().await, 1);
    assert_eq!(keys.hits().await, 0, "the redirect target was fetched");
}

#[tokio::test]
async fn prefetch_against_a_failing_server_returns_without_failing() {
    let server = JwksServer::start(ResponseTemplate::new(503)).await;
    let verifier = verifier(server.settings());
    verifier.prefetch().await;
    assert_eq!(server.hits().await, 1);
}

// ---------------------------------------------------------------------------------------
// Refreshing.

#[tokio::test]
async fn a_rotated_in_kid_verifies_after_one_refresh() {
    let mut server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    let mut settings = server.settings();
    settings.min_refresh_interval = Duration::ZERO;
    let verifier = verifier(settings);
    verifier.verify(&rs256_a()).await.unwrap();
    assert_eq!(server.hits().await, 1);

    server.reply_with(JwksServer::serving(&[RSA_A_JWK, RSA_B_JWK])).await;
    let rotated = sign(&claims(), Algorithm::RS256, RSA_B_KID, &rsa_b());
    verifier.verify(&rotated).await.unwrap();
    assert_eq!(server.hits().await, 2);
    verifier.verify(&rotated).await.unwrap();
    verifier.verify(&rs256_a()).await.unwrap();
    assert_eq!(server.hits().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_unknown_kids_causes_at_most_one_fetch_per_interval() {
    // The delay keeps the first fetch in flight while the other tokens arrive.
    let server =
        JwksServer::start(JwksServer::serving(&[RSA_A_JWK]).set_delay(Duration::from_millis(200))).await;
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
    assert_eq!(server.hits().await, 1);
    verifier.verify(&rs256_a()).await.unwrap();
    assert_eq!(server.hits().await, 1);
}

#[tokio::test]
async fn a_stalled_jwks_server_makes_verification_fail_within_the_timeout() {
    let server = JwksServer::start(stall()).await;
    let mut settings = server.settings();
    settings.fetch_timeout = Duration::from_millis(300);
    let verifier = verifier(settings);
    let started = Instant::now();
    assert_eq!(verifier.verify(&rs256_a()).await, Err(TokenError::Invalid));
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(server.hits().await, 1);
}

#[tokio::test]
async fn failed_refreshes_keep_the_cached_keys_working() {
    // The last failure is an unframed body, which only the hand-rolled server can send.
    let server =
        RawJwksServer::start(RawReply::Body { status: 200, body: key_set(&[RSA_A_JWK]).to_string() }).await;
    let mut settings = server.settings();
    settings.min_refresh_interval = Duration::ZERO;
    let verifier = verifier(settings);
    verifier.verify(&rs256_a()).await.unwrap();

    let unknown = sign(&claims(), Algorithm::RS256, RSA_B_KID, &rsa_b());
    let failures = [
        RawReply::Body { status: 500, body: key_set(&[RSA_B_JWK]).to_string() },
        RawReply::Body { status: 200, body: "<html>not json</html>".into() },
        RawReply::Body { status: 200, body: json!({"keys": "none"}).to_string() },
        RawReply::Unframed(format!("{}{}", key_set(&[RSA_B_JWK]), " ".repeat(300 * 1024))),
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
    let framed =
        JwksServer::start(ResponseTemplate::new(200).set_body_raw(padded.clone(), "application/json")).await;
    let verifier_of_framed = verifier(framed.settings());
    assert_eq!(verifier_of_framed.verify(&rs256_a()).await, Err(TokenError::Invalid));
    assert_eq!(framed.hits().await, 1);
    // Without `Content-Length`, which only the hand-rolled server can send.
    let unframed = RawJwksServer::start(RawReply::Unframed(padded)).await;
    let verifier_of_unframed = verifier(unframed.settings());
    assert_eq!(verifier_of_unframed.verify(&rs256_a()).await, Err(TokenError::Invalid));
    assert_eq!(unframed.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_verifying_after_the_background_refresh() {
    let mut server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    let mut settings = server.settings();
    settings.min_refresh_interval = Duration::ZERO;
    settings.max_key_age = Duration::ZERO;
    let verifier = verifier(settings);
    verifier.verify(&rs256_a()).await.unwrap();

    server.reply_with(JwksServer::serving(&[RSA_B_JWK])).await;
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
    assert_eq!(server.hits().await, 0);
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

/// With traces exported, a key fetch made while verifying a request's token is a client span
/// of that request's trace, and the JWKS endpoint receives its `traceparent`.
#[tokio::test]
async fn a_key_fetch_inside_a_traced_request_sends_its_traceparent() {
    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    let verifier = verifier(server.settings());
    let request = tracing::info_span!("request");
    let trace_id = request.context().span().span_context().trace_id().to_string();
    verifier.verify(&rs256_a()).instrument(request).await.unwrap();

    let sent = server.server.received_requests().await.unwrap();
    let traceparents: Vec<&str> =
        sent.iter().filter_map(|r| r.headers.get("traceparent")).map(|v| v.to_str().unwrap()).collect();
    assert_eq!(traceparents.len(), 1, "{traceparents:?}");
    assert!(
        traceparents[0].starts_with(&format!("00-{trace_id}-")),
        "{} in trace {trace_id}",
        traceparents[0]
    );
}

#[tokio::test]
async fn without_traces_a_key_fetch_sends_no_traceparent() {
    let server = JwksServer::start(JwksServer::serving(&[RSA_A_JWK])).await;
    verifier(server.settings()).verify(&rs256_a()).await.unwrap();
    let sent = server.server.received_requests().await.unwrap();
    assert!(sent.iter().all(|r| !r.headers.contains_key("traceparent")));
}
