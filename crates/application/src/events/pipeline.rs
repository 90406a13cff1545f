//! [`EventPipeline`]: the ports through which the use cases write a run's events (ADR 0017):
//! the sequencer that orders and records them, the bus that carries them live, and the
//! event log that a lost counter is rebuilt from.

use std::sync::Arc;
use std::time::Duration;

use sba_domain::events::RunEvent;
use sba_domain::{RunId, RunStatus, SessionId, TenantId};

use tokio::sync::Semaphore;

use crate::ports::{EventBus, EventLog, EventSequencer, RepositoryError, SequencerError};

/// When a publish fails, the same events are published again after these delays (until one
/// succeeds). They are in the run's history already, so a late copy costs subscribers
/// nothing (they drop seqs they have) and gives them the run's last events even when no
/// later event would have shown them the gap (ADR 0018, "A failed publish").
const REPUBLISH_DELAYS: [Duration; 3] =
    [Duration::from_millis(100), Duration::from_secs(1), Duration::from_secs(5)];

/// Batches being published again at most; beyond, a failure is only logged and counted.
const MAX_REPUBLISHING: usize = 1_024;

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
    republishing: Arc<Semaphore>,
}

impl EventPipeline {
    pub fn new(sequencer: Arc<dyn EventSequencer>, bus: Arc<dyn EventBus>, log: Arc<dyn EventLog>) -> Self {
        Self { sequencer, bus, log, republishing: Arc::new(Semaphore::new(MAX_REPUBLISHING)) }
    }

    /// Publishes accepted events live, in order (one pipelined round trip on Redis). A
    /// failure is logged and counted (every event of the call, as it may have reached no
    /// channel), never returned: the events are accepted already. The same events are then
    /// published again in the background (`REPUBLISH_DELAYS`, at most `MAX_REPUBLISHING`
    /// batches at once); subscribers that saw a gap meanwhile read it from the history.
    pub async fn publish(&self, events: &[RunEvent], session: Option<SessionId>) {
        let Some(first) = events.first() else { return };
        let Err(error) = self.bus.publish_all(events, session).await else { return };
        metrics::counter!("sba_events_publish_failures_total").increment(events.len() as u64);
        tracing::warn!(
            run_id = %first.run_id,
            events = events.len(),
            error = format!("{error:#}"),
            "publishing accepted events live failed; published again shortly, subscribers fill gaps from the history"
        );
        let Ok(permit) = Arc::clone(&self.republishing).try_acquire_owned() else { return };
        let (bus, events) = (Arc::clone(&self.bus), events.to_vec());
        tokio::spawn(async move {
            let _permit = permit;
            for delay in REPUBLISH_DELAYS {
                tokio::time::sleep(delay).await;
                if bus.publish_all(&events, session).await.is_ok() {
                    metrics::counter!("sba_events_republished_total").increment(events.len() as u64);
                    return;
                }
            }
            if let Some(first) = events.first() {
                tracing::warn!(run_id = %first.run_id, events = events.len(), "gave up publishing accepted events live");
            }
        });
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::Utc;
    use sba_domain::events::EventData;
    use uuid::Uuid;

    use super::*;
    use crate::ports::{
        EventBusError, MockEventBus, MockEventLog, MockEventSequencer, RepositoryError, SeedOutcome,
        SequencerError,
    };

    fn event(seq: u64) -> RunEvent {
        RunEvent {
            run_id: RunId::from_uuid(Uuid::now_v7()),
            tenant_id: TenantId::from_uuid(Uuid::now_v7()),
            seq,
            producer_id: None,
            data: EventData::RunStarted,
            created_at: Utc::now(),
        }
    }

    fn pipeline(bus: MockEventBus) -> EventPipeline {
        EventPipeline::new(Arc::new(MockEventSequencer::new()), Arc::new(bus), Arc::new(MockEventLog::new()))
    }

    /// A bus whose first `failures` publishes fail; counts every call.
    fn flaky_bus(failures: usize, calls: &Arc<AtomicUsize>) -> MockEventBus {
        let mut bus = MockEventBus::new();
        let calls = Arc::clone(calls);
        bus.expect_publish_all().returning(move |events, _| {
            assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [7, 8], "the same events, in order");
            if calls.fetch_add(1, Ordering::SeqCst) < failures {
                Err(EventBusError::Unavailable(anyhow::anyhow!("timeout")))
            } else {
                Ok(())
            }
        });
        bus
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_publish_is_published_again_until_it_succeeds() {
        let calls = Arc::new(AtomicUsize::new(0));
        pipeline(flaky_bus(2, &calls)).publish(&[event(7), event(8)], None).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the first attempt is part of the call");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "again after 100 ms, and after 1 s more, then done");
    }

    #[tokio::test(start_paused = true)]
    async fn publishing_again_gives_up_after_its_last_delay() {
        let calls = Arc::new(AtomicUsize::new(0));
        pipeline(flaky_bus(usize::MAX, &calls)).publish(&[event(7), event(8)], None).await;
        tokio::time::sleep(Duration::from_mins(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1 + REPUBLISH_DELAYS.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_publish_is_not_repeated() {
        let calls = Arc::new(AtomicUsize::new(0));
        pipeline(flaky_bus(0, &calls)).publish(&[event(7), event(8)], None).await;
        tokio::time::sleep(Duration::from_mins(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    const RUN: RunId = RunId::from_uuid(Uuid::from_u128(42));
    const TENANT: TenantId = TenantId::from_uuid(Uuid::from_u128(1));

    /// An event log holding seq 9 and no producer id for the run.
    fn log_holding_seq_9() -> MockEventLog {
        let mut log = MockEventLog::new();
        log.expect_last_seq().returning(|_, _| Ok(Some(9)));
        log.expect_producer_ids().returning(|_, _| Ok(Vec::new()));
        log
    }

    fn seeding(sequencer: MockEventSequencer, log: MockEventLog) -> EventPipeline {
        EventPipeline::new(Arc::new(sequencer), Arc::new(MockEventBus::new()), Arc::new(log))
    }

    #[tokio::test]
    async fn a_store_outage_reading_the_stored_seq_fails_the_seed_before_the_sequencer_is_touched() {
        let mut log = MockEventLog::new();
        log.expect_last_seq().returning(|_, _| Err(RepositoryError::Unexpected(anyhow::anyhow!("down"))));
        log.expect_producer_ids().never();
        let mut sequencer = MockEventSequencer::new();
        sequencer.expect_restore_ids().never();
        sequencer.expect_seed().never();
        let failed = seeding(sequencer, log).seed(TENANT, RUN, RunStatus::InProgress).await;
        assert!(matches!(failed, Err(SeedError::Store(RepositoryError::Unexpected(_)))), "{failed:?}");
    }

    #[tokio::test]
    async fn a_store_outage_reading_the_producer_ids_fails_the_seed_before_any_id_is_restored() {
        let mut log = MockEventLog::new();
        log.expect_last_seq().returning(|_, _| Ok(Some(9)));
        log.expect_producer_ids().returning(|_, _| Err(RepositoryError::Unexpected(anyhow::anyhow!("down"))));
        let mut sequencer = MockEventSequencer::new();
        sequencer.expect_restore_ids().never();
        sequencer.expect_seed().never();
        let failed = seeding(sequencer, log).seed(TENANT, RUN, RunStatus::InProgress).await;
        assert!(matches!(failed, Err(SeedError::Store(RepositoryError::Unexpected(_)))), "{failed:?}");
    }

    #[tokio::test]
    async fn ids_the_sequencer_cannot_restore_leave_the_counter_unset() {
        // A counter set without the stored ids would give a retried batch new seqs.
        let mut sequencer = MockEventSequencer::new();
        sequencer
            .expect_restore_ids()
            .returning(|_, _| Err(SequencerError::Unavailable(anyhow::anyhow!("timeout"))));
        sequencer.expect_seed().never();
        let failed = seeding(sequencer, log_holding_seq_9()).seed(TENANT, RUN, RunStatus::InProgress).await;
        assert!(matches!(failed, Err(SeedError::Sequencer(SequencerError::Unavailable(_)))), "{failed:?}");
    }

    #[tokio::test]
    async fn a_sequencer_failure_while_seeding_is_returned_as_the_sequencers() {
        for (error, unavailable) in [
            (SequencerError::Unavailable(anyhow::anyhow!("timeout")), true),
            (SequencerError::Unexpected(anyhow::anyhow!("bad reply")), false),
        ] {
            let mut sequencer = MockEventSequencer::new();
            sequencer.expect_restore_ids().times(1).returning(|_, _| Ok(()));
            sequencer.expect_seed().times(1).return_once(move |_, _, _| Err(error));
            let failed =
                seeding(sequencer, log_holding_seq_9()).seed(TENANT, RUN, RunStatus::InProgress).await;
            match failed {
                Err(SeedError::Sequencer(SequencerError::Unavailable(_))) => assert!(unavailable),
                Err(SeedError::Sequencer(SequencerError::Unexpected(_))) => assert!(!unavailable),
                other => panic!("expected the sequencer's error, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_counter_another_node_seeded_meanwhile_is_kept_and_not_an_error() {
        let mut sequencer = MockEventSequencer::new();
        sequencer.expect_restore_ids().times(1).returning(|_, _| Ok(()));
        sequencer
            .expect_seed()
            .withf(|run, seq, status| *run == RUN && *seq == 9 && *status == RunStatus::InProgress)
            .times(1)
            .returning(|_, _, _| Ok(SeedOutcome::Kept { seq: 12 }));
        seeding(sequencer, log_holding_seq_9()).seed(TENANT, RUN, RunStatus::InProgress).await.unwrap();
    }
}
