//! Reading a run's history for a subscription's replay and gap fills: the [`ReplaySource`]
//! that answers a feed's [`HistoryRead`], and [`QueriesReplay`], which reads it as the
//! connection's caller through [`RunQueries`] (persisted events, then those accepted but
//! not persisted yet, without a gap).

use std::fmt;

use async_trait::async_trait;
use sba_domain::events::RunEvent;

use super::subscription::HistoryRead;
use crate::RequestContext;
use crate::ports::LiveEvent;
use crate::runs::{RunQueries, RunServiceError};

/// Why a history read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The run is not visible to the caller (another tenant's, or none).
    #[error("run not found")]
    NotFound,
    #[error("the run history cannot be read")]
    Unexpected(#[source] anyhow::Error),
}

/// Where a subscription's feed reads the run history.
#[async_trait]
pub trait ReplaySource: fmt::Debug + Send + Sync {
    /// Up to `read.limit` events of `read.run` with `seq > read.after_seq`, in seq order,
    /// continuing `after_seq` without a gap; fewer when no more are known yet. Events are
    /// the client JSON the bus carries (`RunEvent::to_client_json`).
    ///
    /// # Errors
    /// [`ReplayError::NotFound`] when the run is not visible to the caller;
    /// [`ReplayError::Unexpected`] when the stores cannot be read.
    async fn read(&self, read: HistoryRead) -> Result<Vec<LiveEvent>, ReplayError>;
}

/// The run history as the connection's caller reads it over REST.
#[derive(Debug, Clone)]
pub struct QueriesReplay {
    queries: RunQueries,
    ctx: RequestContext,
}

impl QueriesReplay {
    pub const fn new(queries: RunQueries, ctx: RequestContext) -> Self {
        Self { queries, ctx }
    }
}

#[async_trait]
impl ReplaySource for QueriesReplay {
    async fn read(&self, read: HistoryRead) -> Result<Vec<LiveEvent>, ReplayError> {
        let events =
            self.queries.recent_events(&self.ctx, read.run, read.after_seq, read.limit).await.map_err(
                |error| match error {
                    RunServiceError::NotFound => ReplayError::NotFound,
                    other => ReplayError::Unexpected(anyhow::Error::new(other)),
                },
            )?;
        events.iter().map(live_event).collect()
    }
}

fn live_event(event: &RunEvent) -> Result<LiveEvent, ReplayError> {
    let json = event.to_client_json().map_err(|error| {
        ReplayError::Unexpected(anyhow::Error::new(error).context("cannot write an event"))
    })?;
    Ok(LiveEvent::new(event.run_id, event.seq, json))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sba_domain::events::EventData;
    use sba_domain::{Principal, Role, RunId, TenantId, UserId};
    use uuid::Uuid;

    use super::*;
    use crate::pagination::{Cursor, Page};
    use crate::ports::{
        MockEventLog, MockEventSequencer, MockRunRepository, MockStepRepository, MockToolCallRepository,
        RepositoryError, RunRepository, SequencerError,
    };
    use crate::runs::RunAccess;
    use crate::testing::{MapCache, TestClock};

    const TENANT: TenantId = TenantId::from_uuid(Uuid::from_u128(1));
    const RUN: RunId = RunId::from_uuid(Uuid::from_u128(9));

    fn ctx() -> RequestContext {
        RequestContext {
            principal: Principal {
                tenant_id: TENANT,
                user_id: UserId::parse("u").unwrap(),
                role: Role::Authenticated,
            },
            ip: None,
            request_id: "ws-1".into(),
            client_request_id: None,
            token: None,
        }
    }

    fn event(seq: u64) -> RunEvent {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        RunEvent::server(RUN, TENANT, seq, EventData::RunStarted, at)
    }

    fn run() -> sba_domain::AgentRun {
        let new = sba_domain::NewRun {
            tenant_id: TENANT,
            user_id: UserId::parse("u").unwrap(),
            agent: sba_domain::AgentName::parse("bot").unwrap(),
            input: serde_json::Value::Null,
            session_id: None,
            metadata: sba_domain::Metadata::default(),
        };
        sba_domain::AgentRun::new(RUN, new, chrono::DateTime::UNIX_EPOCH)
    }

    /// A replay over a run that is `visible` or not, whose database holds `stored` (or
    /// fails) and whose history holds `pending`.
    fn replay(visible: bool, stored: Result<Vec<u64>, ()>, pending: Vec<u64>) -> QueriesReplay {
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(move |_, _| Ok(visible.then(run)));
        let mut log = MockEventLog::new();
        log.expect_list_after().returning(move |_, _, after, limit| match &stored {
            Ok(stored) => {
                let rows = stored.iter().filter(|seq| **seq > after).map(|seq| event(*seq)).collect();
                Ok(Page::from_rows(rows, limit, |e| Cursor::Seq(e.seq)))
            }
            Err(()) => Err(RepositoryError::Unexpected(anyhow::anyhow!("connection reset"))),
        });
        let mut history = MockEventSequencer::new();
        history.expect_history_after().returning(move |_, _, after, limit| {
            Ok(pending.iter().filter(|seq| **seq > after).take(limit).map(|seq| event(*seq)).collect())
        });
        replay_on(runs, log, history)
    }

    /// A replay over these stores.
    fn replay_on(runs: MockRunRepository, log: MockEventLog, history: MockEventSequencer) -> QueriesReplay {
        let runs: Arc<dyn RunRepository> = Arc::new(runs);
        let access =
            RunAccess::new(Arc::clone(&runs), Arc::new(MapCache::default()), Arc::new(TestClock::at(0)));
        let queries = RunQueries::new(
            runs,
            Arc::new(MockStepRepository::new()),
            Arc::new(MockToolCallRepository::new()),
            Arc::new(log),
            Arc::new(history),
            access,
        );
        QueriesReplay::new(queries, ctx())
    }

    #[tokio::test]
    async fn a_read_returns_persisted_then_pending_events_as_the_bus_writes_them() {
        let replay = replay(true, Ok(vec![1, 2, 3]), vec![3, 4, 5]);
        let events = replay.read(HistoryRead { run: RUN, after_seq: 1, limit: 3 }).await.unwrap();
        let expected: Vec<LiveEvent> = [2, 3, 4]
            .into_iter()
            .map(|seq| LiveEvent::new(RUN, seq, event(seq).to_client_json().unwrap()))
            .collect();
        assert_eq!(events, expected);
    }

    #[tokio::test]
    async fn recent_events_come_from_the_history_without_reading_the_database() {
        // The database fails: a read that touched it would be an error.
        let replay = replay(true, Err(()), vec![4, 5, 6, 7]);
        let events = replay.read(HistoryRead { run: RUN, after_seq: 3, limit: 3 }).await.unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6]);
    }

    #[tokio::test]
    async fn a_run_the_caller_cannot_see_is_not_found() {
        let replay = replay(false, Ok(vec![1]), vec![]);
        let read = replay.read(HistoryRead { run: RUN, after_seq: 0, limit: 10 }).await;
        assert!(matches!(read, Err(ReplayError::NotFound)), "{read:?}");
    }

    #[tokio::test]
    async fn a_store_failure_is_unexpected() {
        let replay = replay(true, Err(()), vec![]);
        let read = replay.read(HistoryRead { run: RUN, after_seq: 0, limit: 10 }).await;
        assert!(matches!(read, Err(ReplayError::Unexpected(_))), "{read:?}");
    }

    #[tokio::test]
    async fn a_run_store_failure_while_checking_visibility_is_unexpected_not_not_found() {
        let mut runs = MockRunRepository::new();
        runs.expect_get()
            .times(1)
            .returning(|_, _| Err(RepositoryError::Unexpected(anyhow::anyhow!("timeout"))));
        let mut log = MockEventLog::new();
        log.expect_list_after().never();
        let mut history = MockEventSequencer::new();
        history.expect_history_after().never();
        let read =
            replay_on(runs, log, history).read(HistoryRead { run: RUN, after_seq: 0, limit: 10 }).await;
        assert!(matches!(read, Err(ReplayError::Unexpected(_))), "{read:?}");
    }

    #[tokio::test]
    async fn a_history_outage_answers_the_persisted_events_alone() {
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(|_, _| Ok(Some(run())));
        let mut log = MockEventLog::new();
        log.expect_list_after().times(1).returning(|_, _, _, limit| {
            Ok(Page::from_rows(vec![event(1), event(2)], limit, |e| Cursor::Seq(e.seq)))
        });
        let mut history = MockEventSequencer::new();
        history
            .expect_history_after()
            .times(2)
            .returning(|_, _, _, _| Err(SequencerError::Unavailable(anyhow::anyhow!("connection refused"))));
        let events = replay_on(runs, log, history)
            .read(HistoryRead { run: RUN, after_seq: 0, limit: 10 })
            .await
            .unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    }
}
