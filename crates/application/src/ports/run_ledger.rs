//! Atomic multi-table work on a run: everything one change of a run writes, in one
//! transaction or not at all.

use async_trait::async_trait;
use sba_domain::events::RunEvent;
use sba_domain::runs::progress::ApplyError;
pub use sba_domain::runs::progress::SkippedEvent;
use sba_domain::usage::Usage;
use sba_domain::{AgentRun, AuditEntry, InvalidTransition, RunError, RunId, RunStatus, TenantId};
use serde_json::Value;

/// What [`RunLedger::apply_events`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Events stored by this call, skipped ones included.
    pub applied: usize,
    /// Events that were already stored (same `(run_id, seq)`), left out.
    pub duplicates: usize,
    /// Events stored by this call whose effect was skipped because they contradict the run's
    /// state, in `seq` order.
    pub skipped: Vec<SkippedEvent>,
    /// The run's status after the batch.
    pub run_status: RunStatus,
}

/// How a run ends through the ledger.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnding {
    Complete { output: Value, usage: Option<Usage> },
    Fail { error: RunError, usage: Option<Usage> },
    Cancel,
    Expire,
}

/// What can go wrong in a ledger transaction. Whatever it is, nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// No such run for this tenant.
    #[error("run not found")]
    NotFound,
    /// The run's state machine refuses the change.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// The batch skips a `seq` or holds another run's event; the error names the offending
    /// event.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Transactions that change a run together with its events, steps, tool calls, usage and
/// audit trail.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RunLedger: std::fmt::Debug + Send + Sync + 'static {
    /// Stores a new run, its `run.created` event (seq 1) and its audit entry.
    ///
    /// # Errors
    /// `Unexpected` on storage failure (including a duplicate run id).
    async fn create_run(&self, run: &AgentRun, audit: &AuditEntry) -> Result<(), LedgerError>;

    /// In one transaction: stores the events of `batch` not stored yet (a `(run_id, seq)`
    /// already present is left out, not an error), creates and updates the steps and tool
    /// calls they describe, records reported usage, and moves the run through its state
    /// machine. Events that contradict the run's state (an illegal transition, work on an
    /// ended run, an unknown step or tool call, a tool call completed twice) are stored and
    /// their effect skipped; they are listed in [`ApplyOutcome::skipped`]. Concurrent calls
    /// for one run are serialised on the run's row.
    ///
    /// # Errors
    /// `NotFound` for an unknown run of this tenant; `Rejected` when an event skips a `seq` or
    /// belongs to another run (nothing of the batch is written); `Unexpected` on storage
    /// failure.
    async fn apply_events(
        &self,
        tenant: TenantId,
        run_id: RunId,
        batch: Vec<RunEvent>,
    ) -> Result<ApplyOutcome, LedgerError>;

    /// Ends the run as `ending` says: status, its event (`run.completed`, `run.failed`,
    /// `run.cancelled`; expiry has none), the end of its open steps, usage when given, and
    /// `audit`, in one transaction. Returns the run as stored.
    ///
    /// # Errors
    /// `NotFound` for an unknown run of this tenant; `InvalidTransition` when the run cannot end
    /// that way (for example, it already ended); `Unexpected` on storage failure.
    async fn end_run(
        &self,
        tenant: TenantId,
        run_id: RunId,
        ending: RunEnding,
        audit: AuditEntry,
    ) -> Result<AgentRun, LedgerError>;
}
