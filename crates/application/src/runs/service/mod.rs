//! [`RunService`]: starting, reading, cancelling and expiring runs, with an audit entry per
//! mutation attempt. Ending a run (cancel, expiry) is in [`ending`].

mod ending;

use std::sync::Arc;

use sba_domain::events::RunEvent;
use sba_domain::runs::NewRun;
use sba_domain::{
    AgentName, AgentRun, AuditEntry, AuditOutcome, InvalidTransition, Metadata, RunId, RunStatus, SessionId,
};
use serde_json::Value;

use crate::RequestContext;
use crate::audit::Auditor;
use crate::authorization::{Action, Denied, authorize};
use crate::events::{EventPipeline, SeedError};
use crate::ports::{
    AuditLog, Clock, IdGenerator, LedgerError, RepositoryError, RunLedger, RunRepository, SequencerError,
};

/// The audit actor of changes made by the platform itself rather than by a caller.
pub const SYSTEM_ACTOR: &str = "system:run-expiry";

/// The `resource_type` of a run's audit entries.
const RESOURCE_TYPE: &str = "run";

/// A request to start a run, already parsed into domain values.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRun {
    pub agent: AgentName,
    pub input: Value,
    pub session_id: Option<SessionId>,
    pub metadata: Metadata,
}

/// What can go wrong in a run use case.
#[derive(Debug, thiserror::Error)]
pub enum RunServiceError {
    /// No such run for the caller's tenant (including runs of other tenants).
    #[error("run not found")]
    NotFound,
    /// The permission matrix refuses the caller this action (for example cancelling another
    /// user's run); nothing was changed.
    #[error(transparent)]
    Forbidden(#[from] Denied),
    /// The run's state machine refuses the change (for example cancelling a completed run).
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// The event store (Redis) cannot be reached; the change may have been recorded
    /// (retrying it is safe).
    #[error("the event store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<SequencerError> for RunServiceError {
    fn from(error: SequencerError) -> Self {
        match error {
            SequencerError::Unavailable(source) => Self::Unavailable(source),
            SequencerError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}

impl From<SeedError> for RunServiceError {
    fn from(error: SeedError) -> Self {
        match error {
            SeedError::Sequencer(error) => error.into(),
            SeedError::Store(error) => error.into(),
        }
    }
}

impl From<RepositoryError> for RunServiceError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::NotFound => Self::NotFound,
            RepositoryError::Conflict(kind) => {
                Self::Unexpected(anyhow::anyhow!("unexpected conflict: {kind}"))
            }
            RepositoryError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}

impl From<LedgerError> for RunServiceError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::NotFound => Self::NotFound,
            LedgerError::InvalidTransition(refused) => Self::InvalidTransition(refused),
            LedgerError::Rejected(rejected) => {
                Self::Unexpected(anyhow::anyhow!("unexpected rejection: {rejected}"))
            }
            LedgerError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}

/// Starts, reads, cancels and expires runs.
#[derive(Clone, Debug)]
pub struct RunService {
    runs: Arc<dyn RunRepository>,
    ledger: Arc<dyn RunLedger>,
    pipeline: EventPipeline,
    auditor: Auditor,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

impl RunService {
    pub fn new(
        runs: Arc<dyn RunRepository>,
        ledger: Arc<dyn RunLedger>,
        pipeline: EventPipeline,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        let auditor = Auditor::new(audit, Arc::clone(&clock), Arc::clone(&ids));
        Self { runs, ledger, pipeline, auditor, clock, ids }
    }

    /// Creates a `queued` run owned by the caller and its tenant, with its `run.created`
    /// event (seq 1) and audit entry, atomically; then starts the run's counter in the
    /// sequencer at 1 and publishes `run.created` live. Neither of those may fail the
    /// creation: a counter that could not be set is seeded from the database by the first
    /// ingest, and a lost publication is recovered by subscribers from the database.
    ///
    /// # Errors
    /// `Forbidden` when the caller's role may not start runs (not audited here: like every
    /// refused creation, the route audits it with [`Self::record_refused`]); `Unexpected`
    /// when the run cannot be stored (nothing is then stored).
    pub async fn create(
        &self,
        ctx: &RequestContext,
        request: CreateRun,
    ) -> Result<AgentRun, RunServiceError> {
        authorize(&ctx.principal, Action::CreateRun)?;
        let now = self.clock.now();
        let run = AgentRun::new(
            RunId::from_uuid(self.ids.new_id()),
            NewRun {
                tenant_id: ctx.principal.tenant_id,
                user_id: ctx.principal.user_id.clone(),
                agent: request.agent,
                input: request.input,
                session_id: request.session_id,
                metadata: request.metadata,
            },
            now,
        );
        let entry = self.caller_entry(ctx, "run.create", Some(run.id), AuditOutcome::Success);
        self.ledger.create_run(&run, &entry).await?;
        if let Err(error) = self.pipeline.sequencer.seed(run.id, 1, RunStatus::Queued).await {
            tracing::warn!(run_id = %run.id, error = format!("{error:#}"), "starting the run's event counter failed; the first ingest seeds it");
        }
        self.pipeline.publish(&[RunEvent::created(&run)], run.session_id).await;
        Ok(run)
    }

    /// The run `id` of the caller's tenant.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn get(&self, ctx: &RequestContext, id: RunId) -> Result<AgentRun, RunServiceError> {
        authorize(&ctx.principal, Action::ReadRuns)?;
        self.runs.get(ctx.principal.tenant_id, id).await?.ok_or(RunServiceError::NotFound)
    }

    /// Audits a mutation that was refused before it reached a use case (an invalid body, a
    /// reused idempotency key): the attempt is recorded as denied, with the run when one is
    /// named.
    ///
    /// # Errors
    /// `Unexpected` when the audit entry cannot be stored.
    pub async fn record_refused(
        &self,
        ctx: &RequestContext,
        action: &str,
        run: Option<RunId>,
    ) -> Result<(), RunServiceError> {
        self.record(self.caller_entry(ctx, action, run, AuditOutcome::Denied)).await
    }

    /// The entry of the caller's attempt at `action` on `run`.
    fn caller_entry(
        &self,
        ctx: &RequestContext,
        action: &str,
        run: Option<RunId>,
        outcome: AuditOutcome,
    ) -> AuditEntry {
        self.auditor.entry(ctx, action, RESOURCE_TYPE, run.map(|id| id.to_string()), outcome)
    }

    async fn record(&self, entry: AuditEntry) -> Result<(), RunServiceError> {
        Ok(self.auditor.store(&entry).await?)
    }
}

#[cfg(test)]
mod tests;
