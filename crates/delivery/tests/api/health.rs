use crate::helpers::{Store, spawn_app};

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
}
