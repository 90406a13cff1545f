//! The client address behind trusted proxies: rate-limit buckets and audit entries follow
//! `X-Forwarded-For` only when the peer (here the test client, 127.0.0.1) is trusted.

use reqwest::Method;
use sba_domain::Role;
use serde_json::{Value, json};

use crate::helpers::{Store, TestApp, new_tenant, spawn_app_with};

async fn app(trusted_proxies: Option<&str>) -> TestApp {
    let mut env = vec![("SBA_RATE_LIMIT__DEFAULT", "1/60")];
    env.extend(trusted_proxies.map(|proxies| ("SBA_SERVER__TRUSTED_PROXIES", proxies)));
    spawn_app_with(Store::Sqlite, &env).await
}

async fn anonymous_from(app: &TestApp, forwarded_for: &str) -> u16 {
    let request = app.request(Method::GET, "/v1/runs").header("x-forwarded-for", forwarded_for);
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_get_their_own_rate_limit_bucket() {
    let app = app(Some("127.0.0.1/32")).await;
    assert_eq!(anonymous_from(&app, "203.0.113.1").await, 401);
    assert_eq!(anonymous_from(&app, "203.0.113.1").await, 429);
    assert_eq!(anonymous_from(&app, "203.0.113.2").await, 401, "another client, another bucket");
    assert_eq!(
        anonymous_from(&app, "203.0.113.2, 203.0.113.3").await,
        401,
        "the right-most untrusted address is the client"
    );
}

#[tokio::test]
async fn a_forwarded_header_from_an_untrusted_peer_is_ignored() {
    let app = app(None).await;
    assert_eq!(anonymous_from(&app, "203.0.113.1").await, 401);
    assert_eq!(anonymous_from(&app, "203.0.113.2").await, 429, "both are the peer 127.0.0.1");
}

#[tokio::test]
async fn ipv6_clients_of_one_64_network_share_a_bucket() {
    let app = app(Some("127.0.0.1")).await;
    assert_eq!(anonymous_from(&app, "2001:db8:0:1::1").await, 401);
    assert_eq!(anonymous_from(&app, "[2001:db8:0:1::2]:443").await, 429);
    assert_eq!(anonymous_from(&app, "2001:db8:0:2::1").await, 401, "another /64");
}

#[tokio::test]
async fn audit_entries_record_the_client_behind_a_trusted_proxy() {
    let app =
        spawn_app_with(Store::Sqlite, &[("SBA_SERVER__TRUSTED_PROXIES", "127.0.0.0/8, 10.0.0.0/8")]).await;
    let tenant = new_tenant();
    let user = app.token(tenant, "alice", Role::Authenticated);
    let response = app
        .request(Method::POST, "/v1/runs")
        .bearer_auth(&user)
        .header("x-forwarded-for", "192.0.2.55, 198.51.100.7, 10.0.0.9")
        .json(&json!({"agent": "bot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let admin = app.token(tenant, "root", Role::Admin);
    let body: Value = app.get("/v1/audit-logs", &admin).await.json().await.unwrap();
    assert_eq!(body["data"][0]["action"], "run.create");
    assert_eq!(body["data"][0]["ip"], "198.51.100.7");
}
