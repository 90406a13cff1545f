//! The permission matrix of `docs/security.md` through HTTP: who cancels runs, whose sessions
//! a user sees, who writes the knowledge base, and Supabase's `service_role` refused.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use sba_domain::{Role, TenantId};
use serde_json::{Value, json};

use crate::helpers::{AUDIENCE, ISSUER, SECRET, Store, TestApp, json_of, new_tenant, problem, spawn_app};

/// One queued run of `token`'s user, and its path.
async fn queued_run(app: &TestApp, token: &str) -> String {
    let run = json_of(app.post_json("/v1/runs", token, &json!({"agent": "bot"})).await, 201).await;
    format!("/v1/runs/{}", run["id"].as_str().unwrap())
}

/// The `(action, outcome)` of the tenant's audit entries, newest first.
async fn audit_trail(app: &TestApp, tenant: TenantId) -> Vec<(String, String)> {
    let admin = app.token(tenant, "auditor", Role::Admin);
    let body = json_of(app.get("/v1/audit-logs?limit=100", &admin).await, 200).await;
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap().to_owned(), e["outcome"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn only_the_creator_tenant_admins_and_services_cancel_a_run() {
    let app = spawn_app(Store::Sqlite).await;
    let tenant = new_tenant();
    let alice = app.token(tenant, "alice", Role::Authenticated);
    let path = queued_run(&app, &alice).await;

    for (user, role) in [("bob", Role::Authenticated), ("alice", Role::Agent)] {
        let other = app.token(tenant, user, role);
        // Every user of the tenant reads the run; cancelling it is another matter.
        json_of(app.get(&path, &other).await, 200).await;
        problem(app.post(&format!("{path}/cancel"), &other).await, 403, "forbidden").await;
        let still = json_of(app.get(&path, &alice).await, 200).await;
        assert_eq!(still["status"], "queued", "{role}: the run is unchanged");
        assert!(still["cancelled_at"].is_null());
    }
    let trail = audit_trail(&app, tenant).await;
    assert_eq!(trail[..2], [("run.cancel".into(), "denied".into()), ("run.cancel".into(), "denied".into())]);

    let cancelled = json_of(app.post(&format!("{path}/cancel"), &alice).await, 200).await;
    assert_eq!(cancelled["status"], "cancelled", "the creator cancels");
    for (user, role) in [("root", Role::Admin), ("billing", Role::Service)] {
        let path = queued_run(&app, &alice).await;
        let cancelled =
            json_of(app.post(&format!("{path}/cancel"), &app.token(tenant, user, role)).await, 200).await;
        assert_eq!(cancelled["status"], "cancelled", "{role} cancels another user's run");
    }
}

#[tokio::test]
async fn agents_cannot_start_runs() {
    let app = spawn_app(Store::Sqlite).await;
    let tenant = new_tenant();
    let agent = app.token(tenant, "agent-1", Role::Agent);
    problem(app.post_json("/v1/runs", &agent, &json!({"agent": "bot"})).await, 403, "forbidden").await;
    let listed = json_of(app.get("/v1/runs", &agent).await, 200).await;
    assert_eq!(listed["data"], json!([]), "nothing was started");
    assert_eq!(audit_trail(&app, tenant).await, [("run.create".to_owned(), "denied".to_owned())]);
}

#[tokio::test]
async fn a_session_belongs_to_its_user_and_is_404_and_unlisted_for_other_users() {
    let app = spawn_app(Store::Sqlite).await;
    let tenant = new_tenant();
    let alice = app.token(tenant, "alice", Role::Authenticated);
    let bob = app.token(tenant, "bob", Role::Authenticated);
    let created =
        json_of(app.post_json("/v1/sessions", &alice, &json!({"title": "Private"})).await, 201).await;
    let path = format!("/v1/sessions/{}", created["id"].as_str().unwrap());
    // Alice's read puts it in the session cache, which bob's read must not be served from.
    json_of(app.get(&path, &alice).await, 200).await;

    let foreign = problem(app.get(&path, &bob).await, 404, "not_found").await;
    let missing =
        problem(app.get(&format!("/v1/sessions/{}", uuid::Uuid::now_v7()), &bob).await, 404, "not_found")
            .await;
    assert_eq!(foreign["detail"], missing["detail"], "exactly as a missing one");
    problem(app.patch_json(&path, &bob, &json!({"title": "Mine now"})).await, 404, "not_found").await;
    let bobs = json_of(app.post_json("/v1/sessions", &bob, &json!({"title": "Bob's"})).await, 201).await;
    let listed = json_of(app.get("/v1/sessions", &bob).await, 200).await;
    assert_eq!(listed["data"], json!([bobs]), "only his own");
    assert_eq!(json_of(app.get(&path, &alice).await, 200).await, created, "unchanged");
}

#[tokio::test]
async fn tenant_admins_and_services_see_and_change_every_users_sessions() {
    let app = spawn_app(Store::Sqlite).await;
    let tenant = new_tenant();
    let alice = app.token(tenant, "alice", Role::Authenticated);
    let bob = app.token(tenant, "bob", Role::Authenticated);
    let alices = json_of(app.post_json("/v1/sessions", &alice, &json!({"title": "A"})).await, 201).await;
    let bobs = json_of(app.post_json("/v1/sessions", &bob, &json!({"title": "B"})).await, 201).await;
    let path = format!("/v1/sessions/{}", alices["id"].as_str().unwrap());

    for (user, role) in [("root", Role::Admin), ("crm", Role::Service)] {
        let token = app.token(tenant, user, role);
        let listed = json_of(app.get("/v1/sessions", &token).await, 200).await;
        assert_eq!(listed["data"], json!([bobs, alices]), "{role}: everyone's, newest first");
        assert_eq!(json_of(app.get(&path, &token).await, 200).await, alices, "{role}");
    }
    let admin = app.token(tenant, "root", Role::Admin);
    let renamed = json_of(app.patch_json(&path, &admin, &json!({"title": "Moderated"})).await, 200).await;
    assert_eq!(renamed["user_id"], "alice", "still alice's");
    assert_eq!(json_of(app.get(&path, &alice).await, 200).await["title"], "Moderated");

    let outsider = app.token(new_tenant(), "root", Role::Admin);
    assert_eq!(json_of(app.get("/v1/sessions", &outsider).await, 200).await["data"], json!([]));
}

#[tokio::test]
async fn agents_have_no_access_to_sessions() {
    let app = spawn_app(Store::Sqlite).await;
    let agent = app.token(new_tenant(), "agent-1", Role::Agent);
    problem(app.get("/v1/sessions", &agent).await, 403, "forbidden").await;
    problem(app.post_json("/v1/sessions", &agent, &json!({})).await, 403, "forbidden").await;
    let path = format!("/v1/sessions/{}", uuid::Uuid::now_v7());
    problem(app.get(&path, &agent).await, 403, "forbidden").await;
    problem(app.patch_json(&path, &agent, &json!({"title": "x"})).await, 403, "forbidden").await;
}

fn document() -> Value {
    let mut embedding = vec![0.0; 384];
    embedding[0] = 1.0;
    json!({"title": "Refund policy", "chunks": [{"content": "Refunds within 30 days.", "embedding": embedding}]})
}

#[tokio::test]
async fn only_tenant_admins_and_services_write_the_knowledge_base_and_every_role_reads_it() {
    let app = spawn_app(Store::Sqlite).await;
    let tenant = new_tenant();
    for (user, role) in [("alice", Role::Authenticated), ("agent-1", Role::Agent)] {
        let token = app.token(tenant, user, role);
        problem(app.post_json("/v1/knowledge/documents", &token, &document()).await, 403, "forbidden").await;
    }
    let mut stored = Vec::new();
    for (user, role) in [("root", Role::Admin), ("ingest", Role::Service)] {
        let token = app.token(tenant, user, role);
        stored.push(json_of(app.post_json("/v1/knowledge/documents", &token, &document()).await, 201).await);
    }
    let trail = audit_trail(&app, tenant).await;
    let outcomes: Vec<&str> = trail.iter().map(|(_, outcome)| outcome.as_str()).collect();
    assert_eq!(outcomes, ["success", "success", "denied", "denied"], "{trail:?}");

    let mut query = document()["chunks"][0].clone();
    query.as_object_mut().unwrap().remove("content");
    for role in [Role::Authenticated, Role::Admin, Role::Agent, Role::Service] {
        let token = app.token(tenant, "reader", role);
        let path = format!("/v1/knowledge/documents/{}", stored[0]["id"].as_str().unwrap());
        json_of(app.get(&path, &token).await, 200).await;
        let found = json_of(app.post_json("/v1/knowledge/search", &token, &query).await, 200).await;
        assert_eq!(found["data"].as_array().unwrap().len(), 2, "{role}");
    }
}

#[tokio::test]
async fn a_supabase_service_role_token_is_401_token_invalid_with_a_challenge() {
    let app = spawn_app(Store::Sqlite).await;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": "service", "tenant_id": new_tenant().to_string(), "role": "service_role",
                        "exp": now + 60, "iss": ISSUER, "aud": AUDIENCE});
    let token = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
        .unwrap();
    for path in ["/v1/runs", "/v1/sessions"] {
        let response = app.get(path, &token).await;
        let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        problem(response, 401, "token_invalid").await;
    }
}
