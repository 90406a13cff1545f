//! Listings: runs, a run's steps, tool calls and events, and the audit log.

use reqwest::{Method, Response};
use sba_domain::Role;
use serde_json::{Value, json};

use crate::helpers::{Store, TestApp, new_tenant, spawn_app};

crate::on_both_stores!(
    runs_list_newest_first_in_stable_pages_with_filters,
    out_of_range_limits_and_foreign_cursors_are_400_invalid_request,
    cursors_and_after_seq_out_of_range_are_400_invalid_request,
    a_runs_events_show_its_creation_and_cancellation_in_seq_order,
    details_of_another_tenants_run_answer_404,
    audit_logs_are_for_tenant_admins_and_record_every_mutation,
    refused_run_creations_are_audited_as_denied,
    audit_entries_keep_the_clients_request_id_apart_from_the_servers_own,
);

async fn create_run(app: &TestApp, token: &str, agent: &str) -> Value {
    let response = app.post_json("/v1/runs", token, &json!({"agent": agent})).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn ids(response: Response) -> (Vec<String>, Value) {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let ids = body["data"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    (ids, body["next_cursor"].clone())
}

async fn runs_list_newest_first_in_stable_pages_with_filters(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let mut created = Vec::new();
    for i in 0..5 {
        let run = create_run(&app, &token, if i % 2 == 0 { "even" } else { "odd" }).await;
        created.push(run["id"].as_str().unwrap().to_owned());
    }
    create_run(&app, &app.token(new_tenant(), "mallory", Role::Admin), "even").await;

    let mut seen = Vec::new();
    let mut path = "/v1/runs?limit=2".to_owned();
    loop {
        let (page, next) = ids(app.get(&path, &token).await).await;
        assert!(page.len() <= 2);
        seen.extend(page);
        match next.as_str() {
            Some(cursor) => path = format!("/v1/runs?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created, "newest first, each run once, only the caller's tenant");

    let cancel = format!("/v1/runs/{}/cancel", created[0]);
    assert_eq!(app.post(&cancel, &token).await.status(), 200);
    let (cancelled, _) = ids(app.get("/v1/runs?status=cancelled", &token).await).await;
    assert_eq!(cancelled, [created[0].clone()]);
    let (odd, _) = ids(app.get("/v1/runs?agent=odd", &token).await).await;
    assert_eq!(odd.len(), 2);
    let (none, next) =
        ids(app.get(&format!("/v1/runs?session_id={}", uuid::Uuid::now_v7()), &token).await).await;
    assert!(none.is_empty() && next.is_null());
}

async fn out_of_range_limits_and_foreign_cursors_are_400_invalid_request(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let run = create_run(&app, &token, "bot").await;
    let id = run["id"].as_str().unwrap();
    let seq_cursor = sba_application::pagination::Cursor::Seq(1).encode();
    for path in [
        "/v1/runs?limit=0".to_owned(),
        "/v1/runs?limit=101".to_owned(),
        "/v1/runs?limit=ten".to_owned(),
        "/v1/runs?cursor=not-a-cursor".to_owned(),
        format!("/v1/runs?cursor={seq_cursor}"),
        "/v1/runs?status=running".to_owned(),
        "/v1/runs?session_id=abc".to_owned(),
        format!("/v1/runs/{id}/events?limit=500"),
        format!("/v1/runs/{id}/events?after_seq=-1"),
        format!("/v1/runs/{id}/events?after_seq=1&cursor={seq_cursor}"),
        format!("/v1/runs/{id}/steps?cursor=zzz"),
    ] {
        let response = app.get(&path, &token).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "invalid_request", "{path}: {body}");
    }
    assert_eq!(app.get("/v1/runs?limit=100", &token).await.status(), 200);
}

/// A cursor as a client could craft it: well-formed, but naming a position no row can have.
fn crafted_cursor(plain: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(plain)
}

async fn cursors_and_after_seq_out_of_range_are_400_invalid_request(store: Store) {
    let app = spawn_app(store).await;
    let tenant = new_tenant();
    let token = app.token(tenant, "alice", Role::Admin);
    let run = create_run(&app, &token, "bot").await;
    let id = run["id"].as_str().unwrap();
    let uuid = "0b7e8f3c2f0a4c559d2e3f1a5b6c7d8e";
    let mut paths = Vec::new();
    for seq in ["9223372036854775808", "18446744073709551615"] {
        let cursor = crafted_cursor(&format!("s1:{seq}"));
        for listing in ["steps", "tool-calls", "events"] {
            paths.push(format!("/v1/runs/{id}/{listing}?cursor={cursor}"));
        }
        paths.push(format!("/v1/runs/{id}/events?after_seq={seq}"));
    }
    paths.push(format!("/v1/runs/{id}/events?after_seq=18446744073709551616"));
    // Year -200000 and year 200000: inside chrono's range, outside what a row can hold.
    for micros in ["-6311390400000000000", "6311390400000000000", "-62135596800000001"] {
        let cursor = crafted_cursor(&format!("t1:{micros}:{uuid}"));
        for listing in ["/v1/runs", "/v1/audit-logs", "/v1/sessions"] {
            paths.push(format!("{listing}?cursor={cursor}"));
        }
    }
    for path in paths {
        let response = app.get(&path, &token).await;
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "invalid_request", "{path}: {body}");
    }
    let max = crafted_cursor(&format!("s1:{}", i64::MAX));
    assert_eq!(app.get(&format!("/v1/runs/{id}/steps?cursor={max}"), &token).await.status(), 200);
    assert_eq!(app.get(&format!("/v1/runs/{id}/events?after_seq={}", i64::MAX), &token).await.status(), 200);
}

async fn a_runs_events_show_its_creation_and_cancellation_in_seq_order(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let run = create_run(&app, &token, "bot").await;
    let id = run["id"].as_str().unwrap();
    app.post(&format!("/v1/runs/{id}/cancel"), &token).await;

    let body: Value = app.get(&format!("/v1/runs/{id}/events"), &token).await.json().await.unwrap();
    let events = body["data"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[0]["kind"], "run.created");
    assert_eq!(events[0]["run_id"], id);
    assert_eq!(events[0]["data"], json!({}));
    assert_eq!(events[1]["seq"], 2);
    assert_eq!(events[1]["kind"], "run.cancelled");
    assert!(body["next_cursor"].is_null());

    let page: Value = app.get(&format!("/v1/runs/{id}/events?limit=1"), &token).await.json().await.unwrap();
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value =
        app.get(&format!("/v1/runs/{id}/events?cursor={cursor}"), &token).await.json().await.unwrap();
    assert_eq!(rest["data"][0]["seq"], 2);
    let after: Value =
        app.get(&format!("/v1/runs/{id}/events?after_seq=1"), &token).await.json().await.unwrap();
    assert_eq!(after["data"].as_array().unwrap().len(), 1);

    for detail in ["steps", "tool-calls"] {
        let body: Value = app.get(&format!("/v1/runs/{id}/{detail}"), &token).await.json().await.unwrap();
        assert_eq!(body, json!({"data": [], "next_cursor": null}), "{detail}");
    }
}

async fn details_of_another_tenants_run_answer_404(store: Store) {
    let app = spawn_app(store).await;
    let owner = app.token(new_tenant(), "alice", Role::Authenticated);
    let run = create_run(&app, &owner, "bot").await;
    let id = run["id"].as_str().unwrap();
    let stranger = app.token(new_tenant(), "mallory", Role::Admin);
    for detail in ["steps", "tool-calls", "events"] {
        let response = app.get(&format!("/v1/runs/{id}/{detail}"), &stranger).await;
        assert_eq!(response.status(), 404, "{detail}");
        let missing = app.get(&format!("/v1/runs/{}/{detail}", uuid::Uuid::now_v7()), &stranger).await;
        assert_eq!(missing.status(), 404, "{detail}");
    }
}

async fn audit_logs_are_for_tenant_admins_and_record_every_mutation(store: Store) {
    let app = spawn_app(store).await;
    let tenant = new_tenant();
    let user = app.token(tenant, "alice", Role::Authenticated);
    let run = create_run(&app, &user, "bot").await;
    let cancel = format!("/v1/runs/{}/cancel", run["id"].as_str().unwrap());
    for request_id in ["cancel-1", "cancel-2"] {
        app.request(Method::POST, &cancel)
            .bearer_auth(&user)
            .header("x-request-id", request_id)
            .send()
            .await
            .unwrap();
    }

    let refused = app.get("/v1/audit-logs", &user).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "forbidden");

    let admin = app.token(tenant, "root", Role::Admin);
    let body: Value = app.get("/v1/audit-logs", &admin).await.json().await.unwrap();
    let entries = body["data"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["client_request_id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(summary[0], ("run.cancel", "denied", "cancel-2"), "newest first: {summary:?}");
    assert_eq!(summary[1], ("run.cancel", "success", "cancel-1"));
    assert_eq!(summary[2].0, "run.create");
    let entry = &entries[1];
    assert_eq!(entry["actor"], "alice");
    assert_eq!(entry["tenant_id"], tenant.to_string());
    assert_eq!(entry["resource_type"], "run");
    assert_eq!(entry["resource_id"], run["id"]);
    assert_eq!(entry["ip"], "127.0.0.1");
    for field in ["id", "created_at"] {
        assert!(entry[field].is_string(), "{field}");
    }

    let other_admin = app.token(new_tenant(), "root", Role::Admin);
    let body: Value = app.get("/v1/audit-logs", &other_admin).await.json().await.unwrap();
    assert_eq!(body["data"], json!([]));
}

async fn audit_entries_keep_the_clients_request_id_apart_from_the_servers_own(store: Store) {
    let app = spawn_app(store).await;
    let tenant = new_tenant();
    let user = app.token(tenant, "alice", Role::Authenticated);
    // The client reuses one id (another request's, say) for two requests.
    for _ in 0..2 {
        let response = app
            .request(Method::POST, "/v1/runs")
            .bearer_auth(&user)
            .header("x-request-id", "someone-elses-id")
            .json(&json!({"agent": "bot"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["x-request-id"], "someone-elses-id", "still echoed");
    }
    create_run(&app, &user, "bot").await;

    let admin = app.token(tenant, "root", Role::Admin);
    let body: Value = app.get("/v1/audit-logs", &admin).await.json().await.unwrap();
    let entries = body["data"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let own: Vec<&str> = entries.iter().map(|e| e["request_id"].as_str().unwrap()).collect();
    for id in &own {
        assert!(uuid::Uuid::parse_str(id).is_ok(), "the server's own id: {id}");
    }
    assert!(own[0] != own[1] && own[1] != own[2] && own[0] != own[2], "{own:?}");
    assert_eq!(entries[0]["client_request_id"], Value::Null, "no header: null");
    assert_eq!(entries[1]["client_request_id"], "someone-elses-id");
    assert_eq!(entries[2]["client_request_id"], "someone-elses-id");
}

async fn refused_run_creations_are_audited_as_denied(store: Store) {
    let app = spawn_app(store).await;
    let tenant = new_tenant();
    let user = app.token(tenant, "alice", Role::Authenticated);
    let post = |body: Value, key: &'static str, request_id: &'static str| {
        let request = app
            .request(Method::POST, "/v1/runs")
            .bearer_auth(&user)
            .header("idempotency-key", key)
            .header("x-request-id", request_id)
            .json(&body);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(post(json!({"agent": "bad name!"}), "k-1", "invalid-body").await, 422);
    assert_eq!(post(json!({"agent": "bot", "extra": 1}), "k-1", "unknown-field").await, 400);
    assert_eq!(post(json!({"agent": "bot"}), "k-2", "created").await, 201);
    assert_eq!(post(json!({"agent": "other"}), "k-2", "reused-key").await, 409);

    let admin = app.token(tenant, "root", Role::Admin);
    let body: Value = app.get("/v1/audit-logs", &admin).await.json().await.unwrap();
    let summary: Vec<(&str, &str, &str)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["client_request_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("run.create", "denied", "reused-key"),
            ("run.create", "success", "created"),
            ("run.create", "denied", "unknown-field"),
            ("run.create", "denied", "invalid-body"),
        ]
    );
}
