//! The consumer side of the durable event queue (ADR 0017, "Worker: partitions leased,
//! entries acknowledged after commit"): the sequencer records every accepted batch as one
//! entry on its run's partition queue; a worker takes entries from the partitions it holds
//! a lease on, applies them, and acknowledges them after its commit. An entry that keeps
//! failing goes to the partition's dead letters, from where it can be replayed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_domain::events::RunEvent;
use sba_domain::{RunId, TenantId};

/// One queue entry: one batch of one run, as the sequencer recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEntry {
    /// The partition whose queue holds the entry.
    pub partition: u16,
    /// The entry's id in its partition queue (what [`EventQueue::ack`] acknowledges).
    pub entry_id: String,
    /// When the entry was added to its queue, by the queue's clock (a replayed dead letter
    /// is a new entry, added at its replay): the start of the worker's lag.
    pub queued_at: DateTime<Utc>,
    pub tenant: TenantId,
    pub run: RunId,
    /// The batch's events, in seq order.
    pub events: Vec<RunEvent>,
    /// How many times the entry was delivered, this delivery included (1 the first time):
    /// the caller dead-letters an entry once this passes its limit.
    pub deliveries: u64,
    /// The W3C `traceparent` of the span that accepted the batch, when traces were exported
    /// then: the worker's span links to it.
    pub traceparent: Option<String>,
}

/// An entry in a partition's dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: u16,
    /// The id in the dead-letter stream.
    pub dead_letter_id: String,
    /// The id the entry had in its partition queue.
    pub entry_id: String,
    pub tenant: TenantId,
    pub run: RunId,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Why the caller gave it up (never event data).
    pub reason: String,
    /// Its delivery count when it was given up.
    pub attempts: u64,
}

/// Why the queue gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store (Redis) is unreachable or did not answer in time.
    #[error("the event queue is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The queue as one worker (one consumer) sees it.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait EventQueue: std::fmt::Debug + Send + Sync + 'static {
    /// Renews the leases this consumer holds, takes free partitions, and returns up to
    /// `max_entries` entries of its leased partitions: first those pending (delivered and
    /// not acknowledged) longer than the claim idle time, then new ones, each partition's in
    /// queue order (so each run's in seq order). Returns at once, possibly with none; call
    /// it more often than the lease TTL, or the leases lapse.
    ///
    /// # Errors
    /// [`QueueError::Unavailable`] when the store cannot be reached in time,
    /// [`QueueError::Unexpected`] for anything else (an entry that cannot be read).
    async fn next_batch(&self, max_entries: usize) -> Result<Vec<QueuedEntry>, QueueError>;

    /// Acknowledges entries whose events the caller has committed: they are not delivered
    /// again.
    ///
    /// # Errors
    /// As [`Self::next_batch`].
    async fn ack(&self, entries: &[QueuedEntry]) -> Result<(), QueueError>;

    /// Moves an entry to its partition's dead letters with `reason` and its delivery count,
    /// and acknowledges it, in one step.
    ///
    /// # Errors
    /// As [`Self::next_batch`]; `Unexpected` when the entry is no longer in its queue.
    async fn dead_letter(&self, entry: &QueuedEntry, reason: &str) -> Result<(), QueueError>;

    /// Up to `limit` dead letters, partition by partition, each partition's oldest first.
    ///
    /// # Errors
    /// As [`Self::next_batch`].
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;

    /// Puts the dead letters back on their partition queues as new entries, in the order
    /// they were dead-lettered (only those of `run` when given), and removes them from the
    /// dead letters. Returns how many were replayed.
    ///
    /// # Errors
    /// As [`Self::next_batch`].
    async fn replay_dead_letters(&self, run: Option<RunId>) -> Result<u64, QueueError>;

    /// Gives up this consumer's leases (at shutdown) so other workers take its partitions
    /// at once rather than after the lease TTL. Its pending entries are claimed by them
    /// after the claim idle time.
    ///
    /// # Errors
    /// As [`Self::next_batch`].
    async fn release(&self) -> Result<(), QueueError>;
}
