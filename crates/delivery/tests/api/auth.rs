//! Authentication end to end: a server configured with both HS256 secrets and a JWKS URL
//! (a local JWKS server here, Supabase's asymmetric keys in production) accepts RS256 tokens
//! by `kid` and refuses every forged variant with a 401 problem and a precise `code`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::Response;
use sba_domain::Role;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{AUDIENCE, ISSUER, Store, TestApp, new_tenant, spawn_app_with};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../infrastructure/tests/fixtures");
const KID: &str = "rsa-key-a";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

/// A JWKS endpoint serving `{"keys": [rsa-key-a]}` at `/jwks.json`, and a server that
/// fetches its keys from there. The endpoint lives as long as the returned `MockServer`.
async fn app_with_jwks() -> (TestApp, MockServer) {
    let jwk: Value = serde_json::from_str(&fixture("rsa-a.jwk.json")).unwrap();
    let jwks = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "keys": [jwk] })))
        .mount(&jwks)
        .await;
    let url = format!("{}/jwks.json", jwks.uri());
    (spawn_app_with(Store::Sqlite, &[("SBA_AUTH__JWKS_URL", &url)]).await, jwks)
}

fn claims(tenant: &str) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({"sub": "user-1", "role": "authenticated", "app_metadata": {"tenant_id": tenant},
           "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE})
}

fn rs256(claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, &EncodingKey::from_rsa_der(&der(&fixture("rsa-a.private.pem")))).unwrap()
}

async fn list_runs(app: &TestApp, token: &str) -> Response {
    app.get("/v1/runs", token).await
}

async fn refused(app: &TestApp, token: &str, code: &str) {
    let response = list_runs(app, token).await;
    assert_eq!(response.status(), 401, "{code}");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code);
    let detail = body["detail"].as_str().unwrap();
    for leak in ["kid", "signature", "InvalidSignature", "jwks", "key"] {
        assert!(!detail.to_lowercase().contains(&leak.to_lowercase()), "{code}: `{detail}` says {leak}");
    }
}

#[tokio::test]
async fn an_rs256_token_from_the_jwks_is_accepted_beside_hs256_tokens() {
    let (app, _jwks) = app_with_jwks().await;
    let tenant = new_tenant();
    let created =
        app.post_json("/v1/runs", &rs256(&claims(&tenant.to_string()), KID), &json!({"agent": "bot"})).await;
    assert_eq!(created.status(), 201);
    let run: Value = created.json().await.unwrap();
    assert_eq!(run["tenant_id"], tenant.to_string());
    assert_eq!(run["user_id"], "user-1");
    assert_eq!(list_runs(&app, &app.token(tenant, "alice", Role::Authenticated)).await.status(), 200);
}

#[tokio::test]
async fn forged_and_unusable_rs256_tokens_are_401_with_their_code() {
    let (app, _jwks) = app_with_jwks().await;
    let tenant = new_tenant().to_string();

    refused(&app, &rs256(&claims(&tenant), "unknown-kid"), "token_invalid").await;

    // Algorithm confusion: HS256 "signed" with the RSA public key as the HMAC secret.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(KID.to_owned());
    let public = fixture("rsa-a.public.pem");
    let confused = encode(&header, &claims(&tenant), &EncodingKey::from_secret(public.as_bytes())).unwrap();
    refused(&app, &confused, "token_invalid").await;

    let none_header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": KID}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims(&tenant).to_string());
    refused(&app, &format!("{none_header}.{body}."), "token_invalid").await;

    let mut wrong_audience = claims(&tenant);
    wrong_audience["aud"] = json!("someone-else");
    refused(&app, &rs256(&wrong_audience, KID), "token_invalid").await;

    let mut wrong_issuer = claims(&tenant);
    wrong_issuer["iss"] = json!("https://evil.test/auth/v1");
    refused(&app, &rs256(&wrong_issuer, KID), "token_invalid").await;

    let mut expired = claims(&tenant);
    expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 60);
    refused(&app, &rs256(&expired, KID), "token_expired").await;

    let mut not_yet = claims(&tenant);
    not_yet["nbf"] = json!(jsonwebtoken::get_current_timestamp() + 600);
    refused(&app, &rs256(&not_yet, KID), "token_invalid").await;

    let mut user_metadata_only = claims(&tenant);
    user_metadata_only["app_metadata"] = json!({});
    user_metadata_only["user_metadata"] = json!({"tenant_id": tenant});
    refused(&app, &rs256(&user_metadata_only, KID), "tenant_missing").await;

    let mut anon = claims(&tenant);
    anon["role"] = json!("anon");
    refused(&app, &rs256(&anon, KID), "token_invalid").await;

    let mut tampered = rs256(&claims(&tenant), KID);
    tampered.push('x');
    refused(&app, &tampered, "token_invalid").await;
}

#[tokio::test]
async fn an_authenticated_caller_without_the_role_gets_403_not_401() {
    let (app, _jwks) = app_with_jwks().await;
    let token = rs256(&claims(&new_tenant().to_string()), KID);
    let response = app.get("/v1/audit-logs", &token).await;
    assert_eq!(response.status(), 403);
    assert!(!response.headers().contains_key("www-authenticate"));
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "forbidden");
}

#[tokio::test]
async fn me_answers_who_the_token_proves() {
    let (app, _jwks) = app_with_jwks().await;
    let tenant = new_tenant();
    let body: Value =
        app.get("/v1/me", &rs256(&claims(&tenant.to_string()), KID)).await.json().await.unwrap();
    assert_eq!(body, json!({"tenant_id": tenant.to_string(), "user_id": "user-1", "role": "authenticated"}));
    let anonymous = app.get_anonymous("/v1/me").await;
    assert_eq!(anonymous.status(), 401);
}
