//! Per-tenant CORS: the global allow-list, each tenant's own origins, preflights, and no
//! CORS header at all for a disallowed origin. CORS does not touch the internal store, so
//! these run on SQLite only.

use reqwest::{Method, Response};
use sba_domain::{Role, TenantId};
use serde_json::json;

use crate::helpers::{Store, TestApp, new_tenant, spawn_app_with};

const CONSOLE: &str = "https://console.sba.test";
const TENANT_APP: &str = "https://app.tenant-a.test";
const EVIL: &str = "https://evil.test";

async fn app_with_tenant_origin(tenant: TenantId) -> TestApp {
    let tenant_origins = format!("{tenant}={TENANT_APP} https://admin.tenant-a.test");
    spawn_app_with(
        Store::Sqlite,
        &[("SBA_CORS__ALLOWED_ORIGINS", CONSOLE), ("SBA_CORS__TENANT_ORIGINS", &tenant_origins)],
    )
    .await
}

async fn preflight(app: &TestApp, origin: &str) -> Response {
    app.request(Method::OPTIONS, "/v1/runs")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type, idempotency-key")
        .send()
        .await
        .unwrap()
}

async fn list_runs(app: &TestApp, origin: &str, token: Option<&str>) -> Response {
    let mut request = app.request(Method::GET, "/v1/runs").header("origin", origin);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn allow_origin(response: &Response) -> Option<&str> {
    response.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap())
}

fn has_no_cors_header(response: &Response) -> bool {
    !response.headers().keys().any(|name| name.as_str().starts_with("access-control-"))
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_names_the_origin_methods_and_headers() {
    let tenant = new_tenant();
    let app = app_with_tenant_origin(tenant).await;
    for origin in [CONSOLE, TENANT_APP] {
        let response = preflight(&app, origin).await;
        assert_eq!(response.status(), 204, "{origin}");
        assert_eq!(allow_origin(&response), Some(origin));
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-credentials"], "true");
        assert!(headers["access-control-allow-methods"].to_str().unwrap().contains("POST"));
        let allowed = headers["access-control-allow-headers"].to_str().unwrap();
        for name in ["authorization", "content-type", "idempotency-key"] {
            assert!(allowed.contains(name), "{name} in {allowed}");
        }
        assert!(headers["access-control-max-age"].to_str().unwrap().parse::<u32>().unwrap() > 0);
        assert!(headers["vary"].to_str().unwrap().contains("Origin"));
        assert!(headers.contains_key("x-request-id"));
    }
}

#[tokio::test]
async fn a_preflight_from_a_disallowed_origin_gets_no_cors_headers() {
    let app = app_with_tenant_origin(new_tenant()).await;
    for origin in [EVIL, "null", "https://console.sba.test.evil.test", "http://console.sba.test"] {
        let response = preflight(&app, origin).await;
        assert_eq!(response.status(), 403, "{origin}");
        assert!(has_no_cors_header(&response), "{origin}: {:?}", response.headers());
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "origin_not_allowed");
    }
}

#[tokio::test]
async fn a_tenant_origin_may_read_that_tenants_answers_but_not_another_tenants() {
    let tenant = new_tenant();
    let app = app_with_tenant_origin(tenant).await;
    let own = app.token(tenant, "alice", Role::Authenticated);
    let response = list_runs(&app, TENANT_APP, Some(&own)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(allow_origin(&response), Some(TENANT_APP));
    let exposed = response.headers()["access-control-expose-headers"].to_str().unwrap();
    assert!(exposed.contains("x-request-id"), "{exposed}");

    // A page on tenant A's origin holding a token of tenant B cannot read B's data.
    let stranger = app.token(new_tenant(), "mallory", Role::Authenticated);
    let response = list_runs(&app, TENANT_APP, Some(&stranger)).await;
    assert_eq!(response.status(), 200, "the server answers; the browser withholds it");
    assert!(has_no_cors_header(&response), "{:?}", response.headers());
    assert!(response.headers()["vary"].to_str().unwrap().contains("Origin"));
}

#[tokio::test]
async fn global_origins_serve_every_tenant_and_unknown_origins_none() {
    let app = app_with_tenant_origin(new_tenant()).await;
    let token = app.token(new_tenant(), "bob", Role::Authenticated);
    assert_eq!(allow_origin(&list_runs(&app, CONSOLE, Some(&token)).await), Some(CONSOLE));
    let response = list_runs(&app, EVIL, Some(&token)).await;
    assert_eq!(response.status(), 200);
    assert!(has_no_cors_header(&response));
}

#[tokio::test]
async fn an_unauthenticated_answer_is_readable_by_a_registered_origin_only() {
    let app = app_with_tenant_origin(new_tenant()).await;
    let response = list_runs(&app, TENANT_APP, None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(allow_origin(&response), Some(TENANT_APP));
    let response = list_runs(&app, EVIL, None).await;
    assert_eq!(response.status(), 401);
    assert!(has_no_cors_header(&response));
}

#[tokio::test]
async fn requests_without_an_origin_get_no_cors_headers() {
    let tenant = new_tenant();
    let app = app_with_tenant_origin(tenant).await;
    let token = app.token(tenant, "alice", Role::Authenticated);
    let response = app.post_json("/v1/runs", &token, &json!({"agent": "bot"})).await;
    assert_eq!(response.status(), 201);
    assert!(has_no_cors_header(&response));
}
