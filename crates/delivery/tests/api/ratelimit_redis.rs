//! The Redis limiter end to end: two app instances sharing one Redis share one limit, and a
//! Redis that stops makes the limiter fall back to the in-process one (fail open) and
//! recover by itself when Redis returns. Each test runs its own `redis-server` (installed
//! by scripts/test.sh) on a free port, so stopping it disturbs nobody.

use std::time::{Duration, Instant};

use sba_domain::Role;
use sba_infrastructure::redis::test_support::PrivateRedis;

use crate::helpers::{TestApp, new_tenant, spawn_app_with};

async fn app_on(redis: &PrivateRedis, quota: &str) -> TestApp {
    spawn_app_with(
        crate::helpers::Store::Sqlite,
        &[("REDIS_URL", &redis.url()), ("SBA_RATE_LIMIT__DEFAULT", quota)],
    )
    .await
}

async fn status(app: &TestApp, token: &str) -> u16 {
    app.get("/v1/runs", token).await.status().as_u16()
}

#[tokio::test]
async fn two_instances_sharing_one_redis_share_one_limit() {
    let redis = PrivateRedis::start();
    let (a, b) = (app_on(&redis, "4/60").await, app_on(&redis, "4/60").await);
    let tenant = new_tenant();
    let token = a.token(tenant, "alice", Role::Authenticated);
    let mut passed = 0;
    for i in 0..10 {
        let app = if i % 2 == 0 { &a } else { &b };
        if status(app, &token).await == 200 {
            passed += 1;
        }
    }
    assert_eq!(passed, 4, "both nodes together let exactly the quota through");
}

#[tokio::test]
async fn requests_are_limited_under_the_key_the_schema_names() {
    let redis = PrivateRedis::start();
    let app = app_on(&redis, "4/60").await;
    let tenant = new_tenant();
    let token = app.token(tenant, "alice", Role::Authenticated);
    assert_eq!(status(&app, &token).await, 200);
    let listed = std::process::Command::new("redis-cli")
        .args(["-u", &redis.url(), "--scan", "--pattern", "sba:rl:*"])
        .output()
        .expect("redis-cli is installed with redis-server");
    let keys = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(keys.lines().collect::<Vec<_>>(), [format!("sba:rl:{tenant}|127.0.0.1|GET|/v1/runs")]);
}

#[tokio::test]
async fn a_stopped_redis_falls_back_in_process_and_recovery_is_automatic() {
    let mut redis = PrivateRedis::start();
    let app = app_on(&redis, "1000/60").await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    assert_eq!(status(&app, &token).await, 200);

    redis.stop();
    let started = Instant::now();
    for _ in 0..5 {
        let response = app.get("/v1/runs", &token).await;
        assert_eq!(response.status(), 200, "fail_mode=open keeps serving");
        assert!(response.headers().contains_key("ratelimit"), "the fallback still limits");
    }
    // A bound for a hang, not a speed measurement: five requests never wait on Redis.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("sba_ratelimit_redis_errors_total"), "{metrics}");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert_eq!(status(&app, &token).await, 200);
        let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
        if metrics.contains("sba_ratelimit_fallback_active 0") {
            break;
        }
        assert!(Instant::now() < deadline, "the limiter did not return to Redis:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn closed_fail_mode_refuses_with_503_while_redis_is_down() {
    let mut redis = PrivateRedis::start();
    let app = spawn_app_with(
        crate::helpers::Store::Sqlite,
        &[("REDIS_URL", &redis.url()), ("SBA_RATE_LIMIT__FAIL_MODE", "closed")],
    )
    .await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    assert_eq!(status(&app, &token).await, 200);
    redis.stop();
    let response = app.get("/v1/runs", &token).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "rate_limiter_unavailable");
    assert_eq!(app.get_anonymous("/healthz").await.status(), 200, "exempt");
}

#[tokio::test]
async fn a_tenants_aggregate_bucket_is_shared_by_every_node_and_address() {
    let redis = PrivateRedis::start();
    let env = [
        ("REDIS_URL", redis.url()),
        ("SBA_RATE_LIMIT__DEFAULT", "2/60".to_owned()),
        ("SBA_SERVER__TRUSTED_PROXIES", "127.0.0.1".to_owned()),
        ("SBA_RATE_LIMIT__TENANT_AGGREGATE_FACTOR", "2".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = spawn_app_with(crate::helpers::Store::Sqlite, &env).await;
    let b = spawn_app_with(crate::helpers::Store::Sqlite, &env).await;
    let tenant = new_tenant();
    let token = a.token(tenant, "alice", Role::Authenticated);
    let mut passed = 0;
    for i in 0..8 {
        let app = if i % 2 == 0 { &a } else { &b };
        let client = format!("203.0.113.{i}");
        let response = app
            .request(reqwest::Method::GET, "/v1/runs")
            .bearer_auth(&token)
            .header("x-forwarded-for", &client)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            passed += 1;
        } else {
            assert_eq!(response.status(), 429);
            assert_eq!(response.headers()["ratelimit-policy"], "\"tenant_aggregate\";q=4;w=60");
        }
    }
    assert_eq!(passed, 4, "eight addresses on two nodes share the tenant's 2 x 2");
    let listed = std::process::Command::new("redis-cli")
        .args(["-u", &redis.url(), "--scan", "--pattern", &format!("sba:rl:{tenant}|\\*|*")])
        .output()
        .expect("redis-cli is installed with redis-server");
    let keys = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(keys.lines().collect::<Vec<_>>(), [format!("sba:rl:{tenant}|*|GET|/v1/runs")]);
}
