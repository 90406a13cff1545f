//! What a client without a token can make the server hold: metric series, rate-limit keys,
//! directory calls, concurrent uploads (docs/security.md, "Unauthenticated load").

use reqwest::Method;
use sba_domain::Role;

use crate::helpers::{Store, new_tenant, spawn_app_with};

fn invented_method(i: usize) -> Method {
    Method::from_bytes(format!("INVENTED{i}X").as_bytes()).unwrap()
}

#[tokio::test]
async fn invented_methods_share_one_rate_limit_key() {
    let app = spawn_app_with(Store::Sqlite, &[("SBA_RATE_LIMIT__DEFAULT", "3/60")]).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(app.request(invented_method(i), "/v1/runs").send().await.unwrap().status().as_u16());
    }
    // Each invented method used to get a fresh bucket of its own (and a Redis key each).
    assert_eq!(&statuses[..3], [405, 405, 405], "{statuses:?}");
    assert_eq!(&statuses[3..], [429, 429, 429], "one `other` bucket: {statuses:?}");
    // A real method keeps its own bucket.
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    assert_eq!(app.get("/v1/runs", &token).await.status(), 200);
}

#[tokio::test]
async fn invented_methods_add_no_metric_series() {
    let app = spawn_app_with(Store::Sqlite, &[]).await;
    for i in 0..20 {
        app.request(invented_method(i), "/healthz").send().await.unwrap();
    }
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("INVENTED"), "a raw method became a label");
    assert!(
        metrics.lines().any(|line| line.starts_with("sba_http_requests_total{")
            && line.contains("method=\"other\"")
            && line.contains("route=\"/healthz\"")),
        "{metrics}"
    );
}
