//! `sba worker` against the same store as a running server: the run-expiry sweep, the
//! health history, the event persister (test Redis), the dead-letters command, and the worker
//! `sba serve` runs in process.
//!
//! Tests that read the event queues do so in a consumer group of their own, created at the
//! queues' ends (the queues and the `persisters` group are shared with every other test),
//! and pick their entries out by run id.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use chrono::Utc;
use sba_application::ports::{AppendOutcome, AppendRequest, EventQueue as _, EventSequencer};
use sba_delivery::cli::{DeadLetterArgs, dead_letters};
use sba_delivery::startup::{Application, Worker, event_queue, event_sequencer};
use sba_domain::events::{EventData, EventKind, IncomingEvent, ProducerId};
use sba_domain::{Role, RunId, RunStatus, TenantId};
use sba_infrastructure::redis::test_support::{admin_client, drop_queue_group, new_queue_group, redis_url};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::helpers::{Store, TestApp, new_tenant, spawn_app_with};

crate::on_both_stores!(
    sweep_expires_overdue_runs_and_leaves_ended_ones_alone,
    worker_records_the_health_history
);

/// How long a test waits for the worker before it fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// Appends one batch (one queue entry) of `(producer id, kind, data)` to `run`.
async fn append(
    sequencer: &dyn EventSequencer,
    tenant: TenantId,
    run: RunId,
    events: &[(&str, EventKind, Value)],
) {
    let events = events
        .iter()
        .map(|(id, kind, data)| IncomingEvent {
            producer_id: ProducerId::parse(id).unwrap(),
            data: EventData::parse(*kind, data.clone()).unwrap(),
        })
        .collect();
    let request = AppendRequest { tenant, run, events, created_at: Utc::now(), status_change: None };
    let outcome = sequencer.append(request).await.unwrap();
    assert!(matches!(outcome, AppendOutcome::Appended { .. }), "{outcome:?}");
}

/// The kinds of the stored events of run `id`, in seq order, once `wanted` of them are
/// stored (or what is stored when patience runs out).
async fn stored_kinds(app: &TestApp, token: &str, id: &str, wanted: usize) -> Vec<(u64, String)> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let body: Value = app.get(&format!("/v1/runs/{id}/events"), token).await.json().await.unwrap();
        let kinds: Vec<(u64, String)> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["seq"].as_u64().unwrap(), e["kind"].as_str().unwrap().to_owned()))
            .collect();
        if kinds.len() >= wanted || Instant::now() > deadline {
            return kinds;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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

#[tokio::test]
async fn the_worker_persists_queued_events_until_stopped_and_then_releases_its_partitions() {
    let redis = redis_url();
    // A lease outlives the test unless the worker releases it.
    let app = spawn_app_with(
        Store::Postgres,
        &[("REDIS_URL", &redis), ("SBA_WORKER__POLL_INTERVAL", "10ms"), ("SBA_WORKER__LEASE_TTL", "10m")],
    )
    .await;
    let partitions = app.settings.events.partitions;
    let admin = admin_client().await;
    let group = new_queue_group(&admin, partitions).await;
    let tenant = new_tenant();
    let token = app.token(tenant, "alice", Role::Authenticated);
    let created: Value =
        app.post_json("/v1/runs", &token, &json!({"agent": "bot"})).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let run: RunId = id.parse().unwrap();
    let sequencer = event_sequencer(&app.settings).await.unwrap().expect("REDIS_URL is set");
    // `run.created` is seq 1 in the ledger; the counter continues from it.
    sequencer.seed(run, 1, RunStatus::Queued).await.unwrap();
    append(
        sequencer.as_ref(),
        tenant,
        run,
        &[
            ("e1", EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
            ("e2", EventKind::StepDelta, json!({"step_id": "s1", "text": "hello"})),
        ],
    )
    .await;
    append(sequencer.as_ref(), tenant, run, &[("e3", EventKind::StepCompleted, json!({"step_id": "s1"}))])
        .await;

    let worker = Worker::build_in_group(&app.settings, &group).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let expected: Vec<(u64, String)> =
        [(1, "run.created"), (2, "step.created"), (3, "step.delta"), (4, "step.completed")]
            .into_iter()
            .map(|(seq, kind)| (seq, kind.to_owned()))
            .collect();
    assert_eq!(stored_kinds(&app, &token, id, expected.len()).await, expected);

    stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, running).await.expect("the worker stops when asked").unwrap();
    // Released at shutdown: another consumer of the group takes every partition at once,
    // 10 minutes before the leases would lapse.
    let next = event_queue(&app.settings, &group).await.unwrap().unwrap();
    next.next_batch(0).await.unwrap();
    assert_eq!(next.leased_partitions().len(), usize::from(partitions));
    next.release().await.unwrap();
    drop_queue_group(&admin, &group, partitions).await;
}

#[tokio::test]
async fn dead_letters_are_listed_without_their_events_and_replayed_by_run() {
    let app = spawn_app_with(Store::Sqlite, &[("REDIS_URL", &redis_url())]).await;
    let partitions = app.settings.events.partitions;
    let admin = admin_client().await;
    let group = new_queue_group(&admin, partitions).await;
    let queue = event_queue(&app.settings, &group).await.unwrap().unwrap();
    let sequencer = event_sequencer(&app.settings).await.unwrap().unwrap();
    let (tenant, run) = (new_tenant(), RunId::from_uuid(Uuid::now_v7()));
    sequencer.seed(run, 1, RunStatus::Queued).await.unwrap();
    append(
        sequencer.as_ref(),
        tenant,
        run,
        &[
            ("e1", EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
            ("e2", EventKind::StepDelta, json!({"step_id": "s1", "text": "a secret of the agent"})),
        ],
    )
    .await;
    let entries: Vec<_> =
        queue.next_batch(10_000).await.unwrap().into_iter().filter(|e| e.run == run).collect();
    assert_eq!(entries.len(), 1);
    queue.dead_letter(&entries[0], "run not found").await.unwrap();
    let list = DeadLetterArgs { limit: 100, replay: false, run: None };
    let replay = |run| DeadLetterArgs { limit: 100, replay: true, run: Some(run) };

    let listed = dead_letters(queue.as_ref(), &list).await.unwrap();
    let line = listed.lines().find(|l| l.contains(&run.to_string())).unwrap_or_else(|| panic!("{listed}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        columns,
        [
            &sba_domain::events::partition(run, partitions).to_string(),
            entries[0].entry_id.as_str(),
            &tenant.to_string(),
            &run.to_string(),
            "2-3",
            "1",
            "run",
            "not",
            "found"
        ]
    );
    assert!(listed.starts_with("partition"), "{listed}");
    assert!(listed.contains("1 dead letter(s)"), "{listed}");
    assert!(!listed.contains("secret") && !listed.contains("step.delta"), "no event data: {listed}");

    let other = RunId::from_uuid(Uuid::now_v7());
    assert_eq!(
        dead_letters(queue.as_ref(), &replay(other)).await.unwrap(),
        format!("replayed 0 dead letter(s) of run {other}\n")
    );
    assert_eq!(
        dead_letters(queue.as_ref(), &replay(run)).await.unwrap(),
        format!("replayed 1 dead letter(s) of run {run}\n")
    );
    assert_eq!(dead_letters(queue.as_ref(), &list).await.unwrap(), "no dead letters\n");
    let again: Vec<_> =
        queue.next_batch(10_000).await.unwrap().into_iter().filter(|e| e.run == run).collect();
    assert_eq!(again.len(), 1, "back on its queue");
    assert_eq!(again[0].events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    queue.ack(&again).await.unwrap();
    queue.release().await.unwrap();
    drop_queue_group(&admin, &group, partitions).await;
}

#[tokio::test]
async fn serve_runs_the_worker_in_process_and_stops_it_with_the_server() {
    let template = spawn_app_with(
        Store::Sqlite,
        &[("SBA_WORKER__MAX_RUN_AGE_SECS", "1"), ("SBA_WORKER__SWEEP_INTERVAL_SECS", "1")],
    )
    .await;
    let mut settings = template.settings.clone();
    settings.worker.in_process = true;
    let (shutdown, stopped) = oneshot::channel::<()>();
    let app =
        Application::build_with_listener(settings, TcpListener::bind("127.0.0.1:0").unwrap(), async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    let serving = tokio::spawn(app.run_until_stopped());
    // The template app (same store) runs no worker: only the in-process one can expire it.
    let token = template.token(new_tenant(), "alice", Role::Authenticated);
    let created: Value =
        template.post_json("/v1/runs", &token, &json!({"agent": "bot"})).await.json().await.unwrap();
    let path = format!("/v1/runs/{}", created["id"].as_str().unwrap());
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        let run: Value = template.get(&path, &token).await.json().await.unwrap();
        if run["status"] == "expired" || Instant::now() > deadline {
            break run["status"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, "expired");

    shutdown.send(()).unwrap();
    tokio::time::timeout(PATIENCE, serving).await.expect("the server and its worker stop").unwrap().unwrap();
}
