//! HTTP rate limiting with the in-process limiter: draft -11 headers, 429 refusals, keys by
//! tenant, IP, method and route template, rules from configuration. (The Redis limiter and
//! cross-node sharing are tested against real Redis in sba-infrastructure.)

use reqwest::Response;
use sba_domain::Role;
use serde_json::{Value, json};

use crate::helpers::{Store, TestApp, new_tenant, spawn_app_with};

async fn app(extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![("SBA_RATE_LIMIT__DEFAULT", "3/60")];
    env.extend_from_slice(extra);
    spawn_app_with(Store::Sqlite, &env).await
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn limited_answers_carry_draft_11_headers_and_the_excess_gets_429() {
    let app = app(&[]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    for remaining in [2, 1, 0] {
        let response = app.get("/v1/runs", &token).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-policy"), Some("\"default\";q=3;w=60"));
        let value = header(&response, "ratelimit").unwrap();
        assert!(value.starts_with(&format!("\"default\";r={remaining};t=")), "{value}");
    }
    let refused = app.get("/v1/runs", &token).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "content-type"), Some("application/problem+json"));
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert!(header(&refused, "ratelimit").unwrap().starts_with("\"default\";r=0;t="));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    let retry_after_ms = body["retry_after_ms"].as_u64().unwrap();
    assert!(retry_after_ms > 0 && retry_after_ms <= retry_after * 1000, "{retry_after_ms}");
    assert!(body["request_id"].is_string());
}

#[tokio::test]
async fn keys_use_the_route_template_not_the_raw_path_and_tenants_are_apart() {
    let app = app(&[]).await;
    let tenant = new_tenant();
    let token = app.token(tenant, "alice", Role::Authenticated);
    for _ in 0..3 {
        let path = format!("/v1/runs/{}", uuid::Uuid::now_v7());
        let response = app.get(&path, &token).await;
        assert_eq!(response.status(), 404, "a missing run, but counted");
    }
    let path = format!("/v1/runs/{}", uuid::Uuid::now_v7());
    let fourth = app.get(&path, &token).await;
    assert_eq!(fourth.status(), 429, "three different ids share one key");

    let other = app.token(new_tenant(), "bob", Role::Authenticated);
    let response = app.get(&path, &other).await;
    assert_eq!(response.status(), 404, "another tenant has its own quota");
    let list = app.get("/v1/runs", &token).await;
    assert_eq!(list.status(), 200, "another route has its own quota");
}

#[tokio::test]
async fn unauthenticated_requests_are_limited_per_ip() {
    let app = app(&[]).await;
    for _ in 0..3 {
        let response = app.get_anonymous("/v1/runs").await;
        assert_eq!(response.status(), 401);
        assert!(header(&response, "ratelimit").is_some());
    }
    assert_eq!(app.get_anonymous("/v1/runs").await.status(), 429);
}

#[tokio::test]
async fn rules_set_quotas_by_method_and_route_and_health_routes_are_exempt() {
    let app = app(&[("SBA_RATE_LIMIT__RULES", "create-run POST /v1/runs 1/60")]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let body = json!({"agent": "bot"});
    let create = || app.post_json("/v1/runs", &token, &body);
    let first = create().await;
    assert_eq!(first.status(), 201);
    assert_eq!(header(&first, "ratelimit-policy"), Some("\"create-run\";q=1;w=60"));
    assert_eq!(create().await.status(), 429);
    let list = app.get("/v1/runs", &token).await;
    assert_eq!(header(&list, "ratelimit-policy"), Some("\"default\";q=3;w=60"));
    for _ in 0..5 {
        let health = app.get_anonymous("/healthz").await;
        assert_eq!(health.status(), 200);
        assert!(header(&health, "ratelimit").is_none());
    }
}

#[tokio::test]
async fn limiting_can_be_turned_off() {
    let app = app(&[("SBA_RATE_LIMIT__ENABLED", "false")]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    for _ in 0..5 {
        let response = app.get("/v1/runs", &token).await;
        assert_eq!(response.status(), 200);
        assert!(header(&response, "ratelimit").is_none());
    }
}

#[tokio::test]
async fn a_tenants_plan_and_its_own_quota_replace_the_default() {
    let (pro, special, plain) = (new_tenant(), new_tenant(), new_tenant());
    let plans = format!("{pro}=pro; {special}=pro");
    let limits = format!("{special}=7/60");
    let app = app(&[
        ("SBA_RATE_LIMIT__PLANS", "pro=5/60; free=2/60"),
        ("SBA_TENANTS__PLANS", &plans),
        ("SBA_TENANTS__RATE_LIMITS", &limits),
    ])
    .await;
    for (tenant, expected) in
        [(pro, "\"pro\";q=5;w=60"), (special, "\"tenant\";q=7;w=60"), (plain, "\"default\";q=3;w=60")]
    {
        let token = app.token(tenant, "alice", Role::Authenticated);
        let response = app.get("/v1/runs", &token).await;
        assert_eq!(header(&response, "ratelimit-policy"), Some(expected));
    }
}

#[tokio::test]
async fn metrics_count_decisions_per_policy_and_outcome() {
    let app = app(&[("SBA_RATE_LIMIT__RULES", "metrics-probe GET /v1/usage 1/60")]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    for _ in 0..2 {
        app.get("/v1/usage", &token).await;
    }
    let response = app.get_anonymous("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for needle in [
        "sba_ratelimit_decisions_total{policy=\"metrics-probe\",outcome=\"allowed\"}",
        "sba_ratelimit_decisions_total{policy=\"metrics-probe\",outcome=\"denied\"}",
        "sba_ratelimit_near_limit_total{policy=\"metrics-probe\"}",
        "sba_ratelimit_decision_seconds",
        "sba_http_requests_total{method=\"GET\",route=\"/v1/usage\",status=\"429\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// `GET /v1/runs` as `token`, from `client` behind the trusted proxy 127.0.0.1.
async fn get_from(app: &TestApp, token: &str, client: &str) -> Response {
    let request = app.request(reqwest::Method::GET, "/v1/runs").bearer_auth(token);
    request.header("x-forwarded-for", client).send().await.unwrap()
}

#[tokio::test]
async fn a_tenants_aggregate_bucket_caps_its_requests_from_many_addresses() {
    let app = app(&[
        ("SBA_RATE_LIMIT__DEFAULT", "1/60"),
        ("SBA_SERVER__TRUSTED_PROXIES", "127.0.0.1"),
        ("SBA_RATE_LIMIT__TENANT_AGGREGATE_FACTOR", "2"),
    ])
    .await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let first = get_from(&app, &token, "203.0.113.1").await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "ratelimit-policy"), Some("\"default\";q=1;w=60"), "its own bucket is tighter");
    assert_eq!(get_from(&app, &token, "203.0.113.2").await.status(), 200);
    let third = get_from(&app, &token, "203.0.113.3").await;
    assert_eq!(third.status(), 429, "a third address finds the tenant's 2 x 1 used up");
    assert_eq!(header(&third, "ratelimit-policy"), Some("\"tenant_aggregate\";q=2;w=60"));
    assert!(header(&third, "retry-after").is_some());

    let other = app.token(new_tenant(), "bob", Role::Authenticated);
    assert_eq!(get_from(&app, &other, "203.0.113.3").await.status(), 200, "another tenant's aggregate");
}

#[tokio::test]
async fn without_an_aggregate_factor_each_address_has_its_own_quota() {
    let app = app(&[("SBA_RATE_LIMIT__DEFAULT", "1/60"), ("SBA_SERVER__TRUSTED_PROXIES", "127.0.0.1")]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        assert_eq!(get_from(&app, &token, client).await.status(), 200, "{client}");
    }
}
