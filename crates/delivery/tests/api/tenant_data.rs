//! Sessions and knowledge over HTTP, on the embedded store (development) and on the
//! Supabase schema through the direct-SQL adapters (`SUPABASE_DB_URL`, row-level security
//! on the test PostgreSQL); suspended and unknown tenants; and an update on one node seen
//! at once on another (shared Redis cache).

use reqwest::{Method, Response};
use sba_domain::{Role, TenantId};
use sba_infrastructure::internal_store::test_support::fresh_supabase_url;
use sba_infrastructure::redis::test_support::redis_url;
use serde_json::{Value, json};

use crate::helpers::{Store, TestApp, json_of, new_tenant, problem, register_tenant, spawn_app_with};

/// Where the tenant data lives.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Embedded,
    Supabase,
}

struct DataApp {
    app: TestApp,
    /// The Supabase database (`Backend::Supabase`), where tenants must be registered.
    database: Option<String>,
}

impl DataApp {
    async fn start(backend: Backend) -> Self {
        match backend {
            Backend::Embedded => Self { app: spawn_app_with(Store::Sqlite, &[]).await, database: None },
            Backend::Supabase => {
                let database = fresh_supabase_url().await;
                let app = spawn_app_with(Store::Sqlite, &[("SUPABASE_DB_URL", &database)]).await;
                Self { app, database: Some(database) }
            }
        }
    }

    /// A new active tenant (registered where the backend needs it) and a token of its user.
    async fn tenant(&self, user: &str) -> (TenantId, String) {
        self.tenant_as(user, Role::Authenticated).await
    }

    /// As [`Self::tenant`], with a token of `role` (writing knowledge takes an admin).
    async fn tenant_as(&self, user: &str, role: Role) -> (TenantId, String) {
        let tenant = new_tenant();
        if let Some(database) = &self.database {
            register_tenant(database, tenant, "active").await;
        }
        (tenant, self.app.token(tenant, user, role))
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.app.post_json(path, token, body).await
    }

    async fn patch(&self, path: &str, token: &str, body: &Value) -> Response {
        self.app.patch_json(path, token, body).await
    }

    async fn get(&self, path: &str, token: &str) -> Response {
        self.app.get(path, token).await
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Embedded).await;
                }
            )*
        }
        mod supabase {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Supabase).await;
                }
            )*
        }
    };
}

on_both_backends!(
    sessions_are_created_read_listed_in_pages_and_updated,
    a_session_of_another_tenant_answers_404_and_is_never_listed,
    invalid_session_requests_are_rejected_with_field_errors,
    documents_are_stored_with_their_chunks_read_back_and_searched,
    knowledge_of_another_tenant_is_never_read_or_found,
    invalid_knowledge_requests_are_rejected_and_store_nothing,
);

async fn sessions_are_created_read_listed_in_pages_and_updated(backend: Backend) {
    let data = DataApp::start(backend).await;
    let (tenant, token) = data.tenant("alice").await;

    let response =
        data.post("/v1/sessions", &token, &json!({"title": "First", "metadata": {"channel": "web"}})).await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created = json_of(response, 201).await;
    assert_eq!(location, format!("/v1/sessions/{}", created["id"].as_str().unwrap()));
    assert_eq!(created["tenant_id"], tenant.to_string());
    assert_eq!(created["user_id"], "alice");
    assert_eq!(created["title"], "First");
    assert_eq!(created["metadata"], json!({"channel": "web"}));
    assert_eq!(json_of(data.get(&location, &token).await, 200).await, created);

    // Untitled sessions, and a listing newest first in pages of two.
    let second = json_of(data.post("/v1/sessions", &token, &json!({})).await, 201).await;
    assert_eq!(second["title"], Value::Null);
    let third = json_of(data.post("/v1/sessions", &token, &json!({"title": "Third"})).await, 201).await;
    let page = json_of(data.get("/v1/sessions?limit=2", &token).await, 200).await;
    let ids: Vec<&Value> = page["data"].as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, [&third["id"], &second["id"]]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = json_of(data.get(&format!("/v1/sessions?limit=2&cursor={cursor}"), &token).await, 200).await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["data"][0]["id"], created["id"]);
    assert_eq!(rest["next_cursor"], Value::Null);

    // Updates replace the fields they name; `null` clears the title.
    let updated = json_of(data.patch(&location, &token, &json!({"title": "Renamed"})).await, 200).await;
    assert_eq!(updated["title"], "Renamed");
    assert_eq!(updated["metadata"], json!({"channel": "web"}));
    assert_eq!(json_of(data.get(&location, &token).await, 200).await["title"], "Renamed");
    let cleared =
        json_of(data.patch(&location, &token, &json!({"title": null, "metadata": {}})).await, 200).await;
    assert_eq!(cleared["title"], Value::Null);
    assert_eq!(cleared["metadata"], json!({}));
    assert_eq!(json_of(data.get(&location, &token).await, 200).await, cleared);
}

async fn a_session_of_another_tenant_answers_404_and_is_never_listed(backend: Backend) {
    let data = DataApp::start(backend).await;
    let (_, alice) = data.tenant("alice").await;
    let (_, mallory) = data.tenant("mallory").await;
    let created = json_of(data.post("/v1/sessions", &alice, &json!({"title": "Private"})).await, 201).await;
    let path = format!("/v1/sessions/{}", created["id"].as_str().unwrap());

    problem(data.get(&path, &mallory).await, 404, "not_found").await;
    problem(data.patch(&path, &mallory, &json!({"title": "Mine now"})).await, 404, "not_found").await;
    let listed = json_of(data.get("/v1/sessions", &mallory).await, 200).await;
    assert_eq!(listed["data"], json!([]));
    // Unchanged for its owner.
    assert_eq!(json_of(data.get(&path, &alice).await, 200).await["title"], "Private");
}

async fn invalid_session_requests_are_rejected_with_field_errors(backend: Backend) {
    let data = DataApp::start(backend).await;
    let (_, token) = data.tenant("alice").await;
    let body = problem(
        data.post("/v1/sessions", &token, &json!({"title": "  ", "metadata": {"": 1}})).await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> =
        body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["title", "metadata"]);
    problem(data.post("/v1/sessions", &token, &json!({"name": "x"})).await, 400, "invalid_json").await;
    let created = json_of(data.post("/v1/sessions", &token, &json!({})).await, 201).await;
    let path = format!("/v1/sessions/{}", created["id"].as_str().unwrap());
    problem(data.patch(&path, &token, &json!({})).await, 422, "validation_failed").await;
    problem(data.get("/v1/sessions/not-a-uuid", &token).await, 404, "not_found").await;
    problem(data.get("/v1/sessions?limit=0", &token).await, 400, "invalid_request").await;
    let listed = json_of(data.get("/v1/sessions", &token).await, 200).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "refused requests stored nothing");
}

/// A 384-dimension embedding with the given components set.
fn embedding(components: &[(usize, f64)]) -> Value {
    let mut values = vec![0.0; 384];
    for &(i, v) in components {
        values[i] = v;
    }
    json!(values)
}

fn manual() -> Value {
    json!({
        "title": "Returns policy",
        "source": "https://docs.example.com/returns",
        "metadata": {"team": "support"},
        "chunks": [
            {"content": "Returns are free within 30 days.", "metadata": {"lang": "en"}, "embedding": embedding(&[(0, 1.0)])},
            {"content": "Refunds take five days.", "metadata": {"lang": "en"}, "embedding": embedding(&[(0, 0.8), (1, 0.6)])},
            {"content": "Rücksendungen sind kostenlos.", "metadata": {"lang": "de"}, "embedding": embedding(&[(1, 1.0)])},
        ],
    })
}

async fn documents_are_stored_with_their_chunks_read_back_and_searched(backend: Backend) {
    let data = DataApp::start(backend).await;
    let (tenant, token) = data.tenant_as("alice", Role::Admin).await;

    let response = data.post("/v1/knowledge/documents", &token, &manual()).await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let stored = json_of(response, 201).await;
    assert_eq!(location, format!("/v1/knowledge/documents/{}", stored["id"].as_str().unwrap()));
    assert_eq!(stored["tenant_id"], tenant.to_string());
    assert_eq!(stored["title"], "Returns policy");
    assert_eq!(stored["source"], "https://docs.example.com/returns");
    let ordinals: Vec<u64> =
        stored["chunks"].as_array().unwrap().iter().map(|c| c["ordinal"].as_u64().unwrap()).collect();
    assert_eq!(ordinals, [0, 1, 2]);
    assert!(stored["chunks"][0].get("embedding").is_none(), "embeddings are not returned");
    assert_eq!(json_of(data.get(&location, &token).await, 200).await, stored);

    // Nearest first; similarity is the cosine.
    let found = json_of(
        data.post("/v1/knowledge/search", &token, &json!({"embedding": embedding(&[(0, 1.0)]), "top_k": 3}))
            .await,
        200,
    )
    .await;
    let contents: Vec<&str> =
        found["data"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(
        contents,
        ["Returns are free within 30 days.", "Refunds take five days.", "Rücksendungen sind kostenlos."]
    );
    assert!((found["data"][0]["similarity"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    assert!((found["data"][1]["similarity"].as_f64().unwrap() - 0.8).abs() < 1e-4);
    assert!(
        found["data"][2]["similarity"].as_f64().unwrap().abs() < 1e-4,
        "orthogonal: 0, the default minimum"
    );
    assert!(
        found["data"][2]["similarity"].as_f64().unwrap().abs() < 1e-4,
        "orthogonal: 0, the default minimum"
    );
    assert_eq!(found["data"][0]["document_id"], stored["id"]);
    assert_eq!(found["data"][0]["chunk_id"], stored["chunks"][0]["id"]);

    // top_k, min_similarity and the metadata filter.
    let query = |extra: Value| {
        let mut body = json!({"embedding": embedding(&[(0, 1.0), (1, -0.2)]), "min_similarity": -1.0});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let one =
        json_of(data.post("/v1/knowledge/search", &token, &query(json!({"top_k": 1}))).await, 200).await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    let all = json_of(data.post("/v1/knowledge/search", &token, &query(json!({}))).await, 200).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 3, "min_similarity -1 keeps the dissimilar chunk");
    let default = json_of(
        data.post("/v1/knowledge/search", &token, &json!({"embedding": embedding(&[(0, 1.0), (1, -0.2)])}))
            .await,
        200,
    )
    .await;
    assert_eq!(default["data"].as_array().unwrap().len(), 2, "below the default minimum of 0");
    let strict =
        json_of(data.post("/v1/knowledge/search", &token, &query(json!({"min_similarity": 0.9}))).await, 200)
            .await;
    assert_eq!(strict["data"].as_array().unwrap().len(), 1);
    let german = json_of(
        data.post("/v1/knowledge/search", &token, &query(json!({"filter": {"lang": "de"}}))).await,
        200,
    )
    .await;
    let contents: Vec<&str> =
        german["data"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["Rücksendungen sind kostenlos."]);
}

async fn knowledge_of_another_tenant_is_never_read_or_found(backend: Backend) {
    let data = DataApp::start(backend).await;
    let (_, alice) = data.tenant_as("alice", Role::Admin).await;
    let (_, mallory) = data.tenant("mallory").await;
    let stored = json_of(data.post("/v1/knowledge/documents", &alice, &manual()).await, 201).await;
    let path = format!("/v1/knowledge/documents/{}", stored["id"].as_str().unwrap());
    problem(data.get(&path, &mallory).await, 404, "not_found").await;
    let found = json_of(
        data.post(
            "/v1/knowledge/search",
            &mallory,
            &json!({"embedding": embedding(&[(0, 1.0)]), "min_similarity": -1}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(found["data"], json!([]));
    problem(data.get("/v1/knowledge/documents/not-a-uuid", &alice).await, 404, "not_found").await;
}

async fn invalid_knowledge_requests_are_rejected_and_store_nothing(backend: Backend) {
    let data = DataApp::start(backend).await;
    let (_, token) = data.tenant_as("alice", Role::Admin).await;
    let mut document = manual();
    document["chunks"][1]["embedding"] = json!([1.0, 2.0]);
    document["chunks"][2]["content"] = json!("");
    let body =
        problem(data.post("/v1/knowledge/documents", &token, &document).await, 422, "validation_failed")
            .await;
    let fields: Vec<&str> =
        body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["chunks[1].embedding", "chunks[2].content"]);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("384"), "{body}");

    let mut empty = manual();
    empty["chunks"] = json!([]);
    problem(data.post("/v1/knowledge/documents", &token, &empty).await, 422, "validation_failed").await;
    let response = data
        .app
        .request(Method::POST, "/v1/knowledge/documents")
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(manual().to_string())
        .send()
        .await
        .unwrap();
    problem(response, 415, "unsupported_media_type").await;
    problem(
        data.post("/v1/knowledge/search", &token, &json!({"embedding": embedding(&[(0, 1.0)]), "top_k": 0}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    problem(
        data.post("/v1/knowledge/search", &token, &json!({"embedding": embedding(&[])})).await,
        422,
        "validation_failed",
    )
    .await;
    problem(
        data.post("/v1/knowledge/search", &token, &json!({"embedding": "[1,2]"})).await,
        400,
        "invalid_json",
    )
    .await;

    let found = json_of(
        data.post(
            "/v1/knowledge/search",
            &token,
            &json!({"embedding": embedding(&[(0, 1.0)]), "min_similarity": -1}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(found["data"], json!([]), "no refused document left a chunk behind");
}

#[tokio::test]
async fn a_suspended_or_unknown_tenant_is_refused_with_403_on_every_route() {
    let data = DataApp::start(Backend::Supabase).await;
    let database = data.database.as_deref().unwrap();
    let suspended = new_tenant();
    register_tenant(database, suspended, "suspended").await;
    let token = data.app.token(suspended, "alice", Role::Admin);
    for path in ["/v1/me", "/v1/sessions", "/v1/runs", "/v1/usage", "/v1/audit-logs"] {
        problem(data.get(path, &token).await, 403, "tenant_suspended").await;
    }
    problem(data.post("/v1/sessions", &token, &json!({})).await, 403, "tenant_suspended").await;
    problem(
        data.post("/v1/runs", &token, &json!({"agent": "a", "input": {}})).await,
        403,
        "tenant_suspended",
    )
    .await;
    problem(
        data.post("/v1/knowledge/search", &token, &json!({"embedding": embedding(&[(0, 1.0)])})).await,
        403,
        "tenant_suspended",
    )
    .await;

    let unknown = data.app.token(new_tenant(), "bob", Role::Authenticated);
    problem(data.get("/v1/sessions", &unknown).await, 403, "tenant_unknown").await;

    let (_, active) = data.tenant("carol").await;
    json_of(data.get("/v1/sessions", &active).await, 200).await;
}

#[tokio::test]
async fn a_session_updated_through_one_node_is_seen_at_once_through_another() {
    let database = fresh_supabase_url().await;
    let redis = redis_url();
    let env = [("SUPABASE_DB_URL", database.as_str()), ("REDIS_URL", redis.as_str())];
    let node_a = DataApp { app: spawn_app_with(Store::Sqlite, &env).await, database: Some(database.clone()) };
    let node_b = DataApp { app: spawn_app_with(Store::Sqlite, &env).await, database: Some(database.clone()) };
    let (_, token) = node_a.tenant("alice").await;

    let created = json_of(node_a.post("/v1/sessions", &token, &json!({"title": "Before"})).await, 201).await;
    let path = format!("/v1/sessions/{}", created["id"].as_str().unwrap());
    // Node B reads it, so both cache tiers of node B hold "Before".
    assert_eq!(json_of(node_b.get(&path, &token).await, 200).await["title"], "Before");
    assert_eq!(json_of(node_b.get(&path, &token).await, 200).await["title"], "Before");

    assert_eq!(
        json_of(node_a.patch(&path, &token, &json!({"title": "After"})).await, 200).await["title"],
        "After"
    );
    // The invalidation reaches node B's in-process tier through Redis pub/sub, which is
    // asynchronous: allow it a moment, far below the entry's TTL of a minute.
    let mut seen = Value::Null;
    for _ in 0..50 {
        seen = json_of(node_b.get(&path, &token).await, 200).await["title"].clone();
        if seen == "After" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen, "After", "node B still serves the old title");
}

#[tokio::test]
async fn readiness_covers_supabase_and_redis_and_fails_when_supabase_is_gone() {
    let database = fresh_supabase_url().await;
    let redis = redis_url();
    let app = spawn_app_with(
        Store::Sqlite,
        &[("SUPABASE_DB_URL", database.as_str()), ("REDIS_URL", redis.as_str())],
    )
    .await;
    let ready = json_of(app.get_anonymous("/readyz").await, 200).await;
    for component in ["database", "supabase", "redis"] {
        assert_eq!(ready["checks"][component]["status"], "up", "{component}: {ready}");
    }

    // The Supabase database disappears (its connections are cut): the node is not ready.
    let name = database.rsplit('/').next().unwrap();
    sba_infrastructure::internal_store::test_support::execute_sql(
        &sba_infrastructure::internal_store::test_support::admin_url(),
        &format!("drop database \"{name}\" with (force)"),
    )
    .await;
    // Readiness answers are reused for a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let not_ready = json_of(app.get_anonymous("/readyz").await, 503).await;
    assert_eq!(not_ready["status"], "not_ready");
    assert_eq!(not_ready["checks"]["supabase"]["status"], "down", "{not_ready}");
    assert_eq!(not_ready["checks"]["database"]["status"], "up");
}

/// A document may be larger than the general body limit (1 MiB) through its route's own
/// JSON configuration, up to 16 MiB; above that it gets the same problem as every route.
#[tokio::test]
async fn documents_have_their_own_body_limit_with_the_usual_problem() {
    let data = DataApp::start(Backend::Embedded).await;
    let (_, token) = data.tenant_as("alice", Role::Admin).await;
    let mut large = manual();
    large["metadata"]["padding"] = json!("x".repeat(2 << 20));
    json_of(data.post("/v1/knowledge/documents", &token, &large).await, 201).await;

    large["metadata"]["padding"] = json!("x".repeat(17 << 20));
    let response = data
        .app
        .request(Method::POST, "/v1/knowledge/documents")
        .bearer_auth(&token)
        .header("x-request-id", "too-large-1")
        .json(&large)
        .send()
        .await
        .unwrap();
    let body = problem(response, 413, "payload_too_large").await;
    assert_eq!(
        body,
        json!({
            "type": "https://sba.dev/problems/payload-too-large",
            "title": "Payload Too Large",
            "status": 413,
            "detail": "The request body exceeds the size limit.",
            "code": "payload_too_large",
            "request_id": "too-large-1",
        })
    );
}
