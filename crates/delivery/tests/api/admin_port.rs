//! `SBA_SERVER__ADMIN_PORT`: `/metrics`, `/openapi.json` and `/docs` on a second listener,
//! and no longer on the public one.

use reqwest::Client;
use sba_delivery::startup::Application;
use sba_domain::Role;
use serde_json::Value;

use crate::helpers::{Store, new_tenant, spawn_app, spawn_app_with_admin_port};

const OPERATOR_ROUTES: [&str; 4] = ["/metrics", "/openapi.json", "/docs/", "/docs/swagger-initializer.js"];

#[tokio::test]
async fn with_an_admin_port_the_operator_routes_leave_the_public_port() {
    let app = spawn_app_with_admin_port(Store::Sqlite, &[]).await;
    for path in OPERATOR_ROUTES.into_iter().chain(["/docs"]) {
        let response = app.get_anonymous(path).await;
        assert_eq!(response.status(), 404, "{path} on the public port");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{path}");
    }
    // The API itself is still there.
    assert_eq!(app.get_anonymous("/healthz").await.status(), 200);
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    assert_eq!(app.get("/v1/runs", &token).await.status(), 200);
}

#[tokio::test]
async fn the_admin_port_serves_metrics_and_docs_without_a_token_and_nothing_else() {
    let app = spawn_app_with_admin_port(Store::Sqlite, &[]).await;
    let client = Client::new();
    for path in OPERATOR_ROUTES {
        let response = client.get(app.admin_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path} on the admin port");
    }
    let doc: Value = client.get(app.admin_url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/v1/runs"].is_object());
    let bare = client.get(app.admin_url("/docs")).send().await.unwrap();
    assert!(bare.url().path().starts_with("/docs/"), "{}", bare.url());
    for path in ["/v1/runs", "/healthz", "/readyz"] {
        let response = client.get(app.admin_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path} is not on the admin port");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{path}");
    }
    let post = client.post(app.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test]
async fn without_an_admin_port_the_public_port_serves_the_operator_routes() {
    let app = spawn_app(Store::Sqlite).await;
    assert_eq!(app.admin_address, None);
    for path in OPERATOR_ROUTES {
        assert_eq!(app.get_anonymous(path).await.status(), 200, "{path}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn serve_binds_the_admin_port_from_the_settings_and_stops_both_listeners_together() {
    let template = spawn_app(Store::Sqlite).await;
    let mut settings = template.settings.clone();
    let (port, admin_port) = (free_port(), free_port());
    settings.server.port = port;
    settings.server.admin_port = Some(admin_port);
    let app = Application::build(settings).await.unwrap();
    assert_eq!((app.port(), app.admin_port()), (port, Some(admin_port)));
    let handle = app.handle();
    let running = tokio::spawn(app.run_until_stopped());
    let client = Client::new();
    let admin_metrics = format!("http://127.0.0.1:{admin_port}/metrics");
    assert_eq!(client.get(&admin_metrics).send().await.unwrap().status(), 200);
    let public = client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);

    handle.stop(true).await;
    running.await.unwrap().unwrap();
    assert!(client.get(&admin_metrics).send().await.is_err(), "the admin listener stopped too");
}

#[tokio::test]
async fn sba_worker_serves_its_metrics_on_the_admin_port() {
    let redis = sba_infrastructure::redis::test_support::PrivateRedis::start();
    let admin_port = free_port();
    let (mut command, dir) = crate::helpers::sba_process(&["worker"]);
    let mut worker = command
        .env("SBA_DATA_DIR", dir.join("data"))
        .env("REDIS_URL", redis.url())
        .env("SBA_SERVER__ADMIN_PORT", admin_port.to_string())
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{admin_port}/metrics");
    let client = Client::new();
    // The listener answers as soon as it is bound; the worker's series once it is built.
    let mut scrape = None;
    for _ in 0..300 {
        if let Ok(response) = client.get(&url).send().await
            && response.status() == 200
        {
            let body = response.text().await.unwrap();
            let built = body.contains("sba_worker_");
            scrape = Some(body);
            if built {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let status = worker.try_wait().unwrap();
    let _ = worker.kill();
    let _ = worker.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let scrape =
        scrape.unwrap_or_else(|| panic!("no /metrics on the admin port in 30 s (worker: {status:?})"));
    for series in ["sba_worker_events_persisted_total", "sba_worker_dead_letters_total"] {
        assert!(scrape.contains(series), "{series} is missing:\n{scrape}");
    }
}
