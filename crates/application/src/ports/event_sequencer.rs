//! The sequencer of run events (ADR 0017): gives every accepted event its `seq` (1, 2, 3, …
//! per run, no gaps, across every node), answers a producer id seen before with its
//! original `seq`, refuses events for an ended run, and records each batch atomically where
//! it becomes durable (Redis: the run's history, its producer ids and its partition's queue).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_domain::events::{IncomingEvent, ProducerId, RunEvent};
use sba_domain::{RunId, RunStatus, TenantId};

/// A status change that a batch makes, decided by the service with the domain state
/// machine; the sequencer only compares statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange {
    /// The status the run must have now; another stored status is a [`AppendOutcome::Conflict`].
    pub expected: RunStatus,
    /// The status after the batch; a terminal one ends the run for every later append.
    pub new: RunStatus,
}

/// One validated ingest batch of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    pub tenant: TenantId,
    pub run: RunId,
    /// In batch order: the new ones get consecutive seqs in this order.
    pub events: Vec<IncomingEvent>,
    pub created_at: DateTime<Utc>,
    /// `None` when the batch leaves the run's status as it is.
    pub status_change: Option<StatusChange>,
}

/// The seq of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedEvent {
    pub producer_id: ProducerId,
    pub seq: u64,
    /// The id was seen before (in an earlier batch or earlier in this one): nothing was
    /// stored for it, and `seq` is the one it got then.
    pub duplicate: bool,
}

/// What [`EventSequencer::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch is recorded: one entry per event, in batch order. A batch of duplicates
    /// only is answered so whatever the run's state now (a retry of an accepted batch).
    Appended { events: Vec<AppendedEvent>, run_status: RunStatus },
    /// The run has ended in this status; nothing was stored.
    Terminal(RunStatus),
    /// The stored status is not the expected one; nothing was stored (re-read and retry).
    Conflict(RunStatus),
    /// The sequencer holds no counter for the run (lost, or never set): call
    /// [`EventSequencer::seed`] with what the database holds, then append again.
    NeedsSeed,
}

/// An event the server writes into a run's sequence itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// `run.created`, seq 1 of a new run, status `queued`.
    Created,
    /// `run.cancelled`: the run is `cancelled` and ended.
    Cancelled,
    /// The run expired (the worker's sweep): it ends as `expired` for every later append.
    /// There is no event of this kind, so no seq is taken: the answer's `seq` is the run's
    /// last one. The database row is ended by `RunLedger::end_run(Expire)` after this.
    Expired,
}

/// What [`EventSequencer::append_server_event`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAppendOutcome {
    Appended {
        seq: u64,
        run_status: RunStatus,
    },
    /// The run has ended in this status; nothing was stored.
    Terminal(RunStatus),
    /// `run.created` for a run that has a sequence already (its status given); nothing
    /// was stored.
    Conflict(RunStatus),
    /// `run.cancelled` or an expiry for a run without a counter: seed it, then append again.
    NeedsSeed,
}

/// What [`EventSequencer::seed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedOutcome {
    /// The counter was missing and now stands at this seq.
    Seeded { seq: u64 },
    /// The counter was there (another node seeded it, or it never was lost); untouched.
    Kept { seq: u64 },
}

/// Why the sequencer gave no answer. An `append` that fails may still have been recorded
/// (the answer was lost): its retry is answered with duplicates.
#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    /// The store (Redis) is unreachable or did not answer in time.
    #[error("the event store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Assigns seqs to run events and records them atomically, shared by every node.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait EventSequencer: std::fmt::Debug + Send + Sync + 'static {
    /// Appends a validated batch in one atomic step: new producer ids get the next seqs in
    /// batch order, seen ones their original seq, and the status change applies when the
    /// batch has a new event. All or nothing.
    ///
    /// # Errors
    /// [`SequencerError::Unavailable`] when the store cannot be reached in time,
    /// [`SequencerError::Unexpected`] for anything else.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, SequencerError>;

    /// Appends a server event (`run.created` or `run.cancelled`) at the next seq, or ends the
    /// run as expired without an event ([`ServerEvent::Expired`]).
    ///
    /// # Errors
    /// As [`Self::append`].
    async fn append_server_event(
        &self,
        tenant: TenantId,
        run: RunId,
        event: ServerEvent,
        created_at: DateTime<Utc>,
    ) -> Result<ServerAppendOutcome, SequencerError>;

    /// Sets a missing counter to the greater of `stored_max_seq` (the highest seq the
    /// database holds) and the last seq the run's history ever held, with the status and
    /// terminal flag of `stored_status`; a counter that exists is left alone.
    ///
    /// # Errors
    /// As [`Self::append`].
    async fn seed(
        &self,
        run: RunId,
        stored_max_seq: u64,
        stored_status: RunStatus,
    ) -> Result<SeedOutcome, SequencerError>;

    /// Makes the sequencer know producer ids already stored for the run (with their seqs),
    /// so that a batch retried after the sequencer lost its state is answered with its
    /// original seqs instead of new ones. Called before [`Self::seed`]; an id the sequencer
    /// knows already keeps its seq. A no-op where the database itself is the sequencer.
    ///
    /// # Errors
    /// As [`Self::append`].
    async fn restore_ids(&self, run: RunId, ids: Vec<(ProducerId, u64)>) -> Result<(), SequencerError>;

    /// The run's status as the sequencer holds it (ahead of the database while the worker
    /// lags); `None` when it holds no counter for the run (seed it first).
    ///
    /// # Errors
    /// As [`Self::append`].
    async fn run_status(&self, run: RunId) -> Result<Option<RunStatus>, SequencerError>;

    /// Up to `limit` events of the run with `seq > after_seq` still in its history (which
    /// keeps the last events of a run), in seq order; events recorded for another tenant
    /// are not returned.
    ///
    /// # Errors
    /// As [`Self::append`]; `Unexpected` for an entry that cannot be read back.
    async fn history_after(
        &self,
        tenant: TenantId,
        run: RunId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RunEvent>, SequencerError>;
}
