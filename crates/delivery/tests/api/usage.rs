//! `GET /v1/usage`: sums computed by the store, for the caller's tenant only.

use chrono::{TimeZone as _, Utc};
use sba_domain::Role;
use sba_domain::events::{EventData, EventKind, RunEvent};
use sba_infrastructure::internal_store::{InternalStore, PoolOptions};
use serde_json::{Value, json};

use crate::helpers::{Store, TestApp, new_tenant, spawn_app};

crate::on_both_stores!(
    usage_is_summed_per_group_for_the_callers_tenant_only,
    bad_usage_queries_are_400,
    usage_ranges_over_366_days_or_outside_years_1_to_9999_are_400_naming_the_cap,
);

/// Reports usage on a run through the ledger, as the event persister will.
async fn report(app: &TestApp, run: &Value, model: &str, tokens: u64, day: u32) {
    let store = InternalStore::connect(
        &app.settings.store.location,
        PoolOptions { max_connections: 1, connect_timeout: std::time::Duration::from_secs(5) },
    )
    .await
    .unwrap();
    let run_id = run["id"].as_str().unwrap().parse().unwrap();
    let tenant = run["tenant_id"].as_str().unwrap().parse().unwrap();
    let last = store.event_log().list_after(tenant, run_id, 0, 100).await.unwrap().items.len() as u64;
    let event = RunEvent {
        run_id,
        tenant_id: tenant,
        seq: last + 1,
        producer_id: Some(format!("u{last}")),
        data: EventData::parse(
            EventKind::UsageReported,
            json!({"model": model, "input_tokens": tokens, "output_tokens": 1, "cost_micros": tokens * 10}),
        )
        .unwrap(),
        created_at: Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).unwrap(),
    };
    let outcome = store.run_ledger().apply_events(tenant, run_id, vec![event]).await.unwrap();
    assert_eq!(outcome.skipped, [], "the usage is recorded");
    store.close().await;
}

async fn create(app: &TestApp, token: &str, agent: &str) -> Value {
    app.post_json("/v1/runs", token, &json!({"agent": agent})).await.json().await.unwrap()
}

async fn usage_is_summed_per_group_for_the_callers_tenant_only(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Admin);
    let a = create(&app, &token, "planner").await;
    let b = create(&app, &token, "writer").await;
    report(&app, &a, "gpt-x", 100, 1).await;
    report(&app, &a, "gpt-y", 10, 2).await;
    report(&app, &b, "gpt-x", 1000, 2).await;
    let stranger = app.token(new_tenant(), "mallory", Role::Admin);
    let foreign = create(&app, &stranger, "planner").await;
    report(&app, &foreign, "gpt-x", 7, 1).await;

    let get = |group: &str| {
        let (app, token) = (&app, &token);
        let path = format!("/v1/usage?from=2026-11-01&to=2026-11-30&group_by={group}");
        async move { app.get(&path, token).await.json::<Value>().await.unwrap() }
    };
    let by_model = get("model").await;
    assert_eq!(by_model["group_by"], "model");
    assert_eq!(by_model["from"], "2026-11-01T00:00:00Z");
    assert_eq!(by_model["to"], "2026-12-01T00:00:00Z");
    assert_eq!(
        by_model["data"],
        json!([
            {"key": "gpt-x", "input_tokens": 1100, "output_tokens": 2, "cost_micros": 11000, "runs": 2},
            {"key": "gpt-y", "input_tokens": 10, "output_tokens": 1, "cost_micros": 100, "runs": 1},
        ])
    );
    let by_day = get("day").await;
    assert_eq!(
        by_day["data"],
        json!([
            {"key": "2026-11-01", "input_tokens": 100, "output_tokens": 1, "cost_micros": 1000, "runs": 1},
            {"key": "2026-11-02", "input_tokens": 1010, "output_tokens": 2, "cost_micros": 10100, "runs": 2},
        ])
    );
    let by_agent = get("agent").await;
    let keys: Vec<&str> =
        by_agent["data"].as_array().unwrap().iter().map(|b| b["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["planner", "writer"]);
    assert_eq!(by_agent["data"][0]["input_tokens"], 110, "the other tenant's planner usage is not counted");
}

async fn bad_usage_queries_are_400(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    for query in ["group_by=week", "from=yesterday", "from=2026-11-02&to=2026-11-01T00:00:00Z"] {
        let response = app.get(&format!("/v1/usage?{query}"), &token).await;
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], "invalid_request", "{query}");
    }
}

async fn usage_ranges_over_366_days_or_outside_years_1_to_9999_are_400_naming_the_cap(store: Store) {
    let app = spawn_app(store).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let too_long = app.get("/v1/usage?from=2025-01-01&to=2026-01-02", &token).await;
    assert_eq!(too_long.status(), 400);
    let body = too_long.json::<Value>().await.unwrap();
    assert_eq!(body["code"], "invalid_request");
    assert!(body["detail"].as_str().unwrap().contains("366 days"), "{body}");
    for query in [
        "from=0000-06-01&to=0000-06-02",
        "from=0000-12-31T00:00:00Z&to=0001-01-01T00:00:00Z",
        "from=9999-12-31&to=9999-12-31",
        "to=0000-01-15",
    ] {
        let response = app.get(&format!("/v1/usage?{query}"), &token).await;
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], "invalid_request", "{query}");
    }
    for query in
        ["from=2025-01-01&to=2026-01-01", "from=2024-01-01&to=2024-12-31", "from=0001-01-01&to=0001-01-02"]
    {
        assert_eq!(app.get(&format!("/v1/usage?{query}"), &token).await.status(), 200, "{query}");
    }
}
