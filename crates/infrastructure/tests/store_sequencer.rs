//! `StoreEventSequencer` (the event sequencer without Redis) against real databases: the
//! private PostgreSQL started by `scripts/test.sh`, and SQLite files. Each test gets its own
//! fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails by panicking")]

use std::sync::Arc;

use chrono::{DateTime, SubsecRound as _, Utc};
use sba_application::pagination::PageRequest;
use sba_application::ports::{
    AppendOutcome, AppendRequest, EventSequencer, RunEnding, SeedOutcome, SequencerError,
    ServerAppendOutcome, ServerEvent, StatusChange,
};
use sba_domain::events::{EventData, EventKind, IncomingEvent, ProducerId, RunEvent};
use sba_domain::steps::StepStatus;
use sba_domain::{AgentRun, RunId, RunStatus, TenantId};
use sba_infrastructure::internal_store::InternalStore;
use sba_infrastructure::internal_store::test_support::{creation_audit, new_run};
use serde_json::json;
use uuid::Uuid;

sba_infrastructure::on_both_internal_stores!(
    seqs_follow_run_created_gapless_in_batch_order_and_are_stored_before_the_answer,
    duplicates_get_their_original_seq_and_are_stored_once,
    the_retry_of_the_batch_that_ended_the_run_is_answered_with_its_seqs_not_terminal,
    a_cancel_takes_the_next_seq_ends_open_steps_and_makes_later_appends_terminal,
    an_expiry_writes_nothing_and_the_run_is_terminal_once_the_ledger_ends_it,
    a_wrong_expected_status_is_a_conflict_that_stores_nothing,
    run_created_is_a_conflict_for_an_existing_run,
    an_unknown_run_or_another_tenants_run_is_unexpected,
    seed_keeps_the_stored_maximum_and_the_history_beyond_the_database_is_empty,
    concurrent_appends_for_one_run_hand_out_unique_gapless_seqs,
);

/// A `step.created` whose step is named after its producer id: valid in any batch order.
fn event(id: &str) -> IncomingEvent {
    IncomingEvent {
        producer_id: ProducerId::parse(id).unwrap(),
        data: EventData::parse(EventKind::StepCreated, json!({"step_id": id, "type": "message_creation"}))
            .unwrap(),
    }
}

fn completed(id: &str) -> IncomingEvent {
    IncomingEvent {
        producer_id: ProducerId::parse(id).unwrap(),
        data: EventData::parse(EventKind::RunCompleted, json!({"output": "done"})).unwrap(),
    }
}

fn request(
    run: &AgentRun,
    events: Vec<IncomingEvent>,
    change: Option<(RunStatus, RunStatus)>,
) -> AppendRequest {
    AppendRequest {
        tenant: run.tenant_id,
        run: run.id,
        events,
        created_at: Utc::now().trunc_subsecs(6),
        status_change: change.map(|(expected, new)| StatusChange { expected, new }),
    }
}

fn batch(run: &AgentRun, ids: &[&str]) -> AppendRequest {
    request(run, ids.iter().map(|id| event(id)).collect(), None)
}

/// `(producer id, seq, duplicate)` of an appended batch, and the run's status.
fn appended(outcome: AppendOutcome) -> (Vec<(String, u64, bool)>, RunStatus) {
    let AppendOutcome::Appended { events, run_status } = outcome else { panic!("not appended: {outcome:?}") };
    (
        events.into_iter().map(|e| (e.producer_id.as_str().to_owned(), e.seq, e.duplicate)).collect(),
        run_status,
    )
}

fn triples(expected: &[(&str, u64, bool)]) -> Vec<(String, u64, bool)> {
    expected.iter().map(|&(id, seq, dup)| (id.to_owned(), seq, dup)).collect()
}

async fn created(store: &InternalStore) -> AgentRun {
    let run = new_run();
    store.run_ledger().create_run(&run, &creation_audit(&run)).await.unwrap();
    run
}

async fn stored_events(store: &InternalStore, run: &AgentRun) -> Vec<RunEvent> {
    store.event_log().list_after(run.tenant_id, run.id, 0, 1000).await.unwrap().items
}

async fn stored_seqs(store: &InternalStore, run: &AgentRun) -> Vec<u64> {
    stored_events(store, run).await.iter().map(|e| e.seq).collect()
}

async fn stored_status(store: &InternalStore, run: &AgentRun) -> RunStatus {
    store.run_repository().get(run.tenant_id, run.id).await.unwrap().unwrap().status()
}

async fn cancel(sequencer: &dyn EventSequencer, run: &AgentRun, at: DateTime<Utc>) -> ServerAppendOutcome {
    sequencer.append_server_event(run.tenant_id, run.id, ServerEvent::Cancelled, at).await.unwrap()
}

async fn seqs_follow_run_created_gapless_in_batch_order_and_are_stored_before_the_answer(
    store: InternalStore,
) {
    let (sequencer, run) = (store.event_sequencer(), created(&store).await);
    let first = batch(&run, &["a", "b", "c"]);
    let (sent, created_at) = (first.events.clone(), first.created_at);
    let (events, status) = appended(sequencer.append(first).await.unwrap());
    assert_eq!(events, triples(&[("a", 2, false), ("b", 3, false), ("c", 4, false)]));
    assert_eq!(status, RunStatus::InProgress, "step events start a queued run");

    let stored = stored_events(&store, &run).await;
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for (stored, sent) in stored[1..].iter().zip(&sent) {
        assert_eq!(stored.producer_id.as_deref(), Some(sent.producer_id.as_str()));
        assert_eq!(stored.data, sent.data);
        assert_eq!((stored.run_id, stored.tenant_id, stored.created_at), (run.id, run.tenant_id, created_at));
    }
    let steps = store.step_repository().list(run.tenant_id, run.id, PageRequest::first(10)).await.unwrap();
    assert_eq!(steps.items.len(), 3, "the batch's effects are stored with it");
    assert_eq!(stored_status(&store, &run).await, RunStatus::InProgress);

    let (events, _) = appended(sequencer.append(batch(&run, &["d", "e"])).await.unwrap());
    assert_eq!(events, triples(&[("d", 5, false), ("e", 6, false)]));
    assert_eq!(stored_seqs(&store, &run).await, [1, 2, 3, 4, 5, 6]);
    assert_eq!(sequencer.run_status(run.id).await.unwrap(), Some(RunStatus::InProgress));
}

async fn duplicates_get_their_original_seq_and_are_stored_once(store: InternalStore) {
    let (sequencer, run) = (store.event_sequencer(), created(&store).await);
    appended(sequencer.append(batch(&run, &["a", "b"])).await.unwrap());
    // Alone: a retried batch.
    let (events, _) = appended(sequencer.append(batch(&run, &["a"])).await.unwrap());
    assert_eq!(events, triples(&[("a", 2, true)]));
    // Mixed with new ids, and an id repeated inside the batch.
    let (events, _) = appended(sequencer.append(batch(&run, &["b", "c", "c", "a", "d"])).await.unwrap());
    assert_eq!(
        events,
        triples(&[("b", 3, true), ("c", 4, false), ("c", 4, true), ("a", 2, true), ("d", 5, false)])
    );
    let stored: Vec<_> =
        stored_events(&store, &run).await.into_iter().map(|e| (e.seq, e.producer_id)).collect();
    let expected: Vec<_> = [(1, None), (2, Some("a")), (3, Some("b")), (4, Some("c")), (5, Some("d"))]
        .map(|(seq, id)| (seq, id.map(str::to_owned)))
        .into();
    assert_eq!(stored, expected);
}

async fn the_retry_of_the_batch_that_ended_the_run_is_answered_with_its_seqs_not_terminal(
    store: InternalStore,
) {
    let (sequencer, run) = (store.event_sequencer(), created(&store).await);
    let start = batch(&run, &["start"]);
    appended(sequencer.append(start).await.unwrap());
    let finish = request(
        &run,
        vec![event("work"), completed("done")],
        Some((RunStatus::InProgress, RunStatus::Completed)),
    );
    let (events, status) = appended(sequencer.append(finish.clone()).await.unwrap());
    assert_eq!((events, status), (triples(&[("work", 3, false), ("done", 4, false)]), RunStatus::Completed));
    assert_eq!(stored_status(&store, &run).await, RunStatus::Completed);

    let later = sequencer.append(batch(&run, &["late"])).await.unwrap();
    assert_eq!(later, AppendOutcome::Terminal(RunStatus::Completed));
    assert_eq!(
        cancel(sequencer.as_ref(), &run, Utc::now()).await,
        ServerAppendOutcome::Terminal(RunStatus::Completed)
    );
    let expire =
        sequencer.append_server_event(run.tenant_id, run.id, ServerEvent::Expired, Utc::now()).await.unwrap();
    assert_eq!(expire, ServerAppendOutcome::Terminal(RunStatus::Completed));
    // The retry of the finishing batch is answered with its seqs.
    let (events, status) = appended(sequencer.append(finish).await.unwrap());
    assert_eq!((events, status), (triples(&[("work", 3, true), ("done", 4, true)]), RunStatus::Completed));
    assert_eq!(stored_seqs(&store, &run).await, [1, 2, 3, 4], "nothing stored after the end");
}

async fn a_cancel_takes_the_next_seq_ends_open_steps_and_makes_later_appends_terminal(store: InternalStore) {
    let (sequencer, run) = (store.event_sequencer(), created(&store).await);
    appended(sequencer.append(batch(&run, &["s1"])).await.unwrap());
    let at = Utc::now().trunc_subsecs(6);
    assert_eq!(
        cancel(sequencer.as_ref(), &run, at).await,
        ServerAppendOutcome::Appended { seq: 3, run_status: RunStatus::Cancelled }
    );
    let stored = stored_events(&store, &run).await;
    let last = stored.last().unwrap();
    assert_eq!(
        (last.seq, last.kind(), last.producer_id.as_deref(), last.created_at),
        (3, EventKind::RunCancelled, None, at)
    );
    let run_row = store.run_repository().get(run.tenant_id, run.id).await.unwrap().unwrap();
    assert_eq!((run_row.status(), run_row.cancelled_at), (RunStatus::Cancelled, Some(at)));
    let steps = store.step_repository().list(run.tenant_id, run.id, PageRequest::first(10)).await.unwrap();
    assert_eq!(steps.items[0].status, StepStatus::Cancelled, "open steps end with the run");

    let later = sequencer.append(batch(&run, &["b"])).await.unwrap();
    assert_eq!(later, AppendOutcome::Terminal(RunStatus::Cancelled));
    assert_eq!(
        cancel(sequencer.as_ref(), &run, Utc::now()).await,
        ServerAppendOutcome::Terminal(RunStatus::Cancelled)
    );
    assert_eq!(stored_seqs(&store, &run).await, [1, 2, 3]);
}

async fn an_expiry_writes_nothing_and_the_run_is_terminal_once_the_ledger_ends_it(store: InternalStore) {
    let (sequencer, run) = (store.event_sequencer(), created(&store).await);
    appended(sequencer.append(batch(&run, &["a"])).await.unwrap());
    assert_eq!(
        sequencer.append_server_event(run.tenant_id, run.id, ServerEvent::Expired, Utc::now()).await.unwrap(),
        ServerAppendOutcome::Appended { seq: 2, run_status: RunStatus::Expired }
    );
    assert_eq!(stored_seqs(&store, &run).await, [1, 2], "no event, no seq");
    assert_eq!(stored_status(&store, &run).await, RunStatus::InProgress, "the row is the ledger's to end");

    let audit = sba_domain::AuditEntry { action: "run.expire".into(), ..creation_audit(&run) };
    store.run_ledger().end_run(run.tenant_id, run.id, RunEnding::Expire, audit).await.unwrap();
    let later = sequencer.append(batch(&run, &["b"])).await.unwrap();
    assert_eq!(later, AppendOutcome::Terminal(RunStatus::Expired));
    assert_eq!(
        sequencer.append_server_event(run.tenant_id, run.id, ServerEvent::Expired, Utc::now()).await.unwrap(),
        ServerAppendOutcome::Terminal(RunStatus::Expired)
    );
    assert_eq!(sequencer.run_status(run.id).await.unwrap(), Some(RunStatus::Expired));
    assert_eq!(stored_seqs(&store, &run).await, [1, 2]);
}

async fn a_wrong_expected_status_is_a_conflict_that_stores_nothing(store: InternalStore) {
    let (sequencer, run) = (store.event_sequencer(), created(&store).await);
    let wrong =
        request(&run, vec![event("a"), completed("b")], Some((RunStatus::InProgress, RunStatus::Completed)));
    assert_eq!(sequencer.append(wrong).await.unwrap(), AppendOutcome::Conflict(RunStatus::Queued));
    assert_eq!(stored_seqs(&store, &run).await, [1]);
    assert_eq!(stored_status(&store, &run).await, RunStatus::Queued);
    let right = request(&run, vec![event("a")], Some((RunStatus::Queued, RunStatus::InProgress)));
    let (events, status) = appended(sequencer.append(right).await.unwrap());
    assert_eq!((events, status), (triples(&[("a", 2, false)]), RunStatus::InProgress), "ids not taken");
}

async fn run_created_is_a_conflict_for_an_existing_run(store: InternalStore) {
    let (sequencer, run) = (store.event_sequencer(), created(&store).await);
    assert_eq!(
        sequencer.append_server_event(run.tenant_id, run.id, ServerEvent::Created, Utc::now()).await.unwrap(),
        ServerAppendOutcome::Conflict(RunStatus::Queued)
    );
    assert_eq!(stored_seqs(&store, &run).await, [1]);
    let unknown = RunId::from_uuid(Uuid::now_v7());
    let err = sequencer.append_server_event(run.tenant_id, unknown, ServerEvent::Created, Utc::now()).await;
    assert!(matches!(err, Err(SequencerError::Unexpected(_))), "{err:?}");
}

async fn an_unknown_run_or_another_tenants_run_is_unexpected(store: InternalStore) {
    let (sequencer, run) = (store.event_sequencer(), created(&store).await);
    let mut stranger = run.clone();
    stranger.tenant_id = TenantId::from_uuid(Uuid::now_v7());
    let mut unknown = run.clone();
    unknown.id = RunId::from_uuid(Uuid::now_v7());
    for other in [&stranger, &unknown] {
        let err = sequencer.append(batch(other, &["a"])).await.unwrap_err();
        assert!(matches!(err, SequencerError::Unexpected(_)), "{err:?}");
        assert!(format!("{err:#}").contains("not in the internal store"), "{err:#}");
        let err = sequencer
            .append_server_event(other.tenant_id, other.id, ServerEvent::Cancelled, Utc::now())
            .await;
        assert!(matches!(err, Err(SequencerError::Unexpected(_))), "{err:?}");
    }
    assert_eq!(sequencer.run_status(unknown.id).await.unwrap(), None);
    assert_eq!(stored_seqs(&store, &run).await, [1]);
    assert_eq!(stored_status(&store, &run).await, RunStatus::Queued);
}

async fn seed_keeps_the_stored_maximum_and_the_history_beyond_the_database_is_empty(store: InternalStore) {
    let (sequencer, run) = (store.event_sequencer(), created(&store).await);
    appended(sequencer.append(batch(&run, &["a", "b"])).await.unwrap());
    assert_eq!(sequencer.seed(run.id, 1, RunStatus::Queued).await.unwrap(), SeedOutcome::Kept { seq: 3 });
    assert!(sequencer.history_after(run.tenant_id, run.id, 0, 100).await.unwrap().is_empty());
    let (events, _) = appended(sequencer.append(batch(&run, &["c"])).await.unwrap());
    assert_eq!(events, triples(&[("c", 4, false)]), "seeding changed nothing");
}

async fn concurrent_appends_for_one_run_hand_out_unique_gapless_seqs(store: InternalStore) {
    let run = created(&store).await;
    let sequencer: Arc<dyn EventSequencer> = store.event_sequencer();
    let tasks: Vec<_> = (0..10)
        .map(|task| {
            let (sequencer, run) = (Arc::clone(&sequencer), run.clone());
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for batch_no in 0..5 {
                    let names: Vec<String> = (0..3).map(|i| format!("t{task}-b{batch_no}-e{i}")).collect();
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let (events, _) = appended(sequencer.append(batch(&run, &names)).await.unwrap());
                    let batch_seqs: Vec<u64> = events.iter().map(|e| e.1).collect();
                    assert!(
                        batch_seqs.windows(2).all(|w| w[1] == w[0] + 1),
                        "a batch is consecutive: {batch_seqs:?}"
                    );
                    seqs.extend(batch_seqs);
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=151).collect::<Vec<u64>>());
    assert_eq!(stored_seqs(&store, &run).await, (1..=151).collect::<Vec<u64>>());
}
