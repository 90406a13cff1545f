//! What a client without a token can make the server hold: metric series, rate-limit keys,
//! directory calls, concurrent uploads (docs/security.md, "Unauthenticated load").

use reqwest::Method;
use sba_domain::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{Store, TestApp, new_tenant, spawn_app_with};

const TENANT_APP: &str = "https://app.tenant-a.test";

async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.request(Method::OPTIONS, path)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap()
}

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

#[tokio::test]
async fn preflights_over_the_per_ip_limit_get_429_whatever_their_route_or_origin() {
    let tenant_origins = format!("{}={TENANT_APP}", new_tenant());
    let app = spawn_app_with(
        Store::Sqlite,
        &[
            ("SBA_RATE_LIMIT__RULES", "preflight OPTIONS * 3/60"),
            ("SBA_CORS__TENANT_ORIGINS", &tenant_origins),
        ],
    )
    .await;
    assert_eq!(preflight(&app, "/v1/runs", TENANT_APP).await.status(), 204);
    assert_eq!(preflight(&app, "/v1/sessions", "https://invented-1.test").await.status(), 403);
    assert_eq!(preflight(&app, "/healthz", "https://invented-2.test").await.status(), 403);
    let refused = preflight(&app, "/v1/runs", TENANT_APP).await;
    assert_eq!(refused.status(), 429, "one bucket per client for every preflight");
    assert!(refused.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(refused.headers()["ratelimit-policy"], "\"preflight\";q=3;w=60");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Requests with a token have their own buckets.
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    assert_eq!(app.get("/v1/runs", &token).await.status(), 200);
}

/// A document of one chunk with `embedding`.
fn document(embedding: &Value) -> Value {
    json!({"title": "Returns", "chunks": [{"content": "Free within 30 days.", "embedding": embedding}]})
}

#[tokio::test]
async fn an_overlong_embedding_gets_the_length_error_whatever_follows_its_dimension() {
    let app = spawn_app_with(Store::Sqlite, &[]).await;
    let token = app.token(new_tenant(), "admin", Role::Admin);
    // 385 numbers, then values no embedding holds: the decoder stopped keeping values at
    // 384 and only counts the rest.
    let mut values: Vec<Value> = (0..385).map(|i| json!(f64::from(i))).collect();
    values.extend([json!("garbage"), json!({"deep": [[1, 2], {"x": null}]}), json!(null)]);
    let response = app.post_json("/v1/knowledge/documents", &token, &document(&Value::Array(values))).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(body["errors"][0]["field"], "chunks[0].embedding");
    assert_eq!(body["errors"][0]["message"], "must have 384 dimensions, not 388", "{body}");
}

#[tokio::test]
async fn uploads_over_the_concurrency_cap_are_refused_before_their_body_is_read() {
    let app = spawn_app_with(Store::Sqlite, &[("SBA_KNOWLEDGE__MAX_CONCURRENT_UPLOADS", "1")]).await;
    let token = app.token(new_tenant(), "admin", Role::Admin);
    // An upload whose body never finishes arriving holds the one place.
    let address = app.address.trim_start_matches("http://");
    let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/knowledge/documents HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"title\": "
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let embedding = Value::Array((0..384).map(|i| json!(if i == 0 { 1.0 } else { 0.0 })).collect());
    let refused = app.post_json("/v1/knowledge/documents", &token, &document(&embedding)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "server_busy");
    assert_eq!(body["retry_after_ms"], 1000);

    drop(slow);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stored = app.post_json("/v1/knowledge/documents", &token, &document(&embedding)).await;
    assert_eq!(stored.status(), 201, "the place is free again once the slow upload is gone");
}

#[tokio::test]
async fn a_user_who_may_not_write_knowledge_is_refused_before_its_body_is_read_and_holds_no_upload_place() {
    let app = spawn_app_with(Store::Sqlite, &[("SBA_KNOWLEDGE__MAX_CONCURRENT_UPLOADS", "1")]).await;
    let tenant = new_tenant();
    let user = app.token(tenant, "alice", Role::Authenticated);
    let admin = app.token(tenant, "root", Role::Admin);
    // A plain user's upload whose body never finishes arriving.
    let address = app.address.trim_start_matches("http://");
    let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/knowledge/documents HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {user}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"title\": "
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.flush().await.unwrap();

    // It is answered without the rest of its body.
    let mut answer = vec![0_u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), slow.read(&mut answer))
        .await
        .expect("the refusal does not wait for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("\"code\":\"forbidden\""), "{answer}");

    // It holds no upload place: the one place is free for a writer while it is still open.
    let embedding = Value::Array((0..384).map(|i| json!(if i == 0 { 1.0 } else { 0.0 })).collect());
    let stored = app.post_json("/v1/knowledge/documents", &admin, &document(&embedding)).await;
    assert_eq!(stored.status(), 201);

    // And the refusal is audited as denied.
    let mut denied = Vec::new();
    for _ in 0..50 {
        let page: Value = app.get("/v1/audit-logs?limit=100", &admin).await.json().await.unwrap();
        denied = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry["action"] == "knowledge_document.create" && entry["outcome"] == "denied")
            .map(|entry| entry["actor"].clone())
            .collect();
        if !denied.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(denied, [json!("alice")]);
    drop(slow);
}

/// The series of a Prometheus text page (every line that is not a comment).
fn series_count(page: &str) -> usize {
    page.lines().filter(|line| !line.is_empty() && !line.starts_with('#')).count()
}

/// A request a scanner might send: an invented or real method, on a path made of fresh ids.
async fn random_request(app: &TestApp, token: &str, i: usize) -> String {
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let method = match i % 5 {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::DELETE,
        3 => Method::PATCH,
        _ => invented_method(i),
    };
    let path = match i % 4 {
        0 => format!("/{marker}"),
        1 => format!("/v1/runs/{marker}/{marker}?{marker}=1"),
        2 => format!("/v1/{marker}"),
        _ => format!("/v1/runs/{}", uuid::Uuid::new_v4()),
    };
    let mut request = app.request(method, &path).header("x-request-id", &marker);
    if i.is_multiple_of(2) {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap();
    marker
}

#[tokio::test]
async fn random_paths_and_methods_leave_the_metric_series_count_flat() {
    let app = spawn_app_with(Store::Sqlite, &[("SBA_RATE_LIMIT__ENABLED", "false")]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    for i in 0..40 {
        random_request(&app, &token, i).await;
    }
    // The first scrape is itself a request with series of its own.
    app.get_anonymous("/metrics").await;
    let before = app.get_anonymous("/metrics").await.text().await.unwrap();
    let mut markers = Vec::new();
    for i in 40..440 {
        markers.push(random_request(&app, &token, i).await);
    }
    let after = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert_eq!(
        series_count(&after),
        series_count(&before),
        "400 more requests on fresh paths added series:\n{after}"
    );
    assert!(
        markers.iter().all(|marker| !after.contains(marker.as_str())),
        "a path, id or query reached a label"
    );
    assert!(!after.contains("INVENTED"), "a raw method became a label");
}
