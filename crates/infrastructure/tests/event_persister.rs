#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! `EventPersister` end to end: events appended through `FredEventSequencer` (test Redis,
//! `SBA_TEST_REDIS_URL`), read with `FredEventQueue` and stored through the sea-orm ledger
//! in a fresh PostgreSQL database (`SBA_TEST_DATABASE_URL`). The partition queues are shared
//! with other tests: this test reads them with consumer groups of its own, created at the
//! queues' ends; other tests' entries name runs its database does not have, so they stay
//! pending in its groups.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fred::clients::Client;
use fred::interfaces::{ClientLike as _, LuaInterface as _};
use fred::types::Builder;
use fred::types::config::Config;
use sba_application::events::{DEFAULT_MAX_ATTEMPTS, EventPersister};
use sba_application::ports::{AppendOutcome, AppendRequest, EventSequencer, RunLedger, SeedOutcome};
use sba_domain::events::{EventData, EventKind, IncomingEvent, ProducerId};
use sba_domain::{AgentRun, RunStatus};
use sba_infrastructure::internal_store::InternalStore;
use sba_infrastructure::internal_store::test_support::{creation_audit, fresh_postgres_store, new_run};
use sba_infrastructure::redis::events::keys::queue_key;
use sba_infrastructure::redis::test_support::redis_url;
use sba_infrastructure::redis::{
    FredEventQueue, FredEventQueueSettings, FredEventSequencer, FredEventSequencerSettings,
};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

const PARTITIONS: u16 = 16;

async fn admin() -> Client {
    let admin = Builder::from_config(Config::from_url(&redis_url()).unwrap()).build().unwrap();
    admin.init().await.unwrap();
    admin
}

/// A consumer group of the test's own, created at the end of every partition queue.
async fn new_group(admin: &Client) -> String {
    let group = format!("test-{}", Uuid::now_v7());
    for p in 0..PARTITIONS {
        let _: String = admin
            .eval(
                "return redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM')['ok']",
                vec![queue_key(p)],
                vec![group.clone()],
            )
            .await
            .unwrap();
    }
    group
}

async fn drop_group(admin: &Client, group: &str) {
    for p in 0..PARTITIONS {
        let _: i64 = admin
            .eval("return redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])", vec![queue_key(p)], vec![group])
            .await
            .unwrap();
    }
}

async fn consumer(group: &str) -> FredEventQueue {
    let settings = FredEventQueueSettings {
        partitions: PARTITIONS,
        max_partitions: PARTITIONS,
        consumer: "persister".to_owned(),
        group: group.to_owned(),
        lease_ttl: Duration::from_secs(10),
        claim_idle: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
    };
    FredEventQueue::connect(&SecretString::from(redis_url()), settings)
        .await
        .expect("connecting to the test Redis")
}

async fn sequencer() -> FredEventSequencer {
    let settings = FredEventSequencerSettings {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..FredEventSequencerSettings::default()
    };
    FredEventSequencer::connect(&SecretString::from(redis_url()), settings)
        .await
        .expect("connecting to the test Redis")
}

/// Appends one batch (one queue entry) of `(producer id, kind, data)`.
async fn append(
    sequencer: &FredEventSequencer,
    run: &AgentRun,
    events: &[(&str, EventKind, serde_json::Value)],
) {
    let events = events
        .iter()
        .map(|(id, kind, data)| IncomingEvent {
            producer_id: ProducerId::parse(id).unwrap(),
            data: EventData::parse(*kind, data.clone()).unwrap(),
        })
        .collect();
    let request = AppendRequest {
        tenant: run.tenant_id,
        run: run.id,
        events,
        created_at: Utc::now(),
        status_change: None,
    };
    let outcome = sequencer.append(request).await.unwrap();
    assert!(matches!(outcome, AppendOutcome::Appended { .. }), "{outcome:?}");
}

async fn stored(store: &InternalStore, run: &AgentRun) -> Vec<(u64, Option<String>)> {
    let page = store.event_log().list_after(run.tenant_id, run.id, 0, 1000).await.unwrap();
    page.items.iter().map(|e| (e.seq, e.producer_id.clone())).collect()
}

#[tokio::test]
async fn queued_events_are_stored_once_even_when_delivered_again() {
    let (store, _) = fresh_postgres_store().await;
    let admin = admin().await;
    let sequencer = sequencer().await;
    let (first_group, second_group) = (new_group(&admin).await, new_group(&admin).await);
    let ledger: Arc<dyn RunLedger> = store.run_ledger();
    let first =
        EventPersister::new(Arc::new(consumer(&first_group).await), ledger.clone(), DEFAULT_MAX_ATTEMPTS);
    // A second group delivers every entry again, as a crash between commit and ack would.
    let again = EventPersister::new(Arc::new(consumer(&second_group).await), ledger, DEFAULT_MAX_ATTEMPTS);

    let run = new_run();
    store.run_ledger().create_run(&run, &creation_audit(&run)).await.unwrap();
    assert_eq!(sequencer.seed(run.id, 1, RunStatus::Queued).await.unwrap(), SeedOutcome::Seeded { seq: 1 });
    append(
        &sequencer,
        &run,
        &[
            ("e1", EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
            ("e2", EventKind::StepDelta, json!({"step_id": "s1", "text": "hello"})),
        ],
    )
    .await;
    append(&sequencer, &run, &[("e3", EventKind::StepCompleted, json!({"step_id": "s1"}))]).await;
    let expected: Vec<(u64, Option<String>)> =
        vec![(1, None), (2, Some("e1".into())), (3, Some("e2".into())), (4, Some("e3".into()))];

    let report = first.persist_once(10_000).await.unwrap();
    assert_eq!(report.events_applied, 3, "{report:?}");
    assert_eq!(report.duplicates_skipped, 0, "{report:?}");
    assert_eq!(stored(&store, &run).await, expected);

    let report = first.persist_once(10_000).await.unwrap();
    assert_eq!(
        (report.events_applied, report.dead_letters),
        (0, 0),
        "acknowledged entries come no more: {report:?}"
    );

    let report = again.persist_once(10_000).await.unwrap();
    assert_eq!(
        (report.events_applied, report.duplicates_skipped),
        (0, 3),
        "a redelivery stores nothing: {report:?}"
    );
    assert_eq!(stored(&store, &run).await, expected);

    drop_group(&admin, &first_group).await;
    drop_group(&admin, &second_group).await;
}

#[tokio::test]
async fn accepted_events_that_contradict_the_run_are_stored_skipped_and_acknowledged() {
    let (store, _) = fresh_postgres_store().await;
    let admin = admin().await;
    let sequencer = sequencer().await;
    let group = new_group(&admin).await;
    let persister =
        EventPersister::new(Arc::new(consumer(&group).await), store.run_ledger(), DEFAULT_MAX_ATTEMPTS);

    let run = new_run();
    store.run_ledger().create_run(&run, &creation_audit(&run)).await.unwrap();
    assert_eq!(sequencer.seed(run.id, 1, RunStatus::Queued).await.unwrap(), SeedOutcome::Seeded { seq: 1 });
    append(
        &sequencer,
        &run,
        &[
            ("e1", EventKind::StepDelta, json!({"step_id": "nope", "text": "early"})),
            ("e2", EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
            ("e3", EventKind::StepCompleted, json!({"step_id": "s1"})),
            ("e4", EventKind::StepCompleted, json!({"step_id": "s1"})),
        ],
    )
    .await;

    let report = persister.persist_once(10_000).await.unwrap();
    // Other tests' entries in the shared queues name runs this database does not have: they
    // may count in `runs_failed`, never in what is asserted here.
    assert_eq!((report.events_applied, report.skipped, report.dead_letters), (4, 2, 0), "{report:?}");
    assert_eq!(
        stored(&store, &run).await,
        [
            (1, None),
            (2, Some("e1".into())),
            (3, Some("e2".into())),
            (4, Some("e3".into())),
            (5, Some("e4".into()))
        ]
    );
    let stored_run = store.run_repository().get(run.tenant_id, run.id).await.unwrap().unwrap();
    assert_eq!(stored_run.status(), RunStatus::InProgress, "the good events applied");

    let report = persister.persist_once(10_000).await.unwrap();
    assert_eq!(
        (report.events_applied, report.skipped),
        (0, 0),
        "the entry was acknowledged, not left to be retried: {report:?}"
    );

    drop_group(&admin, &group).await;
}
