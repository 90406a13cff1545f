//! Ending a run: a caller's cancel and the worker's expiry. Both end the run in its event
//! sequence first, so the next ingest on any node is refused (ADR 0017).

use chrono::{DateTime, Utc};
use sba_domain::events::{EventData, RunEvent};
use sba_domain::{AgentRun, AuditOutcome, InvalidTransition, RunId, RunStatus};

use super::{RESOURCE_TYPE, RunService, RunServiceError, SYSTEM_ACTOR};
use crate::RequestContext;
use crate::authorization::{Action, authorize};
use crate::ports::{LedgerError, RunEnding, ServerAppendOutcome, ServerEvent};

/// What ending a run in its sequence did.
enum SequenceEnd {
    /// Ended; the seq of the last event (the ending event when it has one).
    Ended { seq: u64 },
    /// The run had ended already, in this status.
    AlreadyEnded(RunStatus),
}

impl RunService {
    /// Cancels the run `id`, when the permission matrix lets the caller cancel a run of its
    /// creator. A successful cancel writes `run.cancelled` into the run's sequence (from then
    /// on every ingest, on any node, answers that the run has ended), publishes it live and
    /// audits the cancel; the worker persists it in seq order, ending the run's open steps.
    /// The answer is the run as it will be once persisted. A refused cancel is audited as
    /// denied and leaves the run unchanged.
    ///
    /// # Errors
    /// `NotFound` as for [`Self::get`]; `Forbidden` when the caller may not cancel this run;
    /// `InvalidTransition` when the run has already ended; `Unavailable` when the event store
    /// cannot be reached.
    pub async fn cancel(&self, ctx: &RequestContext, id: RunId) -> Result<AgentRun, RunServiceError> {
        // The creator never changes, so reading it before the sequencer's atomic cancel leaves
        // no window in which the decision could become wrong.
        let Some(mut run) = self.runs.get(ctx.principal.tenant_id, id).await? else {
            return self.cancel_refused(ctx, id, RunServiceError::NotFound).await;
        };
        if let Err(refusal) = authorize(&ctx.principal, Action::CancelRun { creator: &run.user_id }) {
            return self.cancel_refused(ctx, id, refusal.into()).await;
        }
        let now = self.clock.now();
        let tenant = ctx.principal.tenant_id;
        let seq = match self.end_sequence(&run, ServerEvent::Cancelled, now).await? {
            SequenceEnd::Ended { seq } => seq,
            SequenceEnd::AlreadyEnded(status) => {
                let refused = InvalidTransition { from: status, to: RunStatus::Cancelled };
                return self.cancel_refused(ctx, id, refused.into()).await;
            }
        };
        let cancelled = RunEvent::server(id, tenant, seq, EventData::RunCancelled, now);
        self.pipeline.publish(&[cancelled], run.session_id).await;
        if let Err(error) =
            self.record(self.caller_entry(ctx, "run.cancel", Some(id), AuditOutcome::Success)).await
        {
            tracing::error!(run_id = %id, error = format!("{error:#}"), "the audit entry of an accepted cancel was not stored");
        }
        // The stored row may lag behind the sequence (the worker persists in order); the
        // sequencer accepted the cancel, so the run is cancelled from a status that allows it.
        if run.cancel(now).is_err() {
            tracing::debug!(run_id = %id, "the stored run is behind its sequence; answering it as stored");
        }
        Ok(run)
    }

    /// Audits a refused cancel as denied, then answers `error`.
    async fn cancel_refused(
        &self,
        ctx: &RequestContext,
        id: RunId,
        error: RunServiceError,
    ) -> Result<AgentRun, RunServiceError> {
        self.record(self.caller_entry(ctx, "run.cancel", Some(id), AuditOutcome::Denied)).await?;
        Err(error)
    }

    /// Expires every run that has not ended within `max_age` of its creation, up to `batch`
    /// runs per call, and returns how many it expired. Each run is first ended in its
    /// sequence (`ServerEvent::Expired`: from then on every ingest answers that it has
    /// ended), then its row through the ledger with the system's audit entry. A run that
    /// ends concurrently is left as it ended; a run whose sequence is expired already (the
    /// ledger failed after an earlier sweep ended it) is expired in the ledger.
    ///
    /// # Errors
    /// `Unexpected` when the store fails, `Unavailable` when the event store cannot be
    /// reached; runs expired before the failure stay expired.
    pub async fn expire_overdue(
        &self,
        max_age: chrono::Duration,
        batch: u64,
    ) -> Result<usize, RunServiceError> {
        let now = self.clock.now();
        let mut expired = 0;
        for run in self.runs.list_overdue(now - max_age, batch).await? {
            // A sequence ended as expired is an earlier sweep's whose `end_run` failed (or a
            // concurrent sweep's): no queued event brings an expiry to the database, so the
            // ledger is still asked (it refuses a run that ended meanwhile).
            if let SequenceEnd::AlreadyEnded(status) =
                self.end_sequence(&run, ServerEvent::Expired, now).await?
                && status != RunStatus::Expired
            {
                tracing::debug!(run_id = %run.id, "run ended before its expiry, skipped");
                continue;
            }
            let entry = self.auditor.system_entry(
                run.tenant_id,
                SYSTEM_ACTOR,
                "run.expire",
                RESOURCE_TYPE,
                Some(run.id.to_string()),
                AuditOutcome::Success,
            );
            match self.ledger.end_run(run.tenant_id, run.id, RunEnding::Expire, entry).await {
                Ok(_) => expired += 1,
                Err(LedgerError::InvalidTransition(_) | LedgerError::NotFound) => {
                    tracing::debug!(run_id = %run.id, "run ended during expiry, skipped");
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok(expired)
    }

    /// Ends the run's sequence with `event` (`Cancelled` or `Expired`), seeding a missing
    /// counter from the database once.
    async fn end_sequence(
        &self,
        run: &AgentRun,
        event: ServerEvent,
        now: DateTime<Utc>,
    ) -> Result<SequenceEnd, RunServiceError> {
        let mut seeded = false;
        loop {
            match self.pipeline.sequencer.append_server_event(run.tenant_id, run.id, event, now).await? {
                ServerAppendOutcome::Appended { seq, .. } => return Ok(SequenceEnd::Ended { seq }),
                ServerAppendOutcome::Terminal(status) => return Ok(SequenceEnd::AlreadyEnded(status)),
                ServerAppendOutcome::NeedsSeed if !seeded => {
                    self.pipeline.seed(run.tenant_id, run.id, run.status()).await?;
                    seeded = true;
                }
                other => {
                    return Err(RunServiceError::Unexpected(anyhow::anyhow!(
                        "the sequencer answered {other:?} to {event:?}"
                    )));
                }
            }
        }
    }
}
