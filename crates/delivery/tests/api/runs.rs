use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::{Method, Response};
use sba_domain::Role;
use serde_json::{Value, json};

use crate::helpers::{AUDIENCE, ISSUER, SECRET, Store, TestApp, new_tenant, problem, spawn_app};

crate::on_both_stores!(
    creates_reads_and_cancels_a_run,
    run_of_another_tenant_answers_404_like_a_missing_one,
    malformed_run_id_answers_404,
    cancelling_a_terminal_run_is_409_invalid_transition,
    invalid_fields_are_all_reported_as_422,
    unknown_fields_and_malformed_json_are_400,
    oversized_and_non_json_bodies_are_rejected,
    missing_token_is_401_token_missing_with_a_challenge,
    expired_token_is_401_token_expired,
    token_without_tenant_is_401_tenant_missing,
    token_signed_with_an_unknown_secret_is_401_token_invalid,
    request_ids_are_echoed_when_well_formed_and_in_problem_bodies,
    unknown_routes_and_methods_answer_problem_json,
);

async fn create(app: &TestApp, token: &str, body: &Value) -> Response {
    app.post_json("/v1/runs", token, body).await
}

fn sign(claims: &Value, secret: &str) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

async fn creates_reads_and_cancels_a_run(store: Store) {
    let app = spawn_app(store).await;
    let tenant = new_tenant();
    let token = app.token(tenant, "alice", Role::Authenticated);
    let session = uuid::Uuid::now_v7().to_string();

    let response = create(
        &app,
        &token,
        &json!({"agent": "support-bot", "input": {"question": "hi"}, "session_id": session, "metadata": {"k": "v"}}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "queued");
    assert_eq!(run["tenant_id"], tenant.to_string());
    assert_eq!(run["user_id"], "alice");
    assert_eq!(run["agent"], "support-bot");
    assert_eq!(run["input"], json!({"question": "hi"}));
    assert_eq!(run["session_id"], session);
    assert_eq!(run["metadata"], json!({"k": "v"}));
    for field in ["output", "last_error", "started_at", "completed_at", "cancelled_at"] {
        assert!(run[field].is_null(), "{field}");
    }
    let id = run["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/runs/{id}"));

    // Any user of the same tenant sees it.
    let colleague = app.token(tenant, "bob", Role::Authenticated);
    let read: Value = app.get(&location, &colleague).await.json().await.unwrap();
    assert_eq!(read, run);

    let response = app.post(&format!("{location}/cancel"), &token).await;
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["cancelled_at"].is_string());

    let reread: Value = app.get(&location, &token).await.json().await.unwrap();
    assert_eq!(reread, cancelled);
}

async fn run_of_another_tenant_answers_404_like_a_missing_one(store: Store) {
    let app = spawn_app(store).await;
    let owner = app.token(new_tenant(), "alice", Role::Admin);
    let run: Value = create(&app, &owner, &json!({"agent": "bot"})).await.json().await.unwrap();
    let path = format!("/v1/runs/{}", run["id"].as_str().unwrap());

    let stranger = app.token(new_tenant(), "mallory", Role::Admin);
    let foreign = app.get(&path, &stranger).await;
    let foreign = problem(foreign, 404, "not_found").await;
    let missing = app.get(&format!("/v1/runs/{}", uuid::Uuid::now_v7()), &stranger).await;
    let missing = problem(missing, 404, "not_found").await;
    assert_eq!(foreign["detail"], missing["detail"], "a foreign run is indistinguishable from a missing one");

    let cancel = app.post(&format!("{path}/cancel"), &stranger).await;
    problem(cancel, 404, "not_found").await;
    let still: Value = app.get(&path, &owner).await.json().await.unwrap();
    assert_eq!(still["status"], "queued");
}

async fn malformed_run_id_answers_404(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    for path in ["/v1/runs/not-a-uuid", "/v1/runs/123/cancel"] {
        let method = if path.ends_with("cancel") { Method::POST } else { Method::GET };
        let response = app.request(method, path).bearer_auth(&token).send().await.unwrap();
        problem(response, 404, "not_found").await;
    }
}

async fn cancelling_a_terminal_run_is_409_invalid_transition(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let run: Value = create(&app, &token, &json!({"agent": "bot"})).await.json().await.unwrap();
    let cancel = format!("/v1/runs/{}/cancel", run["id"].as_str().unwrap());
    assert_eq!(app.post(&cancel, &token).await.status(), 200);
    let again = app.post(&cancel, &token).await;
    problem(again, 409, "invalid_transition").await;
}

async fn invalid_fields_are_all_reported_as_422(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let response =
        create(&app, &token, &json!({"agent": "no spaces allowed", "session_id": "session-1"})).await;
    let body = problem(response, 422, "validation_failed").await;
    let fields: Vec<&str> =
        body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["agent", "session_id"]);
}

async fn unknown_fields_and_malformed_json_are_400(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let response = create(&app, &token, &json!({"agent": "bot", "priority": "high"})).await;
    let body = problem(response, 400, "invalid_json").await;
    assert!(body["detail"].as_str().unwrap().contains("priority"), "{body}");

    let response = app
        .request(Method::POST, "/v1/runs")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"agent\": ")
        .send()
        .await
        .unwrap();
    problem(response, 400, "invalid_json").await;
}

async fn oversized_and_non_json_bodies_are_rejected(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let huge = "x".repeat(2 * 1024 * 1024);
    let response = create(&app, &token, &json!({"agent": "bot", "input": huge})).await;
    problem(response, 413, "payload_too_large").await;

    let response = app
        .request(Method::POST, "/v1/runs")
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("{\"agent\": \"bot\"}")
        .send()
        .await
        .unwrap();
    problem(response, 415, "unsupported_media_type").await;
}

async fn missing_token_is_401_token_missing_with_a_challenge(store: Store) {
    let app = spawn_app(store).await;
    let response = app.request(Method::POST, "/v1/runs").json(&json!({"agent": "bot"})).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    problem(response, 401, "token_missing").await;
    let basic = app
        .request(Method::GET, &format!("/v1/runs/{}", uuid::Uuid::now_v7()))
        .header("authorization", "Basic YWxpY2U6cHc=")
        .send()
        .await
        .unwrap();
    problem(basic, 401, "token_missing").await;
}

async fn expired_token_is_401_token_expired(store: Store) {
    let app = spawn_app(store).await;
    let token = sign(
        &json!({"sub": "alice", "tenant_id": new_tenant().to_string(), "role": "authenticated",
                "exp": now() - 60, "iss": ISSUER, "aud": AUDIENCE}),
        SECRET,
    );
    let response = create(&app, &token, &json!({"agent": "bot"})).await;
    assert!(response.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    problem(response, 401, "token_expired").await;
}

async fn token_without_tenant_is_401_tenant_missing(store: Store) {
    let app = spawn_app(store).await;
    let token = sign(
        &json!({"sub": "alice", "role": "authenticated", "exp": now() + 60, "iss": ISSUER, "aud": AUDIENCE,
                "user_metadata": {"tenant_id": new_tenant().to_string()}}),
        SECRET,
    );
    problem(create(&app, &token, &json!({"agent": "bot"})).await, 401, "tenant_missing").await;
}

async fn token_signed_with_an_unknown_secret_is_401_token_invalid(store: Store) {
    let app = spawn_app(store).await;
    let claims = json!({"sub": "alice", "tenant_id": new_tenant().to_string(), "role": "authenticated",
                        "exp": now() + 60, "iss": ISSUER, "aud": AUDIENCE});
    let forged = sign(&claims, "another-secret-another-secret-another-secret");
    problem(create(&app, &forged, &json!({"agent": "bot"})).await, 401, "token_invalid").await;
    problem(create(&app, "not.a.jwt", &json!({"agent": "bot"})).await, 401, "token_invalid").await;
}

async fn request_ids_are_echoed_when_well_formed_and_in_problem_bodies(store: Store) {
    let app = spawn_app(store).await;
    let echoed =
        app.request(Method::GET, "/healthz").header("x-request-id", "trace-42.a_b").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-42.a_b");

    let replaced =
        app.request(Method::GET, "/healthz").header("x-request-id", "bad id!").send().await.unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, "bad id!");
    assert!(uuid::Uuid::parse_str(id).is_ok());

    let refused =
        app.request(Method::GET, "/v1/runs/x").header("x-request-id", "client-7").send().await.unwrap();
    let body = problem(refused, 401, "token_missing").await;
    assert_eq!(body["request_id"], "client-7");
}

async fn unknown_routes_and_methods_answer_problem_json(store: Store) {
    let app = spawn_app(store).await;
    problem(app.get_anonymous("/v2/nothing").await, 404, "not_found").await;
    let delete = app.request(Method::DELETE, "/v1/runs").send().await.unwrap();
    problem(delete, 405, "method_not_allowed").await;
}
