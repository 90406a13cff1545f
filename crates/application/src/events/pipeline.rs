//! [`EventPipeline`]: the ports through which the use cases write a run's events (ADR 0017):
//! the sequencer that orders and records them, the bus that carries them live, and the
//! event log that a lost counter is rebuilt from.

use std::sync::Arc;

use sba_domain::events::RunEvent;
use sba_domain::{RunId, RunStatus, SessionId, TenantId};

use crate::ports::{EventBus, EventLog, EventSequencer, RepositoryError, SequencerError};

/// Why the pipeline could not rebuild a run's counter.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Sequencer(#[from] SequencerError),
    #[error(transparent)]
    Store(#[from] RepositoryError),
}

/// The event pipeline's ports, shared by the use cases that write run events.
#[derive(Debug, Clone)]
pub struct EventPipeline {
    pub sequencer: Arc<dyn EventSequencer>,
    pub bus: Arc<dyn EventBus>,
    pub log: Arc<dyn EventLog>,
}

impl EventPipeline {
    pub fn new(sequencer: Arc<dyn EventSequencer>, bus: Arc<dyn EventBus>, log: Arc<dyn EventLog>) -> Self {
        Self { sequencer, bus, log }
    }

    /// Publishes accepted events live, in order (one pipelined round trip on Redis). A
    /// failure is logged and counted (every event of the call, as it may have reached no
    /// channel), never returned: the events are accepted already, and subscribers that miss
    /// one resume from the run's history.
    pub async fn publish(&self, events: &[RunEvent], session: Option<SessionId>) {
        let Some(first) = events.first() else { return };
        if let Err(error) = self.bus.publish_all(events, session).await {
            metrics::counter!("sba_events_publish_failures_total").increment(events.len() as u64);
            tracing::warn!(
                run_id = %first.run_id,
                events = events.len(),
                error = format!("{error:#}"),
                "publishing accepted events live failed; subscribers resume from the history"
            );
        }
    }

    /// Rebuilds a lost counter from what the database holds (ADR 0017, "Seeding a lost
    /// counter": never below a seq the history or the database has), with the run's stored
    /// status and its stored producer ids (so a retried batch keeps its seqs); a counter
    /// another node seeded meanwhile is kept.
    ///
    /// # Errors
    /// When the sequencer or the event log fails.
    pub async fn seed(
        &self,
        tenant: TenantId,
        run: RunId,
        stored_status: RunStatus,
    ) -> Result<(), SeedError> {
        let last_seq = self.log.last_seq(tenant, run).await?.unwrap_or(0);
        // The ids first: once the counter exists, other nodes append, and must find them.
        let ids = self.log.producer_ids(tenant, run).await?;
        let restored = ids.len();
        self.sequencer.restore_ids(run, ids).await?;
        let outcome = self.sequencer.seed(run, last_seq, stored_status).await?;
        tracing::info!(run_id = %run, stored_seq = last_seq, restored_ids = restored, ?outcome, "seeded the run's event counter");
        Ok(())
    }
}
