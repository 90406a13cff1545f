//! `GET /v1/system/health`: the recorded health history, for platform administrators only.

use sba_delivery::startup::Worker;
use sba_domain::Role;
use serde_json::Value;

use crate::helpers::{Store, new_tenant, spawn_app_with};
use crate::on_both_stores;

on_both_stores!(system_health_is_for_platform_admins_and_lists_recorded_checks_newest_first);

async fn system_health_is_for_platform_admins_and_lists_recorded_checks_newest_first(store: Store) {
    let platform = new_tenant();
    let app = spawn_app_with(store, &[("SBA_AUTH__PLATFORM_TENANT_ID", &platform.to_string())]).await;
    let worker = Worker::build(&app.settings).await.unwrap();
    worker.record_health().await.unwrap();
    worker.record_health().await.unwrap();

    let get = |token: String| {
        let app = &app;
        async move { app.get("/v1/system/health?limit=1", &token).await }
    };
    for (tenant, role) in
        [(new_tenant(), Role::Admin), (platform, Role::Authenticated), (platform, Role::Agent)]
    {
        let refused = get(app.token(tenant, "someone", role)).await;
        assert_eq!(refused.status(), 403, "{role}");
        assert_eq!(refused.json::<Value>().await.unwrap()["code"], "forbidden");
    }

    for role in [Role::Admin, Role::Service] {
        let response = get(app.token(platform, "ops", role)).await;
        assert_eq!(response.status(), 200, "{role}");
        let body: Value = response.json().await.unwrap();
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0]["component"], "database");
        assert_eq!(data[0]["status"], "up");
        for field in ["id", "checked_at"] {
            assert!(data[0][field].is_string(), "{field}");
        }
        let cursor = body["next_cursor"].as_str().expect("a second page");
        let next: Value = app
            .get(&format!("/v1/system/health?limit=1&cursor={cursor}"), &app.token(platform, "ops", role))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(next["data"].as_array().unwrap().len(), 1);
        assert_ne!(next["data"][0]["id"], data[0]["id"]);
    }
}
