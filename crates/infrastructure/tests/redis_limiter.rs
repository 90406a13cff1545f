#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! `FredRateLimiter` against the test Redis (`SBA_TEST_REDIS_URL`): every test uses keys of
//! its own (a UUIDv7 in each), so tests run in parallel and the keys expire with their TAT.
//! The limiter is given key bodies and stores them under `sba:rl:`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::{ClientLike as _, KeysInterface as _, LuaInterface as _};
use fred::types::Builder;
use fred::types::config::Config;
use sba_application::ports::{RateLimitError, RateLimiter};
use sba_domain::ratelimit::{Decision, Gcra, HttpLimitKey, Quota, WsLimitKey};
use sba_domain::{TenantId, UserId};
use sba_infrastructure::redis::test_support::redis_url;
use sba_infrastructure::redis::{FredRateLimiter, FredRateLimiterSettings};
use secrecy::SecretString;
use uuid::Uuid;

const SEC: u64 = 1_000_000;

/// Generous bounds: parallel tests and builds share the machine, and these tests check
/// decisions, not latency (the unreachable-Redis tests keep the 50 ms default).
fn settings() -> FredRateLimiterSettings {
    FredRateLimiterSettings { timeout: Duration::from_secs(2), connect_timeout: Duration::from_secs(5) }
}

async fn limiter() -> FredRateLimiter {
    FredRateLimiter::connect(&SecretString::from(redis_url()), settings())
        .await
        .expect("connecting to the test Redis")
}

fn key(name: &str) -> String {
    format!("test:{name}:{}", Uuid::now_v7())
}

async fn admin() -> Client {
    let admin = Builder::from_config(Config::from_url(&redis_url()).unwrap()).build().unwrap();
    admin.init().await.unwrap();
    admin
}

async fn check(limiter: &FredRateLimiter, key: &str, quota: Quota, cost: u32) -> Decision {
    limiter.check(key, quota, cost).await.expect("a decision from the test Redis")
}

#[tokio::test]
async fn exactly_the_limit_passes_among_many_concurrent_requests() {
    let limiter = Arc::new(limiter().await);
    let key = key("concurrent");
    let quota = Quota::new(50, 600).unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (limiter, key) = (Arc::clone(&limiter), key.clone());
            tokio::spawn(async move { check(&limiter, &key, quota, 1).await })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        if task.await.unwrap().is_allowed() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 50);
}

/// As on actix's workers: several threads, each with its own single-threaded runtime, so
/// each decides through its own connection once it is up (the shared one until then).
#[test]
fn threads_deciding_through_their_own_connections_share_one_exact_limit() {
    let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The shared connection lives on a runtime that keeps running, like actix's main thread.
    let main = tokio::runtime::Runtime::new().unwrap();
    let limiter = Arc::new(main.block_on(limiter()));
    let key = key("threads");
    let quota = Quota::new(100, 600).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (limiter, key) = (Arc::clone(&limiter), key.clone());
            std::thread::spawn(move || {
                runtime().block_on(async {
                    // The first decision opens this thread's connection; give it time to be up.
                    check(&limiter, &self::key("warm-up"), quota, 1).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let tasks: Vec<_> = (0..50)
                        .map(|_| {
                            let (limiter, key) = (Arc::clone(&limiter), key.clone());
                            tokio::spawn(async move { check(&limiter, &key, quota, 1).await.is_allowed() })
                        })
                        .collect();
                    let mut allowed = 0;
                    for task in tasks {
                        allowed += usize::from(task.await.unwrap());
                    }
                    allowed
                })
            })
        })
        .collect();
    let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(allowed, 100, "200 decisions from 4 threads against a limit of 100");
}

#[tokio::test]
async fn coalesced_decisions_on_many_keys_each_keep_their_own_exact_limit() {
    let limiter = Arc::new(limiter().await);
    let keys: Vec<String> = (0..20).map(|i| key(&format!("many-{i}"))).collect();
    let quota = Quota::new(5, 600).unwrap();
    // 20 keys x 12 concurrent requests: far more than one batch, mixed in every batch.
    let tasks: Vec<_> = (0..240)
        .map(|i| {
            let (limiter, key) = (Arc::clone(&limiter), keys[i % keys.len()].clone());
            tokio::spawn(async move { (key.clone(), check(&limiter, &key, quota, 1).await.is_allowed()) })
        })
        .collect();
    let mut allowed: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    for task in tasks {
        let (key, ok) = task.await.unwrap();
        *allowed.entry(key).or_default() += u32::from(ok);
    }
    assert_eq!(allowed.len(), 20);
    assert!(allowed.values().all(|&n| n == 5), "{allowed:?}");
}

#[tokio::test]
async fn two_limiters_sharing_a_key_share_one_limit() {
    let (first, second) = (limiter().await, limiter().await);
    let key = key("shared");
    let quota = Quota::new(4, 600).unwrap();
    let mut allowed = 0;
    for round in 0..5 {
        for limiter in [&first, &second] {
            if check(limiter, &key, quota, 1).await.is_allowed() {
                allowed += 1;
            }
        }
        assert!(allowed <= 4, "round {round}: {allowed} allowed");
    }
    assert_eq!(allowed, 4);
}

/// The script runs on the Redis clock, so its values trail the model's (all requests at one
/// instant) by at most the time the test has run.
fn assert_close(actual: Decision, model: Decision, elapsed: Duration) {
    let slack = u64::try_from(elapsed.as_micros()).unwrap() + 1_000;
    let near = |actual: u64, model: u64| actual <= model && model - actual <= slack;
    let ok = match (actual, model) {
        (Decision::Allowed { remaining, reset_us }, Decision::Allowed { remaining: r, reset_us: t }) => {
            remaining == r && near(reset_us, t)
        }
        (
            Decision::Denied { retry_after_us, reset_us },
            Decision::Denied { retry_after_us: ra, reset_us: t },
        ) => near(retry_after_us, ra) && near(reset_us, t),
        _ => false,
    };
    assert!(ok, "Redis decided {actual:?}, Gcra::decide {model:?} (slack {slack} µs)");
}

#[tokio::test]
async fn decisions_follow_the_domain_gcra() {
    let limiter = limiter().await;
    let key = key("model");
    // One cell every 100 s: the test's own duration never refills one.
    let quota = Quota::new(3, 300).unwrap();
    let start = Instant::now();
    let now = 1_000 * SEC;
    let mut tat = None;
    let mut decisions = Vec::new();
    for cost in [1, 1, 1, 1, 1] {
        let actual = check(&limiter, &key, quota, cost).await;
        let (model, next) = Gcra::decide(quota, tat, now, cost);
        tat = next.or(tat);
        assert_close(actual, model, start.elapsed());
        decisions.push(actual);
    }
    let remaining: Vec<_> = decisions
        .iter()
        .map(|d| match d {
            Decision::Allowed { remaining, .. } => Some(*remaining),
            Decision::Denied { .. } => None,
        })
        .collect();
    assert_eq!(remaining, [Some(2), Some(1), Some(0), None, None], "remaining counts down, then denials");
    let Decision::Denied { retry_after_us, reset_us } = decisions[4] else { panic!("expected a denial") };
    assert!(
        retry_after_us > 99 * SEC && retry_after_us <= 100 * SEC,
        "retry after one interval: {retry_after_us}"
    );
    assert!(reset_us > 299 * SEC && reset_us <= 300 * SEC, "whole again after the window: {reset_us}");
}

#[tokio::test]
async fn denied_requests_consume_nothing() {
    let limiter = limiter().await;
    let key = key("denied");
    // One cell every 500 ms.
    let quota = Quota::new(2, 1).unwrap();
    assert!(check(&limiter, &key, quota, 2).await.is_allowed());
    for _ in 0..50 {
        assert!(!check(&limiter, &key, quota, 1).await.is_allowed());
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(check(&limiter, &key, quota, 1).await.is_allowed(), "one interval later a cell is back");
}

#[tokio::test]
async fn weighted_costs_take_that_many_units_and_oversized_costs_never_pass() {
    let limiter = limiter().await;
    let key = key("weighted");
    let quota = Quota::new(10, 100).unwrap();
    let Decision::Allowed { remaining, .. } = check(&limiter, &key, quota, 4).await else {
        panic!("a cost of 4 of 10 passes")
    };
    assert_eq!(remaining, 6);
    assert!(!check(&limiter, &key, quota, 7).await.is_allowed());
    assert!(matches!(check(&limiter, &key, quota, 6).await, Decision::Allowed { remaining: 0, .. }));

    let fresh = self::key("oversized");
    let Decision::Denied { retry_after_us, reset_us } = check(&limiter, &fresh, quota, 11).await else {
        panic!("a cost above the limit never passes")
    };
    assert_eq!((retry_after_us, reset_us), (100 * SEC, 0), "denied for a full window, nothing stored");
    assert!(check(&limiter, &fresh, quota, 10).await.is_allowed(), "the oversized request consumed nothing");
}

#[tokio::test]
async fn a_changed_quota_applies_to_the_next_request() {
    let limiter = limiter().await;
    let key = key("changed");
    let small = Quota::new(2, 6).unwrap();
    assert!(check(&limiter, &key, small, 2).await.is_allowed());
    let Decision::Denied { retry_after_us, .. } = check(&limiter, &key, small, 1).await else {
        panic!("the small quota is spent")
    };
    assert!(retry_after_us > 2 * SEC, "the small quota refills in 3 s: {retry_after_us}");
    // Raised: the time used stays used, but the new rate (one cell every 60 ms) refills it,
    // so the caller waits one new interval, not the old window.
    let raised = Quota::new(100, 6).unwrap();
    let Decision::Denied { retry_after_us, .. } = check(&limiter, &key, raised, 1).await else {
        panic!("the time used stays used")
    };
    assert!(retry_after_us <= 60_000, "one new interval: {retry_after_us}");
    tokio::time::sleep(Duration::from_micros(retry_after_us + 5_000)).await;
    assert!(check(&limiter, &key, raised, 1).await.is_allowed(), "no waiting for the old window to end");
    // Lowered: applies at once.
    let fresh = self::key("lowered");
    assert!(check(&limiter, &fresh, raised, 1).await.is_allowed());
    let lowered = Quota::new(1, 60).unwrap();
    assert!(!check(&limiter, &fresh, lowered, 1).await.is_allowed(), "a lowered quota refuses at once");
}

#[tokio::test]
async fn the_script_is_reloaded_after_script_flush() {
    let limiter = limiter().await;
    let key = key("flush");
    let quota = Quota::new(3, 600).unwrap();
    assert!(check(&limiter, &key, quota, 1).await.is_allowed());

    let admin = admin().await;
    admin.script_flush(false).await.unwrap();

    let Decision::Allowed { remaining, .. } = check(&limiter, &key, quota, 1).await else {
        panic!("the second request passes after the reload")
    };
    assert_eq!(remaining, 1, "the state survived, only the script was reloaded");
    assert!(check(&limiter, &key, quota, 1).await.is_allowed());
    assert!(!check(&limiter, &key, quota, 1).await.is_allowed());
    admin.quit().await.unwrap();
}

async fn assert_unavailable_quickly(url: &str) {
    let started = Instant::now();
    let limiter = FredRateLimiter::connect(
        &SecretString::from(url.to_owned()),
        FredRateLimiterSettings {
            connect_timeout: Duration::from_millis(200),
            ..FredRateLimiterSettings::default()
        },
    )
    .await
    .expect("a Redis that is down does not stop startup");
    let quota = Quota::new(10, 60).unwrap();
    for _ in 0..3 {
        let result = limiter.check(&key("down"), quota, 1).await;
        assert!(matches!(result, Err(RateLimitError::Unavailable(_))), "{result:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_refused_connection_makes_decisions_unavailable_quickly() {
    assert_unavailable_quickly("redis://127.0.0.1:1").await;
}

#[tokio::test]
async fn a_redis_that_never_answers_makes_decisions_unavailable_quickly() {
    // Accepts connections (the kernel's backlog) and never answers a byte.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    assert_unavailable_quickly(&url).await;
    drop(silent);
}

#[tokio::test]
async fn tenants_never_share_a_limit() {
    let limiter = limiter().await;
    let (alpha, beta) = (TenantId::from_uuid(Uuid::now_v7()), TenantId::from_uuid(Uuid::now_v7()));
    let quota = Quota::new(1, 600).unwrap();
    let http = |tenant| {
        HttpLimitKey {
            tenant: Some(tenant),
            ip: "203.0.113.7".parse().ok(),
            method: "GET",
            route: "/v1/runs",
        }
        .to_string()
    };
    let (alpha_key, beta_key) = (http(alpha), http(beta));
    assert!(check(&limiter, &alpha_key, quota, 1).await.is_allowed());
    assert!(check(&limiter, &beta_key, quota, 1).await.is_allowed(), "another tenant has its own limit");
    assert!(!check(&limiter, &alpha_key, quota, 1).await.is_allowed());
    assert!(!check(&limiter, &beta_key, quota, 1).await.is_allowed());
}

#[tokio::test]
async fn keys_of_ordinary_values_are_stored_exactly_as_the_key_schema_names_them() {
    let limiter = limiter().await;
    let tenant = TenantId::from_uuid(Uuid::now_v7());
    let alice = UserId::parse("alice").unwrap();
    let quota = Quota::new(5, 600).unwrap();
    let http = HttpLimitKey {
        tenant: Some(tenant),
        ip: "203.0.113.7".parse().ok(),
        method: "get",
        route: "/v1/runs/{run_id}",
    };
    let ws = WsLimitKey { tenant, user: &alice, ip: "10.0.0.1".parse().ok(), op: "subscribe" };
    check(&limiter, &http.to_string(), quota, 1).await;
    check(&limiter, &ws.to_string(), quota, 1).await;

    let admin = admin().await;
    for stored in [
        format!("sba:rl:{tenant}|203.0.113.7|GET|/v1/runs/{{run_id}}"),
        format!("sba:rl:ws:{tenant}:alice:10.0.0.1:subscribe"),
    ] {
        let exists: u32 = admin.exists(stored.as_str()).await.unwrap();
        assert_eq!(exists, 1, "{stored} is the key in Redis");
    }
    admin.quit().await.unwrap();
}
