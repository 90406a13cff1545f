//! Moves queued event batches into the run ledger (ADR 0017, "Worker: partitions leased,
//! entries acknowledged after commit"): one ledger transaction per run per batch, the
//! run's entries acknowledged only after it commits. Events the ledger stored without effect
//! (they contradict the run's state) are logged and counted, never retried.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use sba_domain::events::RunEvent;
use sba_domain::{RunId, TenantId};

use futures_util::future::BoxFuture;
use tracing::Instrument as _;

use super::span_int;

use crate::ports::{ApplyOutcome, EventQueue, LedgerError, QueueError, QueuedEntry, RunLedger, SkippedEvent};

/// How many deliveries an entry the ledger refuses gets before it goes to the dead letters.
pub const DEFAULT_MAX_ATTEMPTS: u64 = 5;

/// What one [`EventPersister::persist_once`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistReport {
    /// Queue entries taken.
    pub entries_read: usize,
    /// Events stored, skipped ones included.
    pub events_applied: usize,
    /// Events already stored (a redelivery), skipped.
    pub duplicates_skipped: usize,
    /// Events stored whose effect the ledger skipped because they contradict the run's state.
    pub skipped: usize,
    /// Runs whose transaction failed; their entries not dead-lettered stay pending.
    pub runs_failed: usize,
    /// Entries moved to the dead letters.
    pub dead_letters: usize,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The queue did not answer; entries not acknowledged are delivered again.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Links a span to the span a W3C `traceparent` names: the tracing backend's business
/// (`sba_infrastructure::trace_context::link`), so that this layer knows no tracing backend.
pub type LinkSpan = fn(&tracing::Span, &str);

/// Stores what the sequencer queued: the use case `sba worker` runs in a loop.
#[derive(Debug, Clone)]
pub struct EventPersister {
    queue: Arc<dyn EventQueue>,
    ledger: Arc<dyn RunLedger>,
    max_attempts: u64,
    link_span: Option<LinkSpan>,
    persisted: metrics::Counter,
    dead_lettered: metrics::Counter,
    batch_seconds: metrics::Histogram,
    lag_seconds: metrics::Histogram,
}

/// One run's share of a batch, its entries in queue order.
struct RunGroup {
    tenant: TenantId,
    run: RunId,
    entries: Vec<QueuedEntry>,
}

impl EventPersister {
    /// `max_attempts`: the delivery count at which an entry the ledger refuses is
    /// dead-lettered (see [`DEFAULT_MAX_ATTEMPTS`]).
    pub fn new(queue: Arc<dyn EventQueue>, ledger: Arc<dyn RunLedger>, max_attempts: u64) -> Self {
        Self {
            queue,
            ledger,
            max_attempts: max_attempts.max(1),
            link_span: None,
            persisted: metrics::counter!("sba_worker_events_persisted_total"),
            dead_lettered: metrics::counter!("sba_worker_dead_letters_total"),
            batch_seconds: metrics::histogram!("sba_worker_batch_seconds"),
            lag_seconds: metrics::histogram!("sba_worker_lag_seconds"),
        }
    }

    /// Each run's span links to the spans that accepted its entries, through `link`.
    #[must_use]
    pub fn with_span_links(self, link: LinkSpan) -> Self {
        Self { link_span: Some(link), ..self }
    }

    /// Takes up to `max_entries` entries and stores their events: per run, one
    /// [`RunLedger::apply_events`] transaction with all that run's events of the batch, then
    /// the acknowledgement of its entries. Each event stored without effect is logged at
    /// `warn` (run, seq, kind, reason; never its data) and counted in
    /// `sba_worker_events_skipped_total` by kind. A run the ledger refuses (`Rejected`, `NotFound`,
    /// `InvalidTransition`) keeps its entries pending, except those delivered
    /// `max_attempts` times, which go to the dead letters; a run whose transaction fails
    /// otherwise (the database is down) keeps its entries pending. Either way the other
    /// runs of the batch go on.
    ///
    /// # Errors
    /// [`PersistError::Queue`] when the queue fails to give, acknowledge or dead-letter
    /// entries; what was committed stays committed, and unacknowledged entries come again.
    pub async fn persist_once(&self, max_entries: usize) -> Result<PersistReport, PersistError> {
        let entries = self.queue.next_batch(max_entries).await?;
        let mut report = PersistReport { entries_read: entries.len(), ..PersistReport::default() };
        if entries.is_empty() {
            return Ok(report);
        }
        let started = Instant::now();
        // A run's acknowledgement (sent once its transaction committed) travels while the
        // next run's transaction runs: the queue's round trip costs the pass nothing. A
        // failed acknowledgement still ends the pass; what the next run committed meanwhile
        // comes again and is found as duplicates.
        let mut in_flight: Option<BoxFuture<'static, Result<(), QueueError>>> = None;
        for group in group_by_run(entries) {
            let span = self.run_span(&group);
            let applied = match in_flight.take() {
                Some(ack) => {
                    let (acked, applied) =
                        futures_util::join!(ack, self.apply_run(&group).instrument(span.clone()));
                    acked?;
                    applied
                }
                None => self.apply_run(&group).instrument(span.clone()).await,
            };
            in_flight = self.settle_run(group, applied, &mut report).instrument(span).await?;
        }
        if let Some(ack) = in_flight {
            ack.await?;
        }
        self.batch_seconds.record(started.elapsed().as_secs_f64());
        Ok(report)
    }

    /// The span of a run's share of a batch, linked to the ingests that queued it.
    fn run_span(&self, group: &RunGroup) -> tracing::Span {
        let (first_seq, last_seq) = group_seq_range(group);
        let span = tracing::info_span!(
            "persist events",
            run = %group.run,
            first_seq = span_int(first_seq),
            last_seq = span_int(last_seq),
            entries = span_int(group.entries.len()),
        );
        if let Some(link) = self.link_span {
            for traceparent in group.entries.iter().filter_map(|e| e.traceparent.as_deref()) {
                link(&span, traceparent);
            }
        }
        span
    }

    /// The run's transaction: all its events of the batch, sorted by seq.
    async fn apply_run(&self, group: &RunGroup) -> Result<ApplyOutcome, LedgerError> {
        let mut events: Vec<RunEvent> = group.entries.iter().flat_map(|e| e.events.iter().cloned()).collect();
        events.sort_by_key(|e| e.seq);
        self.ledger.apply_events(group.tenant, group.run, events).await
    }

    /// Counts and logs what the run's transaction did; answers the acknowledgement of its
    /// entries to send when it committed, and dead-letters them as the refusal requires.
    async fn settle_run(
        &self,
        group: RunGroup,
        applied: Result<ApplyOutcome, LedgerError>,
        report: &mut PersistReport,
    ) -> Result<Option<BoxFuture<'static, Result<(), QueueError>>>, PersistError> {
        let (first_seq, last_seq) = group_seq_range(&group);
        match applied {
            Ok(outcome) => {
                // Recorded before the ack: the events are committed, and a redelivery after a
                // failed ack would only find them as duplicates.
                self.persisted.increment(outcome.applied as u64);
                record_skipped(group.run, &outcome.skipped);
                report.events_applied += outcome.applied;
                report.duplicates_skipped += outcome.duplicates;
                report.skipped += outcome.skipped.len();
                let (queue, lag_seconds) = (Arc::clone(&self.queue), self.lag_seconds.clone());
                let entries = group.entries;
                return Ok(Some(Box::pin(async move {
                    queue.ack(&entries).await?;
                    // The queue's clock against this host's: a lag metric, not a decision.
                    let now = Utc::now();
                    for entry in &entries {
                        lag_seconds.record(lag_seconds_between(entry.queued_at, now));
                    }
                    Ok(())
                })));
            }
            Err(LedgerError::Unexpected(error)) => {
                report.runs_failed += 1;
                tracing::warn!(
                    run = %group.run, first_seq, last_seq, error = format!("{error:#}"),
                    "storing the run's events failed; its entries stay pending"
                );
            }
            Err(refused) => {
                report.runs_failed += 1;
                let reason = refused.to_string();
                for entry in group.entries.iter().filter(|e| e.deliveries >= self.max_attempts) {
                    self.queue.dead_letter(entry, &reason).await?;
                    report.dead_letters += 1;
                    self.dead_lettered.increment(1);
                    let (first, last) = seq_range(&entry.events);
                    tracing::error!(
                        run = %group.run, first_seq = first, last_seq = last,
                        attempts = entry.deliveries, %reason, "queue entry dead-lettered"
                    );
                }
                tracing::warn!(
                    run = %group.run, first_seq, last_seq, %reason,
                    "the ledger refused the run's events"
                );
            }
        }
        Ok(None)
    }
}

/// Logs and counts the events a run's transaction stored without effect.
fn record_skipped(run: RunId, skipped: &[SkippedEvent]) {
    for event in skipped {
        metrics::counter!("sba_worker_events_skipped_total", "kind" => event.kind.as_str()).increment(1);
        tracing::warn!(
            %run, seq = event.seq, kind = event.kind.as_str(), reason = %event.reason,
            "event stored without effect: it contradicts the run's state"
        );
    }
}

/// The batch's entries grouped by run, runs in the order they first appear, each run's
/// entries in queue order.
fn group_by_run(entries: Vec<QueuedEntry>) -> Vec<RunGroup> {
    let mut groups: Vec<RunGroup> = Vec::new();
    for entry in entries {
        match groups.iter_mut().find(|g| g.run == entry.run && g.tenant == entry.tenant) {
            Some(group) => group.entries.push(entry),
            None => groups.push(RunGroup { tenant: entry.tenant, run: entry.run, entries: vec![entry] }),
        }
    }
    groups
}

/// Seconds from `queued_at` to `now`; 0 when clocks disagree the other way.
fn lag_seconds_between(queued_at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - queued_at).to_std().unwrap_or_default().as_secs_f64()
}

/// The lowest and highest seq of a run's entries.
fn group_seq_range(group: &RunGroup) -> (u64, u64) {
    let seqs = || group.entries.iter().flat_map(|e| e.events.iter().map(|e| e.seq));
    (seqs().min().unwrap_or(0), seqs().max().unwrap_or(0))
}

fn seq_range(events: &[RunEvent]) -> (u64, u64) {
    let first = events.iter().map(|e| e.seq).min().unwrap_or(0);
    let last = events.iter().map(|e| e.seq).max().unwrap_or(0);
    (first, last)
}

#[cfg(test)]
mod tests {
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
            vec![
                entry("1-0", run(2), 5..=5, 1),
                entry("2-0", run(1), 2..=2, 1),
                entry("3-0", run(2), 6..=6, 1),
            ],
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
        queue
            .expect_ack()
            .withf(|e| ids(e) == ["2-0"])
            .times(1)
            .in_sequence(&mut order)
            .returning(|_| Ok(()));

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
        ledger
            .expect_apply_events()
            .withf(|_, r, _| *r == run(1))
            .times(1)
            .returning(|_, _, _| Err(rejected()));
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
            (lag_seconds_between(queued_at, queued_at + chrono::Duration::milliseconds(1500)) - 1.5).abs()
                < 1e-9
        );
        assert!(
            lag_seconds_between(queued_at, queued_at - chrono::Duration::seconds(2)).abs() < f64::EPSILON
        );
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
}
