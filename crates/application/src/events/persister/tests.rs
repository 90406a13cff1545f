//! Unit tests of [`EventPersister`](super::EventPersister) with mocks of its ports.

use super::*;
use crate::ports::{ApplyOutcome, MockEventQueue, MockRunLedger};
use chrono::Utc;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use mockall::Sequence;
use mockall::predicate::{always, eq};
use sba_domain::RunStatus;
use sba_domain::events::{EventData, EventKind};
use sba_domain::runs::progress::ApplyError;
use uuid::Uuid;

fn tenant() -> TenantId {
    TenantId::from_uuid(Uuid::from_u128(1))
}

fn run(n: u128) -> RunId {
    RunId::from_uuid(Uuid::from_u128(100 + n))
}

fn event(run: RunId, seq: u64) -> RunEvent {
    RunEvent {
        run_id: run,
        tenant_id: tenant(),
        seq,
        producer_id: None,
        data: EventData::RunStarted,
        created_at: Utc::now(),
    }
}

fn entry(id: &str, run: RunId, seqs: std::ops::RangeInclusive<u64>, deliveries: u64) -> QueuedEntry {
    QueuedEntry {
        partition: 0,
        entry_id: id.into(),
        queued_at: Utc::now(),
        tenant: tenant(),
        run,
        events: seqs.map(|s| event(run, s)).collect(),
        deliveries,
        traceparent: None,
    }
}

fn seqs(batch: &[RunEvent]) -> Vec<u64> {
    batch.iter().map(|e| e.seq).collect()
}

fn ids(entries: &[QueuedEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.entry_id.as_str()).collect()
}

fn outcome(applied: usize, duplicates: usize) -> ApplyOutcome {
    ApplyOutcome { applied, duplicates, skipped: Vec::new(), run_status: RunStatus::InProgress }
}

fn rejected() -> LedgerError {
    LedgerError::Rejected(ApplyError::Gap { index: 0, expected: 2, got: 4 })
}

fn persister(queue: MockEventQueue, ledger: MockRunLedger) -> EventPersister {
    EventPersister::new(Arc::new(queue), Arc::new(ledger), DEFAULT_MAX_ATTEMPTS)
}

fn batch(queue: &mut MockEventQueue, entries: Vec<QueuedEntry>) {
    queue.expect_next_batch().with(eq(10)).times(1).return_once(move |_| Ok(entries));
}

#[tokio::test]
async fn applies_a_runs_entries_in_one_transaction_then_acks_them() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    let mut order = Sequence::new();
    batch(&mut queue, vec![entry("1-0", run(1), 2..=3, 1), entry("2-0", run(1), 4..=4, 1)]);
    ledger
        .expect_apply_events()
        .withf(|t, r, b| *t == tenant() && *r == run(1) && seqs(b) == [2, 3, 4])
        .times(1)
        .in_sequence(&mut order)
        .returning(|_, _, _| Ok(outcome(3, 0)));
    queue
        .expect_ack()
        .withf(|e| ids(e) == ["1-0", "2-0"])
        .times(1)
        .in_sequence(&mut order)
        .returning(|_| Ok(()));
    queue.expect_dead_letter().never();

    let report = persister(queue, ledger).persist_once(10).await.unwrap();

    assert_eq!(report, PersistReport { entries_read: 2, events_applied: 3, ..PersistReport::default() });
}

#[tokio::test]
async fn counts_duplicates_and_still_acks() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(&mut queue, vec![entry("1-0", run(1), 2..=4, 2)]);
    ledger.expect_apply_events().times(1).returning(|_, _, _| Ok(outcome(1, 2)));
    queue.expect_ack().times(1).returning(|_| Ok(()));

    let report = persister(queue, ledger).persist_once(10).await.unwrap();

    assert_eq!((report.events_applied, report.duplicates_skipped), (1, 2));
}

/// Three events stored, two of them (seqs 2 and 4, `step.delta`) without effect.
fn outcome_with_two_skipped() -> ApplyOutcome {
    let skip =
        |seq| SkippedEvent { seq, kind: EventKind::StepDelta, reason: "step `s9` does not exist".into() };
    ApplyOutcome { skipped: vec![skip(2), skip(4)], ..outcome(3, 0) }
}

/// `(labels, value)` of each `sba_worker_events_skipped_total` series recorded.
fn skipped_counters(snapshotter: &Snapshotter) -> Vec<(Vec<(String, String)>, DebugValue)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "sba_worker_events_skipped_total")
        .map(|(key, _, _, value)| {
            let labels = key.key().labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
            (labels, value)
        })
        .collect()
}

fn step_delta_counted(n: u64) -> Vec<(Vec<(String, String)>, DebugValue)> {
    vec![(vec![("kind".to_owned(), "step.delta".to_owned())], DebugValue::Counter(n))]
}

#[tokio::test]
async fn events_stored_without_effect_are_counted_by_kind_and_acked_not_retried() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(&mut queue, vec![entry("1-0", run(1), 2..=4, 1)]);
    ledger.expect_apply_events().times(1).returning(|_, _, _| Ok(outcome_with_two_skipped()));
    queue.expect_ack().withf(|e| ids(e) == ["1-0"]).times(1).returning(|_| Ok(()));
    queue.expect_dead_letter().never();

    let report = persister(queue, ledger).persist_once(10).await.unwrap();

    assert_eq!(
        report,
        PersistReport { entries_read: 1, events_applied: 3, skipped: 2, ..PersistReport::default() }
    );
    assert_eq!(skipped_counters(&snapshotter), step_delta_counted(2));
}

#[tokio::test]
async fn events_stored_without_effect_are_counted_even_when_the_ack_fails() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(&mut queue, vec![entry("1-0", run(1), 2..=4, 1)]);
    ledger.expect_apply_events().times(1).returning(|_, _, _| Ok(outcome_with_two_skipped()));
    queue.expect_ack().times(1).returning(|_| Err(QueueError::Unavailable(anyhow::anyhow!("timeout"))));

    let result = persister(queue, ledger).persist_once(10).await;

    assert!(matches!(result, Err(PersistError::Queue(_))), "{result:?}");
    assert_eq!(
        skipped_counters(&snapshotter),
        step_delta_counted(2),
        "a redelivery would only find duplicates, so the skips are counted at commit"
    );
}

#[tokio::test]
async fn two_runs_in_one_batch_are_two_transactions_in_queue_order() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    // Run 2's acknowledgement travels while run 1's transaction runs; each is sent only
    // after its own run committed (the acknowledgement is made by the commit's answer).
    let mut order = Sequence::new();
    batch(
        &mut queue,
        vec![entry("1-0", run(2), 5..=5, 1), entry("2-0", run(1), 2..=2, 1), entry("3-0", run(2), 6..=6, 1)],
    );
    ledger
        .expect_apply_events()
        .withf(|_, r, b| *r == run(2) && seqs(b) == [5, 6])
        .times(1)
        .in_sequence(&mut order)
        .returning(|_, _, _| Ok(outcome(2, 0)));
    queue
        .expect_ack()
        .withf(|e| ids(e) == ["1-0", "3-0"])
        .times(1)
        .in_sequence(&mut order)
        .returning(|_| Ok(()));
    ledger
        .expect_apply_events()
        .withf(|_, r, b| *r == run(1) && seqs(b) == [2])
        .times(1)
        .in_sequence(&mut order)
        .returning(|_, _, _| Ok(outcome(1, 0)));
    queue.expect_ack().withf(|e| ids(e) == ["2-0"]).times(1).in_sequence(&mut order).returning(|_| Ok(()));

    let report = persister(queue, ledger).persist_once(10).await.unwrap();

    assert_eq!(report.events_applied, 3);
}

#[tokio::test]
async fn a_failed_acknowledgement_ends_the_pass_after_the_next_run_committed() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(&mut queue, vec![entry("1-0", run(1), 2..=2, 1), entry("2-0", run(2), 2..=2, 1)]);
    ledger.expect_apply_events().times(2).returning(|_, _, _| Ok(outcome(1, 0)));
    queue
        .expect_ack()
        .withf(|e| ids(e) == ["1-0"])
        .times(1)
        .returning(|_| Err(QueueError::Unavailable(anyhow::anyhow!("timeout"))));
    // Run 2 committed while run 1's ack failed: its entry stays pending and comes again.
    queue.expect_ack().withf(|e| ids(e) == ["2-0"]).never();

    let failed = persister(queue, ledger).persist_once(10).await;

    assert!(matches!(failed, Err(PersistError::Queue(QueueError::Unavailable(_)))), "{failed:?}");
}

#[tokio::test]
async fn a_rejected_entry_under_the_attempt_limit_stays_pending() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(&mut queue, vec![entry("1-0", run(1), 4..=4, DEFAULT_MAX_ATTEMPTS - 1)]);
    ledger.expect_apply_events().times(1).returning(|_, _, _| Err(rejected()));
    queue.expect_ack().never();
    queue.expect_dead_letter().never();

    let report = persister(queue, ledger).persist_once(10).await.unwrap();

    assert_eq!((report.runs_failed, report.dead_letters), (1, 0));
}

#[tokio::test]
async fn a_rejected_entry_at_the_limit_is_dead_lettered_and_the_other_run_still_applied() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(
        &mut queue,
        vec![entry("1-0", run(1), 4..=4, DEFAULT_MAX_ATTEMPTS), entry("2-0", run(2), 2..=3, 1)],
    );
    ledger.expect_apply_events().withf(|_, r, _| *r == run(1)).times(1).returning(|_, _, _| Err(rejected()));
    queue
        .expect_dead_letter()
        .withf(|e, reason| e.entry_id == "1-0" && reason.contains("expected seq 2, got 4"))
        .times(1)
        .returning(|_, _| Ok(()));
    ledger
        .expect_apply_events()
        .withf(|_, r, _| *r == run(2))
        .times(1)
        .returning(|_, _, _| Ok(outcome(2, 0)));
    queue.expect_ack().withf(|e| ids(e) == ["2-0"]).times(1).returning(|_| Ok(()));

    let report = persister(queue, ledger).persist_once(10).await.unwrap();

    assert_eq!(
        report,
        PersistReport {
            entries_read: 2,
            events_applied: 2,
            runs_failed: 1,
            dead_letters: 1,
            ..PersistReport::default()
        }
    );
}

#[tokio::test]
async fn an_unknown_run_at_the_limit_is_dead_lettered() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(&mut queue, vec![entry("1-0", run(1), 2..=2, DEFAULT_MAX_ATTEMPTS + 3)]);
    ledger.expect_apply_events().times(1).returning(|_, _, _| Err(LedgerError::NotFound));
    queue.expect_dead_letter().with(always(), eq("run not found")).times(1).returning(|_, _| Ok(()));
    queue.expect_ack().never();

    let report = persister(queue, ledger).persist_once(10).await.unwrap();

    assert_eq!(report.dead_letters, 1);
}

#[tokio::test]
async fn a_database_failure_leaves_the_entries_pending_even_at_the_limit_and_goes_on() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(
        &mut queue,
        vec![entry("1-0", run(1), 2..=2, DEFAULT_MAX_ATTEMPTS), entry("2-0", run(2), 2..=2, 1)],
    );
    ledger
        .expect_apply_events()
        .withf(|_, r, _| *r == run(1))
        .times(1)
        .returning(|_, _, _| Err(LedgerError::Unexpected(anyhow::anyhow!("connection refused"))));
    ledger
        .expect_apply_events()
        .withf(|_, r, _| *r == run(2))
        .times(1)
        .returning(|_, _, _| Ok(outcome(1, 0)));
    queue.expect_ack().withf(|e| ids(e) == ["2-0"]).times(1).returning(|_| Ok(()));
    queue.expect_dead_letter().never();

    let report = persister(queue, ledger).persist_once(10).await.unwrap();

    assert_eq!((report.runs_failed, report.dead_letters, report.events_applied), (1, 0, 1));
}

#[tokio::test]
async fn a_queue_error_is_returned() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    queue
        .expect_next_batch()
        .times(1)
        .returning(|_| Err(QueueError::Unavailable(anyhow::anyhow!("timeout"))));
    ledger.expect_apply_events().never();

    let result = persister(queue, ledger).persist_once(10).await;

    assert!(matches!(result, Err(PersistError::Queue(QueueError::Unavailable(_)))));
}

#[tokio::test]
async fn a_failed_ack_is_returned() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(&mut queue, vec![entry("1-0", run(1), 2..=2, 1)]);
    ledger.expect_apply_events().times(1).returning(|_, _, _| Ok(outcome(1, 0)));
    queue.expect_ack().times(1).returning(|_| Err(QueueError::Unavailable(anyhow::anyhow!("timeout"))));

    let result = persister(queue, ledger).persist_once(10).await;

    assert!(matches!(result, Err(PersistError::Queue(_))));
}

#[test]
fn the_lag_runs_from_queueing_to_now_and_is_never_negative() {
    let queued_at = Utc::now();
    assert!(
        (lag_seconds_between(queued_at, queued_at + chrono::Duration::milliseconds(1500)) - 1.5).abs() < 1e-9
    );
    assert!(lag_seconds_between(queued_at, queued_at - chrono::Duration::seconds(2)).abs() < f64::EPSILON);
}

#[tokio::test]
async fn an_empty_batch_touches_nothing() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(&mut queue, Vec::new());
    ledger.expect_apply_events().never();

    let report = persister(queue, ledger).persist_once(10).await.unwrap();

    assert_eq!(report, PersistReport::default());
}

#[tokio::test]
async fn a_failed_dead_letter_ends_the_pass_before_the_next_run_is_applied() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(
        &mut queue,
        vec![entry("1-0", run(1), 4..=4, DEFAULT_MAX_ATTEMPTS), entry("2-0", run(2), 2..=2, 1)],
    );
    ledger.expect_apply_events().withf(|_, r, _| *r == run(1)).times(1).returning(|_, _, _| Err(rejected()));
    queue
        .expect_dead_letter()
        .times(1)
        .returning(|_, _| Err(QueueError::Unavailable(anyhow::anyhow!("timeout"))));
    // Run 2's entry stays in the queue and comes again with the next pass.
    ledger.expect_apply_events().withf(|_, r, _| *r == run(2)).never();
    queue.expect_ack().never();

    let failed = persister(queue, ledger).persist_once(10).await;

    assert!(matches!(failed, Err(PersistError::Queue(QueueError::Unavailable(_)))), "{failed:?}");
}

#[tokio::test]
async fn an_invalid_transition_at_the_limit_is_dead_lettered_with_its_reason() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(&mut queue, vec![entry("1-0", run(1), 2..=2, DEFAULT_MAX_ATTEMPTS)]);
    let refusal = || {
        LedgerError::InvalidTransition(sba_domain::InvalidTransition {
            from: RunStatus::Completed,
            to: RunStatus::InProgress,
        })
    };
    ledger.expect_apply_events().times(1).returning(move |_, _, _| Err(refusal()));
    let reason = refusal().to_string();
    queue.expect_dead_letter().with(always(), eq(reason)).times(1).returning(|_, _| Ok(()));
    queue.expect_ack().never();

    let report = persister(queue, ledger).persist_once(10).await.unwrap();

    assert_eq!((report.runs_failed, report.dead_letters), (1, 1));
}

#[tokio::test]
async fn a_refused_run_dead_letters_only_its_entries_at_the_limit_and_keeps_the_others_pending() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(
        &mut queue,
        vec![entry("1-0", run(1), 4..=4, DEFAULT_MAX_ATTEMPTS), entry("2-0", run(1), 5..=5, 1)],
    );
    ledger.expect_apply_events().times(1).returning(|_, _, _| Err(rejected()));
    queue.expect_dead_letter().withf(|e, _| e.entry_id == "1-0").times(1).returning(|_, _| Ok(()));
    queue.expect_ack().never();

    let report = persister(queue, ledger).persist_once(10).await.unwrap();

    assert_eq!((report.runs_failed, report.dead_letters), (1, 1));
}

/// The traceparents [`record_link`] was given (tests add their own, unique values).
static LINKED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn record_link(_: &tracing::Span, traceparent: &str) {
    LINKED.lock().unwrap().push(traceparent.to_owned());
}

#[tokio::test]
async fn each_runs_span_links_to_the_spans_that_accepted_its_entries() {
    let traceparents = [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203332-01",
    ];
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    let traced = |id, run, seq, traceparent: &str| QueuedEntry {
        traceparent: Some(traceparent.to_owned()),
        ..entry(id, run, seq..=seq, 1)
    };
    batch(
        &mut queue,
        vec![
            traced("1-0", run(1), 2, traceparents[0]),
            entry("2-0", run(2), 2..=2, 1),
            traced("3-0", run(2), 3, traceparents[1]),
        ],
    );
    ledger.expect_apply_events().times(2).returning(|_, _, b| Ok(outcome(b.len(), 0)));
    queue.expect_ack().times(2).returning(|_| Ok(()));

    persister(queue, ledger).with_span_links(record_link).persist_once(10).await.unwrap();

    let linked = LINKED.lock().unwrap();
    assert!(traceparents.iter().all(|t| linked.iter().filter(|l| l == t).count() == 1), "{linked:?}");
}

#[tokio::test]
async fn a_run_whose_transaction_fails_is_logged_with_the_seq_range_of_its_entries() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(&mut queue, vec![entry("1-0", run(1), 5..=6, 1), entry("2-0", run(1), 3..=4, 1)]);
    ledger
        .expect_apply_events()
        .times(1)
        .returning(|_, _, _| Err(LedgerError::Unexpected(anyhow::anyhow!("connection reset"))));
    queue.expect_ack().never();
    let persister = persister(queue, ledger);

    let logs = crate::testing::logs_of(async {
        let report = persister.persist_once(10).await.unwrap();
        assert_eq!(report.runs_failed, 1);
    })
    .await;

    let line = logs.lines().find(|l| l.contains("its entries stay pending")).unwrap_or_default();
    assert!(
        line.contains("first_seq=3") && line.contains("last_seq=6") && line.contains("connection reset"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_dead_lettered_entry_is_logged_with_its_own_seq_range_and_attempts() {
    let mut queue = MockEventQueue::new();
    let mut ledger = MockRunLedger::new();
    batch(
        &mut queue,
        vec![entry("1-0", run(1), 7..=9, DEFAULT_MAX_ATTEMPTS), entry("2-0", run(1), 10..=12, 1)],
    );
    ledger.expect_apply_events().times(1).returning(|_, _, _| Err(rejected()));
    queue.expect_dead_letter().times(1).returning(|_, _| Ok(()));
    let persister = persister(queue, ledger);

    let logs = crate::testing::logs_of(async {
        assert_eq!(persister.persist_once(10).await.unwrap().dead_letters, 1);
    })
    .await;

    let line = logs.lines().find(|l| l.contains("queue entry dead-lettered")).unwrap_or_default();
    assert!(
        line.contains("first_seq=7") && line.contains("last_seq=9") && line.contains("attempts=5"),
        "{logs}"
    );
    let refused = logs.lines().find(|l| l.contains("the ledger refused")).unwrap_or_default();
    assert!(refused.contains("first_seq=7") && refused.contains("last_seq=12"), "the run's range: {logs}");
}
