//! The browser playground (`GET /playground`) and its development token endpoint
//! (`POST /dev/token`): served with a strict policy, absent when turned off and, for the
//! token endpoint, absent in production whatever is configured. [`browser`] drives the page
//! in a real headless Chromium.

mod browser;
mod webdriver;

use reqwest::Method;
use sba_delivery::http::playground::dev_token::{DEFAULT_TENANT, DEFAULT_USER};
use sba_delivery::http::playground::{CONTENT_SECURITY_POLICY, PAGE};
use sba_infrastructure::internal_store::test_support::{fresh_postgres_url, fresh_supabase_url};
use sba_infrastructure::redis::test_support::redis_url;
use serde_json::{Value, json};

use crate::helpers::{Store, TestApp, json_of, new_tenant, problem, spawn_app, spawn_app_on, spawn_app_with};

async fn mint(app: &TestApp, body: &Value) -> reqwest::Response {
    app.request(Method::POST, "/dev/token").json(body).send().await.unwrap()
}

#[tokio::test]
async fn the_dev_token_endpoint_mints_tokens_the_api_accepts() {
    let app = spawn_app(Store::Sqlite).await;

    let response = mint(&app, &json!({})).await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    // Rate limited like an API route, per client address.
    assert!(response.headers().contains_key("ratelimit-policy"));
    let minted = json_of(response, 200).await;
    assert_eq!(minted["token_type"], "Bearer");
    assert_eq!(
        (&minted["tenant_id"], &minted["user_id"], &minted["role"]),
        (&json!(DEFAULT_TENANT), &json!(DEFAULT_USER), &json!("authenticated"))
    );
    let expires_at = chrono::DateTime::parse_from_rfc3339(minted["expires_at"].as_str().unwrap()).unwrap();
    let lifetime = expires_at.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((3590..=3600).contains(&lifetime), "{lifetime}");
    let me = json_of(app.get("/v1/me", minted["token"].as_str().unwrap()).await, 200).await;
    assert_eq!(me, json!({"tenant_id": DEFAULT_TENANT, "user_id": DEFAULT_USER, "role": "authenticated"}));

    let tenant = new_tenant();
    let admin = json_of(
        mint(&app, &json!({"tenant_id": tenant.to_string(), "user_id": "bob", "role": "admin"})).await,
        200,
    )
    .await;
    let me = json_of(app.get("/v1/me", admin["token"].as_str().unwrap()).await, 200).await;
    assert_eq!(me, json!({"tenant_id": tenant.to_string(), "user_id": "bob", "role": "admin"}));
}

#[tokio::test]
async fn the_dev_token_endpoint_mints_no_agent_or_service_token_and_names_every_invalid_member() {
    let app = spawn_app(Store::Sqlite).await;
    for role in ["agent", "service"] {
        problem(mint(&app, &json!({ "role": role })).await, 422, "validation_failed").await;
    }
    let refused = problem(
        mint(&app, &json!({"tenant_id": "acme", "user_id": "", "role": "root"})).await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> =
        refused["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["tenant_id", "user_id", "role"]);
    problem(mint(&app, &json!({"ttl_secs": 999_999})).await, 400, "invalid_json").await;
    let get = app.get_anonymous("/dev/token").await;
    problem(get, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn the_page_and_its_files_are_served_under_a_policy_that_allows_this_origin_only() {
    let app = spawn_app(Store::Sqlite).await;
    for (path, content_type) in [
        (PAGE, "text/html; charset=utf-8"),
        ("/playground/app.js", "text/javascript; charset=utf-8"),
        ("/playground/app.css", "text/css; charset=utf-8"),
    ] {
        let response = app.get_anonymous(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert!(headers.contains_key("x-request-id"), "{path}");
        assert!(!response.text().await.unwrap().is_empty(), "{path}");
    }
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
    }
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"), "{CONTENT_SECURITY_POLICY}");
    problem(app.request(Method::POST, PAGE).send().await.unwrap(), 405, "method_not_allowed").await;
}

#[tokio::test]
async fn with_the_playground_off_neither_the_page_nor_the_dev_token_endpoint_exists() {
    let app = spawn_app_with(Store::Sqlite, &[("SBA_PLAYGROUND__ENABLED", "false")]).await;
    for path in [PAGE, "/playground/app.js", "/playground/app.css"] {
        problem(app.get_anonymous(path).await, 404, "not_found").await;
    }
    problem(mint(&app, &json!({})).await, 404, "not_found").await;
}

#[tokio::test]
async fn production_never_mints_development_tokens_even_with_the_playground_on() {
    let supabase = fresh_supabase_url().await;
    let redis = redis_url();
    let app = spawn_app_on(
        &fresh_postgres_url().await,
        &[
            ("SBA_ENV", "production"),
            ("REDIS_URL", &redis),
            ("SUPABASE_URL", "https://supabase.invalid"),
            ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key"),
            ("SUPABASE_DB_URL", &supabase),
            ("SBA_CORS__ALLOWED_ORIGINS", "https://app.example.com"),
            ("SBA_PLAYGROUND__ENABLED", "true"),
        ],
    )
    .await;
    // The page is served (an operator turned it on), its token endpoint is not.
    assert_eq!(app.get_anonymous(PAGE).await.status(), 200);
    problem(mint(&app, &json!({})).await, 404, "not_found").await;
    problem(mint(&app, &json!({"role": "admin"})).await, 404, "not_found").await;
}
