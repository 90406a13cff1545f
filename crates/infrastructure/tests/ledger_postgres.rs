//! `RunLedger` properties that need PostgreSQL's concurrency and triggers: concurrent
//! overlapping batches, and a failure injected in the middle of a transaction.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails by panicking")]

use std::sync::Arc;

use chrono::{SubsecRound as _, Utc};
use sba_application::pagination::PageRequest;
use sba_application::ports::{LedgerError, RunLedger};
use sba_domain::events::{EventData, EventKind, RunEvent};
use sba_domain::steps::StepStatus;
use sba_domain::{AgentRun, RunStatus};
use sba_infrastructure::internal_store::InternalStore;
use sba_infrastructure::internal_store::test_support::{
    creation_audit, execute_sql, fresh_postgres_store, new_run,
};
use secrecy::ExposeSecret as _;
use serde_json::json;

fn ev(run: &AgentRun, seq: u64, kind: EventKind, data: serde_json::Value) -> RunEvent {
    RunEvent {
        run_id: run.id,
        tenant_id: run.tenant_id,
        seq,
        producer_id: Some(format!("evt-{seq}")),
        data: EventData::parse(kind, data).unwrap(),
        created_at: Utc::now().trunc_subsecs(6),
    }
}

/// seq 2..last: one step per pair of events (created, completed), then `run.completed` at
/// `last` (even, so every step is completed).
fn stream(run: &AgentRun, last: u64) -> Vec<RunEvent> {
    (2..last)
        .map(|seq| {
            let step = format!("s{}", seq / 2);
            if seq % 2 == 0 {
                ev(run, seq, EventKind::StepCreated, json!({"step_id": step, "type": "message_creation"}))
            } else {
                ev(run, seq, EventKind::StepCompleted, json!({"step_id": step}))
            }
        })
        .chain([ev(run, last, EventKind::RunCompleted, json!({"output": "ok"}))])
        .collect()
}

async fn seqs(store: &InternalStore, run: &AgentRun) -> Vec<u64> {
    let page = store.event_log().list_after(run.tenant_id, run.id, 0, 1000).await.unwrap();
    page.items.iter().map(|e| e.seq).collect()
}

#[tokio::test]
async fn concurrent_overlapping_batches_store_every_event_once_and_lose_no_update() {
    let (store, _) = fresh_postgres_store().await;
    for _ in 0..10 {
        let run = new_run();
        store.run_ledger().create_run(&run, &creation_audit(&run)).await.unwrap();
        let all = stream(&run, 62);
        let first: Vec<_> = all[..30].to_vec();
        let ledger: Arc<dyn RunLedger> = store.run_ledger();
        let (a, b) = tokio::join!(
            tokio::spawn({
                let ledger = ledger.clone();
                async move { ledger.apply_events(run.tenant_id, run.id, first).await }
            }),
            tokio::spawn({
                let ledger = ledger.clone();
                async move { ledger.apply_events(run.tenant_id, run.id, all).await }
            }),
        );
        let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
        assert_eq!(a.applied + b.applied, 61, "every event applied exactly once: {a:?} {b:?}");
        assert_eq!(a.duplicates + b.duplicates, 30, "the overlap was skipped once: {a:?} {b:?}");
        assert!(
            a.skipped.is_empty() && b.skipped.is_empty(),
            "each batch saw the steps the other committed, so no event was taken as contradicting: {a:?} {b:?}"
        );

        assert_eq!(seqs(&store, &run).await, (1..=62).collect::<Vec<_>>());
        let steps =
            store.step_repository().list(run.tenant_id, run.id, PageRequest::first(100)).await.unwrap();
        assert_eq!(steps.items.len(), 30);
        assert!(steps.items.iter().all(|s| s.status == StepStatus::Completed), "no step update was lost");
        let stored = store.run_repository().get(run.tenant_id, run.id).await.unwrap().unwrap();
        assert_eq!(stored.status(), RunStatus::Completed);
    }
}

#[tokio::test]
async fn a_failure_in_the_middle_of_a_transaction_leaves_no_partial_rows() {
    let (store, location) = fresh_postgres_store().await;
    let sba_infrastructure::internal_store::StoreLocation::Postgres(url) = location else { unreachable!() };
    // Fault injection: the tool_calls insert fails after the events and the step of the
    // same batch have been written inside the transaction.
    execute_sql(
        url.expose_secret(),
        "CREATE FUNCTION explode() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.name = 'explode' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER explode BEFORE INSERT ON tool_calls FOR EACH ROW EXECUTE FUNCTION explode();",
    )
    .await;
    let run = new_run();
    store.run_ledger().create_run(&run, &creation_audit(&run)).await.unwrap();
    let batch = vec![
        ev(&run, 2, EventKind::StepCreated, json!({"step_id": "s1", "type": "tool_calls"})),
        ev(
            &run,
            3,
            EventKind::UsageReported,
            json!({"model": "m", "input_tokens": 1, "output_tokens": 1, "cost_micros": 1}),
        ),
        ev(
            &run,
            4,
            EventKind::ToolCallStarted,
            json!({"tool_call_id": "t1", "step_id": "s1", "name": "explode"}),
        ),
    ];
    let err = store.run_ledger().apply_events(run.tenant_id, run.id, batch).await.unwrap_err();
    assert!(matches!(err, LedgerError::Unexpected(_)), "{err:?}");

    assert_eq!(seqs(&store, &run).await, [1], "no event of the failed batch remains");
    let steps = store.step_repository().list(run.tenant_id, run.id, PageRequest::first(10)).await.unwrap();
    assert!(steps.items.is_empty(), "no step of the failed batch remains");
    let stored = store.run_repository().get(run.tenant_id, run.id).await.unwrap().unwrap();
    assert_eq!(stored.status(), RunStatus::Queued, "the implicit start was rolled back");
    execute_sql(
        url.expose_secret(),
        &format!("DO $$ BEGIN IF EXISTS (SELECT 1 FROM usage_metrics WHERE run_id = '{}') THEN RAISE EXCEPTION 'usage row left behind'; END IF; END $$;", run.id),
    )
    .await;

    // The same batch without the fault applies completely.
    let retry = vec![
        ev(&run, 2, EventKind::StepCreated, json!({"step_id": "s1", "type": "tool_calls"})),
        ev(
            &run,
            3,
            EventKind::ToolCallStarted,
            json!({"tool_call_id": "t1", "step_id": "s1", "name": "search"}),
        ),
    ];
    let outcome = store.run_ledger().apply_events(run.tenant_id, run.id, retry).await.unwrap();
    assert_eq!((outcome.applied, outcome.run_status), (2, RunStatus::InProgress));
    assert_eq!(outcome.skipped, [], "the rolled-back step left nothing the retry contradicts");
}
