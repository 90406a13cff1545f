//! [`IngestService`]: an agent reports what its run does (`POST /v1/runs/{id}/events`,
//! ADR 0017). The batch is validated as a whole, given its seqs by the [`EventSequencer`]
//! (atomically, across every node), published live on the [`EventBus`], and audited when it
//! changes the run's status. Persistence is the worker's (or, without Redis, the
//! sequencer's own, synchronously).

use std::sync::Arc;
use std::time::Duration;

use sba_domain::events::{BatchRejection, IncomingEvent, RunEvent, status_after};
use sba_domain::{AuditOutcome, RunId, RunStatus, SessionId, TenantId};

use crate::RequestContext;
use crate::audit::Auditor;
use crate::authorization::{Action, Denied, authorize};
use crate::events::{EventPipeline, SeedError, span_int};

use super::batch::{RawEvent, parse_batch};
use crate::ports::{
    AppendOutcome, AppendRequest, AppendedEvent, Clock, RepositoryError, RunRepository, SequencerError,
    StatusChange,
};

/// The most events one batch may hold (ARCHITECTURE.md §7).
pub const MAX_BATCH_EVENTS: usize = 500;

/// How often one batch is re-decided when the run's status moved under it (another node
/// appended in between); each retry starts from the status the sequencer answered.
const MAX_ATTEMPTS: usize = 4;

/// What the service remembers of a run between batches: who it belongs to, its session
/// (for the live channels) and the status it was last seen in (a hint: the sequencer
/// decides, and a wrong hint costs one more round trip).
#[derive(Debug, Clone, Copy)]
struct RunFacts {
    tenant: TenantId,
    session: Option<SessionId>,
    status: RunStatus,
}

/// The answer to an accepted batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReceipt {
    /// Every event of the batch, in batch order, with its seq (a duplicate's original one).
    pub events: Vec<AppendedEvent>,
    /// How many of them had been accepted before and were not stored again.
    pub duplicates: usize,
    /// The run's status after the batch.
    pub run_status: RunStatus,
}

/// Why a batch was refused. Whatever the reason, nothing of it was stored and none of its
/// ids is remembered.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No such run for the caller's tenant (including another tenant's run).
    #[error("run not found")]
    NotFound,
    #[error(transparent)]
    Forbidden(#[from] Denied),
    /// The batch is empty or holds more than [`MAX_BATCH_EVENTS`] events.
    #[error("a batch holds 1 to {MAX_BATCH_EVENTS} events, this one {0}")]
    BatchSize(usize),
    /// One event is invalid; the rejection names its index.
    #[error(transparent)]
    Invalid(#[from] BatchRejection),
    /// The run has ended (in this status); agents stop on this answer.
    #[error("the run has ended ({0})")]
    RunTerminal(RunStatus),
    /// The event store cannot be reached; the batch may have been recorded (retry it: its
    /// ids are then answered as duplicates).
    #[error("the event store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<SequencerError> for IngestError {
    fn from(error: SequencerError) -> Self {
        match error {
            SequencerError::Unavailable(source) => Self::Unavailable(source),
            SequencerError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}

impl From<SeedError> for IngestError {
    fn from(error: SeedError) -> Self {
        match error {
            SeedError::Sequencer(error) => error.into(),
            SeedError::Store(error) => error.into(),
        }
    }
}

impl From<RepositoryError> for IngestError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::NotFound => Self::NotFound,
            other => Self::Unexpected(anyhow::Error::new(other)),
        }
    }
}

/// Takes agents' event batches.
#[derive(Clone)]
pub struct IngestService {
    pipeline: EventPipeline,
    runs: Arc<dyn RunRepository>,
    auditor: Auditor,
    clock: Arc<dyn Clock>,
    facts: moka::sync::Cache<RunId, RunFacts, ahash::RandomState>,
}

impl std::fmt::Debug for IngestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestService").field("runs_known", &self.facts.entry_count()).finish_non_exhaustive()
    }
}

/// Runs whose facts are kept in memory (about 100 bytes each), least recently used first out.
const FACTS_CAPACITY: u64 = 100_000;

impl IngestService {
    pub fn new(
        pipeline: EventPipeline,
        runs: Arc<dyn RunRepository>,
        auditor: Auditor,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let facts = moka::sync::Cache::builder()
            .max_capacity(FACTS_CAPACITY)
            .time_to_idle(Duration::from_mins(10))
            .build_with_hasher(ahash::RandomState::new());
        Self { pipeline, runs, auditor, clock, facts }
    }

    /// Whether the caller may report events at all (agents and services), before its batch
    /// is read.
    ///
    /// # Errors
    /// `Forbidden` for every other role.
    pub fn admit(&self, ctx: &RequestContext) -> Result<(), IngestError> {
        Ok(authorize(&ctx.principal, Action::IngestEvents)?)
    }

    /// Validates `batch` as a whole and appends it to run `run`: new ids get the next seqs
    /// in batch order, ids seen before their original seq.
    ///
    /// # Errors
    /// `Forbidden` for callers other than agents and services; `NotFound` for a run the
    /// caller's tenant does not have; `BatchSize` and `Invalid` for a batch refused as a
    /// whole; `RunTerminal` when the run has ended; `Unavailable` when the event store cannot
    /// be reached.
    #[tracing::instrument(
        name = "ingest events",
        skip_all,
        fields(
            run = %run,
            events = span_int(batch.len()),
            first_seq = tracing::field::Empty,
            last_seq = tracing::field::Empty,
            duplicates = tracing::field::Empty,
        )
    )]
    pub async fn ingest(
        &self,
        ctx: &RequestContext,
        run: RunId,
        batch: Vec<RawEvent>,
    ) -> Result<IngestReceipt, IngestError> {
        authorize(&ctx.principal, Action::IngestEvents)?;
        if batch.is_empty() || batch.len() > MAX_BATCH_EVENTS {
            return Err(IngestError::BatchSize(batch.len()));
        }
        let events = parse_batch(batch)?;
        let tenant = ctx.principal.tenant_id;
        let facts = self.facts(tenant, run).await?;
        let created_at = self.clock.now();
        let mut status = facts.status;
        // Whether `status` came from the sequencer (and so is the truth) or is a hint.
        let mut confirmed = false;
        for _ in 0..MAX_ATTEMPTS {
            let new = match status_after(status, &events) {
                Ok(new) => new,
                // On an ended run the sequencer answers: duplicates of an accepted batch, or
                // "terminal". A batch it refuses on a confirmed status is invalid.
                Err(_) if status.is_terminal() => status,
                Err(rejection) if confirmed => return Err(rejection.into()),
                Err(_) => {
                    status = self.confirmed_status(tenant, run).await?;
                    confirmed = true;
                    continue;
                }
            };
            let request = AppendRequest {
                tenant,
                run,
                events: events.clone(),
                created_at,
                status_change: Some(StatusChange { expected: status, new }),
            };
            match self.pipeline.sequencer.append(request).await? {
                AppendOutcome::Appended { events: appended, run_status } => {
                    self.remember(run, facts, run_status);
                    self.after_append(ctx, &facts, run, &events, &appended, status, run_status, created_at)
                        .await;
                    let duplicates = appended.iter().filter(|e| e.duplicate).count();
                    let span = tracing::Span::current();
                    span.record("duplicates", span_int(duplicates));
                    if let (Some(first), Some(last)) =
                        (appended.iter().map(|e| e.seq).min(), appended.iter().map(|e| e.seq).max())
                    {
                        span.record("first_seq", span_int(first)).record("last_seq", span_int(last));
                    }
                    return Ok(IngestReceipt { events: appended, duplicates, run_status });
                }
                AppendOutcome::Terminal(ended) => {
                    self.remember(run, facts, ended);
                    return Err(IngestError::RunTerminal(ended));
                }
                AppendOutcome::Conflict(actual) => {
                    status = actual;
                    confirmed = true;
                }
                AppendOutcome::NeedsSeed => {
                    status = self.seed(tenant, run).await?;
                    confirmed = true;
                }
            }
        }
        Err(IngestError::Unexpected(anyhow::anyhow!(
            "the run's status kept changing during {MAX_ATTEMPTS} attempts to append one batch"
        )))
    }

    /// Who the run belongs to, from memory or from the store; another tenant's run is not
    /// found.
    async fn facts(&self, tenant: TenantId, run: RunId) -> Result<RunFacts, IngestError> {
        if let Some(facts) = self.facts.get(&run) {
            return if facts.tenant == tenant { Ok(facts) } else { Err(IngestError::NotFound) };
        }
        let stored = self.runs.get(tenant, run).await?.ok_or(IngestError::NotFound)?;
        let facts = RunFacts { tenant, session: stored.session_id, status: stored.status() };
        self.facts.insert(run, facts);
        Ok(facts)
    }

    fn remember(&self, run: RunId, facts: RunFacts, status: RunStatus) {
        self.facts.insert(run, RunFacts { status, ..facts });
    }

    /// The status the sequencer holds, seeding a lost counter first.
    async fn confirmed_status(&self, tenant: TenantId, run: RunId) -> Result<RunStatus, IngestError> {
        match self.pipeline.sequencer.run_status(run).await? {
            Some(status) => Ok(status),
            None => self.seed(tenant, run).await,
        }
    }

    /// Rebuilds a lost counter from what the database holds, and answers the status the
    /// sequencer then holds.
    async fn seed(&self, tenant: TenantId, run: RunId) -> Result<RunStatus, IngestError> {
        let stored = self.runs.get(tenant, run).await?.ok_or(IngestError::NotFound)?;
        self.pipeline.seed(tenant, run, stored.status()).await?;
        self.pipeline.sequencer.run_status(run).await?.ok_or_else(|| {
            IngestError::Unexpected(anyhow::anyhow!("the sequencer holds no counter after seeding"))
        })
    }

    /// Publishes the new events live and audits a status change. Neither may fail the batch:
    /// it is accepted already. A lost publication is recovered by subscribers from the run's
    /// history; a lost audit entry is logged.
    #[allow(clippy::too_many_arguments, reason = "the one place that needs all of the batch's outcome")]
    async fn after_append(
        &self,
        ctx: &RequestContext,
        facts: &RunFacts,
        run: RunId,
        events: &[IncomingEvent],
        appended: &[AppendedEvent],
        before: RunStatus,
        after: RunStatus,
        created_at: chrono::DateTime<chrono::Utc>,
    ) {
        let new_events: Vec<RunEvent> = events
            .iter()
            .zip(appended)
            .filter(|(_, outcome)| !outcome.duplicate)
            .map(|(event, outcome)| RunEvent {
                run_id: run,
                tenant_id: facts.tenant,
                seq: outcome.seq,
                producer_id: Some(outcome.producer_id.to_string()),
                data: event.data.clone(),
                created_at,
            })
            .collect();
        self.pipeline.publish(&new_events, facts.session).await;
        metrics::counter!("sba_events_accepted_total").increment(new_events.len() as u64);
        metrics::counter!("sba_events_duplicates_total")
            .increment((appended.len() - new_events.len()) as u64);
        if before != after && !new_events.is_empty() {
            let entry = self.auditor.entry(
                ctx,
                status_action(after),
                "run",
                Some(run.to_string()),
                AuditOutcome::Success,
            );
            if let Err(error) = self.auditor.store(&entry).await {
                tracing::error!(run_id = %run, error = format!("{error:#}"), "the audit entry of a run's status change was not stored");
            }
        }
    }
}

/// The audit action of a batch that moves its run to `status`.
const fn status_action(status: RunStatus) -> &'static str {
    match status {
        RunStatus::InProgress => "run.start",
        RunStatus::RequiresAction => "run.require_action",
        RunStatus::Completed => "run.complete",
        RunStatus::Failed => "run.fail",
        RunStatus::Queued | RunStatus::Cancelled | RunStatus::Expired => "run.status",
    }
}

#[cfg(test)]
mod tests;
