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
mod tests;
