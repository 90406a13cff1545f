//! `/openapi.json` (OpenAPI 3.1) and `/docs` (Swagger UI, vendored).

use sba_delivery::http::ROUTES;
use serde_json::Value;

use crate::helpers::{Store, spawn_app};

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_nothing_else() {
    let app = spawn_app(Store::Sqlite).await;
    let response = app.get_anonymous("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);

    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "{method} {path} is documented but not served"
            );
            documented += 1;
        }
    }
    for (method, path) in ROUTES {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is served but missing from /openapi.json");
        assert!(operation["operationId"].is_string(), "{method} {path} has no operationId");
        let responses = operation["responses"].as_object().unwrap();
        // An upgrade's success is 101 Switching Protocols (`GET /v1/stream`).
        let success = |status: &String| status.starts_with('2') || status == "101";
        assert!(responses.keys().any(success), "{method} {path}: no success response");
        assert!(responses.contains_key("500"), "{method} {path}: no 500");
        if path.starts_with("/v1/") {
            assert_eq!(operation["security"][0]["bearer"], serde_json::json!([]), "{method} {path}");
            assert!(responses.contains_key("401"), "{method} {path}: no 401");
        }
    }
    assert_eq!(documented, ROUTES.len());
}

#[tokio::test]
async fn the_document_describes_errors_schemas_and_headers() {
    let app = spawn_app(Store::Sqlite).await;
    let doc: Value = app.get_anonymous("/openapi.json").await.json().await.unwrap();
    let schemas = &doc["components"]["schemas"];
    for name in ["Problem", "RunResponse", "CreateRunRequest", "AuditEntryResponse", "EventResponse"] {
        assert!(schemas[name].is_object(), "schema {name} missing");
    }
    let problem = &schemas["Problem"]["properties"];
    for field in ["type", "title", "status", "detail", "code", "request_id", "errors"] {
        assert!(problem[field].is_object(), "Problem.{field}");
    }
    // EventResponse serializes through the domain's EventView: its schema is given by hand.
    let event = &schemas["EventResponse"]["properties"];
    for field in ["seq", "run_id", "kind", "data", "created_at"] {
        assert!(event[field].is_object(), "EventResponse.{field}");
    }
    let unauthorized = &doc["components"]["responses"]["Unauthorized"];
    assert!(unauthorized["content"]["application/problem+json"].is_object());
    assert!(unauthorized["headers"]["WWW-Authenticate"].is_object());
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    let create = &doc["paths"]["/v1/runs"]["post"];
    let params: Vec<&str> =
        create["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(params.contains(&"Idempotency-Key"), "{params:?}");
    let created = &create["responses"]["201"];
    for header in ["Location", "Idempotent-Replayed", "X-Request-Id"] {
        assert!(created["headers"][header].is_object(), "201 header {header}");
    }
    for status in ["400", "409", "422"] {
        assert!(create["responses"][status]["content"]["application/problem+json"].is_object(), "{status}");
    }
}

#[tokio::test]
async fn swagger_ui_is_served_offline_at_docs() {
    let app = spawn_app(Store::Sqlite).await;
    let page = app.get_anonymous("/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.to_lowercase().contains("swagger"), "{html}");
    let config = app.get_anonymous("/docs/swagger-initializer.js").await;
    assert_eq!(config.status(), 200);
    assert!(config.text().await.unwrap().contains("/openapi.json"));
    // `/docs` without the slash leads there too.
    let bare = app.get_anonymous("/docs").await;
    assert_eq!(bare.status(), 200);
    assert!(bare.url().path().starts_with("/docs/"), "{}", bare.url());
}

#[tokio::test]
async fn every_operation_with_a_body_documents_413_and_415_and_runs_take_any_json_input() {
    let app = spawn_app(Store::Sqlite).await;
    let doc: Value = app.get_anonymous("/openapi.json").await.json().await.unwrap();
    let mut with_body = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation["requestBody"].is_object() {
                with_body += 1;
                for status in ["400", "413", "415", "422"] {
                    assert!(operation["responses"][status].is_object(), "{method} {path}: no {status}");
                }
            }
        }
    }
    assert_eq!(with_body, 6, "POST runs, events, sessions, documents, search and PATCH sessions");
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in
        [("CreateRunRequest", "input"), ("RunResponse", "input"), ("RunResponse", "output")]
    {
        let property = &schemas[schema]["properties"][field];
        assert!(
            property.get("type").is_none() || property["type"].is_array(),
            "{schema}.{field}: {property}"
        );
    }
}
