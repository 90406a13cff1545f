use std::time::{Duration, Instant};

use sba_infrastructure::redis::test_support::PrivateRedis;
use serde_json::Value;

use crate::helpers::{Store, TestApp, spawn_app, spawn_app_with};

crate::on_both_stores!(healthz_answers_ok_without_a_token, readyz_reports_the_database_up);

async fn healthz_answers_ok_without_a_token(store: Store) {
    let app = spawn_app(store).await;
    let response = app.get_anonymous("/healthz").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.json::<serde_json::Value>().await.unwrap(), serde_json::json!({"status": "ok"}));
}

async fn readyz_reports_the_database_up(store: Store) {
    let app = spawn_app(store).await;
    let response = app.get_anonymous("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert!(body["checks"]["database"]["latency_ms"].is_u64());
    assert_eq!(body["checks"]["embedded_store"]["status"], "up", "development: the embedded store");
    assert_eq!(body["checks"].get("event_bus"), None, "the in-process bus has no other node to hear");
}

#[tokio::test]
async fn the_metrics_page_names_the_running_version() {
    let app = spawn_app(Store::Sqlite).await;
    let scrape = app.get_anonymous("/metrics").await.text().await.unwrap();
    let line = format!("sba_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(scrape.lines().any(|l| l == line), "{line} is not in the scrape:\n{scrape}");
}

/// `/readyz`'s status and body.
async fn readiness(app: &TestApp) -> (u16, Value) {
    let response = app.get_anonymous("/readyz").await;
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn readyz_shows_the_event_bus_down_while_its_canary_cannot_make_the_round_trip() {
    let mut redis = PrivateRedis::start();
    let app = spawn_app_with(Store::Sqlite, &[("REDIS_URL", &redis.url())]).await;
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["event_bus"]["status"], "up", "{ready}");
    assert!(ready["checks"]["event_bus"]["latency_ms"].is_u64());

    redis.stop();
    // Readiness answers are reused for a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, not_ready) = readiness(&app).await;
    assert_eq!(status, 503, "{not_ready}");
    assert_eq!(not_ready["status"], "not_ready");
    assert_eq!(not_ready["checks"]["event_bus"]["status"], "down", "{not_ready}");
    let scrape = app.get_anonymous("/metrics").await.text().await.unwrap();
    for line in [
        "sba_ready 0",
        "sba_dependency_up{component=\"event_bus\"} 0",
        "sba_dependency_up{component=\"database\"} 1",
    ] {
        assert!(scrape.lines().any(|l| l == line), "{line} is not in the scrape:\n{scrape}");
    }

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = readiness(&app).await;
        if status == 200 {
            assert_eq!(body["checks"]["event_bus"]["status"], "up", "{body}");
            let scrape = app.get_anonymous("/metrics").await.text().await.unwrap();
            assert!(scrape.lines().any(|l| l == "sba_ready 1"), "{scrape}");
            break;
        }
        assert!(Instant::now() < deadline, "still not ready after Redis came back: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
