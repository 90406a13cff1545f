//! `sba worker`'s run-expiry sweep, against the same store as a running server.

use std::time::Duration;

use sba_delivery::startup::Worker;
use sba_domain::Role;
use serde_json::{Value, json};

use crate::helpers::{Store, new_tenant, spawn_app_with};

crate::on_both_stores!(
    sweep_expires_overdue_runs_and_leaves_ended_ones_alone,
    worker_records_the_health_history
);

async fn sweep_expires_overdue_runs_and_leaves_ended_ones_alone(store: Store) {
    let app = spawn_app_with(store, &[("SBA_WORKER__MAX_RUN_AGE_SECS", "1")]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let run: Value =
            app.post_json("/v1/runs", &token, &json!({"agent": "bot"})).await.json().await.unwrap();
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    let cancel = format!("/v1/runs/{}/cancel", ids[1]);
    assert_eq!(app.post(&cancel, &token).await.status(), 200);

    let worker = Worker::build(&app.settings).await.unwrap();
    assert_eq!(worker.sweep_once().await.unwrap(), 0, "nothing is overdue yet");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(worker.sweep_once().await.unwrap(), 1, "only the queued run is overdue");
    assert_eq!(worker.sweep_once().await.unwrap(), 0, "an expired run is not expired twice");

    let status = |id: String| {
        let (app, token) = (&app, &token);
        async move { app.get(&format!("/v1/runs/{id}"), token).await.json::<Value>().await.unwrap() }
    };
    let expired = status(ids[0].clone()).await;
    assert_eq!(expired["status"], "expired");
    assert!(expired["completed_at"].is_string());
    assert_eq!(status(ids[1].clone()).await["status"], "cancelled");
}

async fn worker_records_the_health_history(store: Store) {
    let app = spawn_app_with(store, &[]).await;
    let worker = Worker::build(&app.settings).await.unwrap();
    let first = worker.record_health().await.unwrap();
    let second = worker.record_health().await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].component, "database");
    assert!(first[0].up && second[0].up);
    assert!(second[0].checked_at >= first[0].checked_at);
}
