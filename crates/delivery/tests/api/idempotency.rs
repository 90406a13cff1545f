//! `Idempotency-Key` on `POST /v1/runs`.

use futures_util::future::join_all;
use reqwest::{Method, Response};
use sba_domain::Role;
use serde_json::{Value, json};

use crate::helpers::{Store, TestApp, new_tenant, spawn_app};

crate::on_both_stores!(
    a_retry_with_the_same_key_and_body_replays_the_original,
    the_same_key_with_another_body_is_409_idempotency_conflict,
    keys_belong_to_one_user_and_a_rejected_body_does_not_use_one,
    an_invalid_key_is_400,
    concurrent_requests_with_one_key_create_one_run,
);

async fn post(app: &TestApp, token: &str, key: &str, body: &Value) -> Response {
    app.request(Method::POST, "/v1/runs")
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn run_count(app: &TestApp, token: &str) -> usize {
    let body: Value = app.get("/v1/runs", token).await.json().await.unwrap();
    body["data"].as_array().unwrap().len()
}

async fn a_retry_with_the_same_key_and_body_replays_the_original(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let body = json!({"agent": "bot", "input": {"b": 1, "a": 2}, "metadata": {"k": "v"}});
    let first = post(&app, &token, "order-42", &body).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].clone();
    let original: Value = first.json().await.unwrap();

    // Same body with its keys in another order is the same request.
    let reordered = json!({"metadata": {"k": "v"}, "input": {"a": 2, "b": 1}, "agent": "bot"});
    let retry = post(&app, &token, "order-42", &reordered).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["location"], location);
    assert_eq!(retry.json::<Value>().await.unwrap(), original);
    assert_eq!(run_count(&app, &token).await, 1);
}

async fn the_same_key_with_another_body_is_409_idempotency_conflict(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    assert_eq!(post(&app, &token, "k1", &json!({"agent": "bot"})).await.status(), 201);
    let conflict = post(&app, &token, "k1", &json!({"agent": "other-bot"})).await;
    assert_eq!(conflict.status(), 409);
    assert_eq!(conflict.json::<Value>().await.unwrap()["code"], "idempotency_conflict");
    assert_eq!(run_count(&app, &token).await, 1);
}

async fn keys_belong_to_one_user_and_a_rejected_body_does_not_use_one(store: Store) {
    let app = spawn_app(store).await;
    let tenant = new_tenant();
    let alice = app.token(tenant, "alice", Role::Authenticated);
    let bob = app.token(tenant, "bob", Role::Authenticated);
    assert_eq!(post(&app, &alice, "shared", &json!({"agent": "bot"})).await.status(), 201);
    let bobs = post(&app, &bob, "shared", &json!({"agent": "bot"})).await;
    assert_eq!(bobs.status(), 201);
    assert!(bobs.headers().get("idempotent-replayed").is_none(), "another user's key is another key");
    assert_eq!(run_count(&app, &alice).await, 2);

    assert_eq!(post(&app, &alice, "fresh", &json!({"agent": "not valid!"})).await.status(), 422);
    let valid = post(&app, &alice, "fresh", &json!({"agent": "bot"})).await;
    assert_eq!(valid.status(), 201, "a rejected request does not reserve its key");
}

async fn an_invalid_key_is_400(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let response = post(&app, &token, &"k".repeat(256), &json!({"agent": "bot"})).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "invalid_request");
}

async fn concurrent_requests_with_one_key_create_one_run(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let body = json!({"agent": "bot"});
    let responses = join_all((0..8).map(|_| post(&app, &token, "race", &body))).await;
    let mut ids = Vec::new();
    for response in responses {
        match response.status().as_u16() {
            201 => ids.push(response.json::<Value>().await.unwrap()["id"].clone()),
            409 => assert_eq!(response.json::<Value>().await.unwrap()["code"], "idempotency_in_progress"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|id| *id == ids[0]), "every 201 names the same run: {ids:?}");
    assert_eq!(run_count(&app, &token).await, 1);
}
