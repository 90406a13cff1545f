//! [`RunQueries`]: reading runs and what happened inside them, always within the caller's
//! tenant.

use std::sync::Arc;

use sba_domain::AgentRun;
use sba_domain::RunId;
use sba_domain::events::RunEvent;
use sba_domain::steps::{Step, ToolCall};

use super::{RunAccess, RunServiceError};
use crate::RequestContext;
use crate::authorization::{Action, authorize};
use crate::pagination::Cursor;
use crate::pagination::{Page, PageRequest};
use crate::ports::{EventLog, EventSequencer, RunFilter, RunRepository, StepRepository, ToolCallRepository};

/// Read-side use cases of runs.
#[derive(Clone, Debug)]
pub struct RunQueries {
    runs: Arc<dyn RunRepository>,
    steps: Arc<dyn StepRepository>,
    tool_calls: Arc<dyn ToolCallRepository>,
    events: Arc<dyn EventLog>,
    /// The run history of events accepted but maybe not persisted yet.
    history: Arc<dyn EventSequencer>,
    access: RunAccess,
}

impl RunQueries {
    pub fn new(
        runs: Arc<dyn RunRepository>,
        steps: Arc<dyn StepRepository>,
        tool_calls: Arc<dyn ToolCallRepository>,
        events: Arc<dyn EventLog>,
        history: Arc<dyn EventSequencer>,
        access: RunAccess,
    ) -> Self {
        Self { runs, steps, tool_calls, events, history, access }
    }

    /// The caller's tenant's runs matching `filter`, newest first.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    pub async fn list(
        &self,
        ctx: &RequestContext,
        filter: RunFilter,
        page: PageRequest,
    ) -> Result<Page<AgentRun>, RunServiceError> {
        authorize(&ctx.principal, Action::ReadRuns)?;
        Ok(self.runs.list(ctx.principal.tenant_id, filter, page).await?)
    }

    /// The steps of run `id`, oldest first.
    ///
    /// # Errors
    /// `NotFound` when the run does not exist or belongs to another tenant.
    pub async fn steps(
        &self,
        ctx: &RequestContext,
        id: RunId,
        page: PageRequest,
    ) -> Result<Page<Step>, RunServiceError> {
        self.ensure_visible(ctx, id).await?;
        Ok(self.steps.list(ctx.principal.tenant_id, id, page).await?)
    }

    /// The tool calls of run `id`, oldest first.
    ///
    /// # Errors
    /// `NotFound` when the run does not exist or belongs to another tenant.
    pub async fn tool_calls(
        &self,
        ctx: &RequestContext,
        id: RunId,
        page: PageRequest,
    ) -> Result<Page<ToolCall>, RunServiceError> {
        self.ensure_visible(ctx, id).await?;
        Ok(self.tool_calls.list(ctx.principal.tenant_id, id, page).await?)
    }

    /// The events of run `id` after `after_seq`, in `seq` order: those persisted, then,
    /// when the page is not full, those accepted but not persisted yet, from the run's
    /// history (ADR 0017, "Reads without a gap"). History events are only added when they
    /// continue the persisted ones without a gap; when the history cannot be read, the page
    /// holds the persisted events only (the reader asks again from its last seq).
    ///
    /// # Errors
    /// `NotFound` when the run does not exist or belongs to another tenant.
    pub async fn events(
        &self,
        ctx: &RequestContext,
        id: RunId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Page<RunEvent>, RunServiceError> {
        self.ensure_visible(ctx, id).await?;
        self.read_events(ctx, id, after_seq, limit).await
    }

    /// As [`Self::events`] (without a cursor), reading the run's history first: what a
    /// stream subscription asks for to fill a gap or resume is recent, so the history holds
    /// it (and PostgreSQL maybe not yet). The persisted events are read only when the
    /// history does not continue `after_seq` (trimmed, expired, a replay from far back, or
    /// nothing newer yet) or cannot be read.
    ///
    /// # Errors
    /// `NotFound` when the run does not exist or belongs to another tenant.
    pub async fn recent_events(
        &self,
        ctx: &RequestContext,
        id: RunId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<RunEvent>, RunServiceError> {
        self.ensure_visible(ctx, id).await?;
        let tenant = ctx.principal.tenant_id;
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        if let Ok(recent) = self.history.history_after(tenant, id, after_seq, wanted).await
            && recent.first().is_some_and(|first| first.seq == after_seq + 1)
        {
            return Ok((after_seq + 1..)
                .zip(recent)
                .take_while(|(expected, event)| event.seq == *expected)
                .map(|(_, event)| event)
                .take(wanted)
                .collect());
        }
        Ok(self.read_events(ctx, id, after_seq, limit).await?.items)
    }

    /// [`Self::events`] once the run is known to be visible.
    async fn read_events(
        &self,
        ctx: &RequestContext,
        id: RunId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Page<RunEvent>, RunServiceError> {
        let tenant = ctx.principal.tenant_id;
        let mut page = self.events.list_after(tenant, id, after_seq, limit).await?;
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        if page.next.is_some() || page.items.len() >= wanted {
            return Ok(page);
        }
        let last = page.items.last().map_or(after_seq, |event| event.seq);
        let room = wanted - page.items.len();
        let pending = match self.history.history_after(tenant, id, last, room.saturating_add(1)).await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(run_id = %id, error = format!("{error:#}"), "reading the run history failed; answering persisted events only");
                return Ok(page);
            }
        };
        for (expected, event) in (last + 1..).zip(pending) {
            if event.seq != expected {
                break;
            }
            if page.items.len() == wanted {
                page.next = Some(Cursor::Seq(expected - 1));
                break;
            }
            page.items.push(event);
        }
        Ok(page)
    }

    /// Whether the caller may read run `id`; a run of another tenant is reported exactly
    /// like a missing one.
    async fn ensure_visible(&self, ctx: &RequestContext, id: RunId) -> Result<(), RunServiceError> {
        authorize(&ctx.principal, Action::ReadRuns)?;
        if self.access.visible(ctx.principal.tenant_id, id).await? {
            Ok(())
        } else {
            Err(RunServiceError::NotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use sba_domain::{TenantId, UserId};
    use uuid::Uuid;

    use super::*;
    use crate::ports::{
        MockEventLog, MockRunRepository, MockStepRepository, MockToolCallRepository, RepositoryError,
        SequencerError,
    };

    // User `u` (authenticated) of tenant 1.
    use crate::testing::user_context as ctx;

    #[tokio::test]
    async fn details_of_an_invisible_run_are_not_found_and_never_listed() {
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(|_, _| Ok(None));
        let mut steps = MockStepRepository::new();
        steps.expect_list().never();
        let mut calls = MockToolCallRepository::new();
        calls.expect_list().never();
        let mut events = MockEventLog::new();
        events.expect_list_after().never();
        let runs: Arc<dyn RunRepository> = Arc::new(runs);
        let access = RunAccess::new(
            Arc::clone(&runs),
            Arc::new(crate::testing::MapCache::default()),
            Arc::new(crate::testing::TestClock::at(0)),
        );
        let mut history = crate::ports::MockEventSequencer::new();
        history.expect_history_after().never();
        let queries = RunQueries::new(
            runs,
            Arc::new(steps),
            Arc::new(calls),
            Arc::new(events),
            Arc::new(history),
            access,
        );
        let id = RunId::from_uuid(Uuid::from_u128(9));
        assert!(matches!(
            queries.steps(&ctx(), id, PageRequest::first(5)).await,
            Err(RunServiceError::NotFound)
        ));
        assert!(matches!(
            queries.tool_calls(&ctx(), id, PageRequest::first(5)).await,
            Err(RunServiceError::NotFound)
        ));
        assert!(matches!(queries.events(&ctx(), id, 0, 5).await, Err(RunServiceError::NotFound)));
    }

    fn event(seq: u64) -> RunEvent {
        RunEvent {
            run_id: RunId::from_uuid(Uuid::from_u128(9)),
            tenant_id: TenantId::from_uuid(Uuid::from_u128(1)),
            seq,
            producer_id: Some(format!("p{seq}")),
            data: sba_domain::events::EventData::RunStarted,
            created_at: chrono::Utc::now(),
        }
    }

    /// Queries over a visible run whose database holds `stored` and whose history holds
    /// `pending`.
    fn queries_over(stored: Vec<u64>, pending: Vec<u64>) -> RunQueries {
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(|_, _| {
            Ok(Some(sba_domain::AgentRun::new(
                RunId::from_uuid(Uuid::from_u128(9)),
                sba_domain::runs::NewRun {
                    tenant_id: TenantId::from_uuid(Uuid::from_u128(1)),
                    user_id: UserId::parse("u").unwrap(),
                    agent: sba_domain::AgentName::parse("bot").unwrap(),
                    input: serde_json::Value::Null,
                    session_id: None,
                    metadata: sba_domain::Metadata::default(),
                },
                chrono::Utc::now(),
            )))
        });
        let mut events = MockEventLog::new();
        events.expect_list_after().returning(move |_, _, after, limit| {
            let rows = stored.iter().filter(|s| **s > after).map(|s| event(*s)).collect();
            Ok(Page::from_rows(rows, limit, |e| Cursor::Seq(e.seq)))
        });
        let mut history = crate::ports::MockEventSequencer::new();
        history.expect_history_after().returning(move |_, _, after, limit| {
            Ok(pending.iter().filter(|s| **s > after).take(limit).map(|s| event(*s)).collect())
        });
        let runs: Arc<dyn RunRepository> = Arc::new(runs);
        let access = RunAccess::new(
            Arc::clone(&runs),
            Arc::new(crate::testing::MapCache::default()),
            Arc::new(crate::testing::TestClock::at(0)),
        );
        RunQueries::new(
            runs,
            Arc::new(MockStepRepository::new()),
            Arc::new(MockToolCallRepository::new()),
            Arc::new(events),
            Arc::new(history),
            access,
        )
    }

    fn seqs(page: &Page<RunEvent>) -> Vec<u64> {
        page.items.iter().map(|e| e.seq).collect()
    }

    #[tokio::test]
    async fn events_not_persisted_yet_follow_the_persisted_ones_from_the_history_without_a_gap() {
        let id = RunId::from_uuid(Uuid::from_u128(9));
        // The history overlaps what is persisted (the worker lags by three events).
        let queries = queries_over(vec![1, 2, 3], vec![2, 3, 4, 5, 6]);
        let all = queries.events(&ctx(), id, 0, 10).await.unwrap();
        assert_eq!((seqs(&all), all.next), (vec![1, 2, 3, 4, 5, 6], None));
        let page = queries.events(&ctx(), id, 0, 4).await.unwrap();
        assert_eq!((seqs(&page), page.next), (vec![1, 2, 3, 4], Some(Cursor::Seq(4))));
        let rest = queries.events(&ctx(), id, 4, 4).await.unwrap();
        assert_eq!((seqs(&rest), rest.next), (vec![5, 6], None));
    }

    #[tokio::test]
    async fn history_that_does_not_continue_the_persisted_events_is_left_out() {
        // Seqs 4 and 5 were trimmed from the history before the worker stored them.
        let queries = queries_over(vec![1, 2, 3], vec![6, 7]);
        let page = queries.events(&ctx(), RunId::from_uuid(Uuid::from_u128(9)), 0, 10).await.unwrap();
        assert_eq!(seqs(&page), [1, 2, 3], "never a gap: the reader asks again from seq 3");
    }

    const RUN: RunId = RunId::from_uuid(Uuid::from_u128(9));

    fn outage() -> RepositoryError {
        RepositoryError::Unexpected(anyhow::anyhow!("connection reset"))
    }

    /// A repository where run 9 is visible to the caller's tenant.
    fn runs_holding_run_9() -> MockRunRepository {
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(|tenant, id| {
            Ok(Some(sba_domain::AgentRun::new(
                id,
                sba_domain::runs::NewRun {
                    tenant_id: tenant,
                    user_id: UserId::parse("u").unwrap(),
                    agent: sba_domain::AgentName::parse("bot").unwrap(),
                    input: serde_json::Value::Null,
                    session_id: None,
                    metadata: sba_domain::Metadata::default(),
                },
                chrono::Utc::now(),
            )))
        });
        runs
    }

    /// Queries over these ports; visibility is read through `runs` (cached in a map).
    /// Queries of run 9 that read only its events (`events`) and its history (`history`).
    fn event_queries(events: MockEventLog, history: crate::ports::MockEventSequencer) -> RunQueries {
        queries_with(
            runs_holding_run_9(),
            MockStepRepository::new(),
            MockToolCallRepository::new(),
            events,
            history,
        )
    }

    fn queries_with(
        runs: MockRunRepository,
        steps: MockStepRepository,
        tool_calls: MockToolCallRepository,
        events: MockEventLog,
        history: crate::ports::MockEventSequencer,
    ) -> RunQueries {
        let runs: Arc<dyn RunRepository> = Arc::new(runs);
        let access = RunAccess::new(
            Arc::clone(&runs),
            Arc::new(crate::testing::MapCache::default()),
            Arc::new(crate::testing::TestClock::at(0)),
        );
        RunQueries::new(
            runs,
            Arc::new(steps),
            Arc::new(tool_calls),
            Arc::new(events),
            Arc::new(history),
            access,
        )
    }

    /// An event log holding seqs 1 to 3 of run 9.
    fn log_holding_1_to_3() -> MockEventLog {
        let mut events = MockEventLog::new();
        events.expect_list_after().returning(|_, _, after, limit| {
            let rows = (after + 1..=3).map(event).collect();
            Ok(Page::from_rows(rows, limit, |e| Cursor::Seq(e.seq)))
        });
        events
    }

    #[tokio::test]
    async fn a_full_page_or_one_that_says_more_follow_is_answered_without_reading_the_history() {
        let mut history = crate::ports::MockEventSequencer::new();
        history.expect_history_after().never();
        let queries = event_queries(log_holding_1_to_3(), history);
        let full = queries.events(&ctx(), RUN, 0, 3).await.unwrap();
        assert_eq!((seqs(&full), full.next), (vec![1, 2, 3], None));

        // A store whose pages may be shorter than asked: its cursor says more are stored.
        let mut events = MockEventLog::new();
        events
            .expect_list_after()
            .returning(|_, _, _, _| Ok(Page { items: vec![event(1), event(2)], next: Some(Cursor::Seq(2)) }));
        let mut history = crate::ports::MockEventSequencer::new();
        history.expect_history_after().never();
        let queries = event_queries(events, history);
        let short = queries.events(&ctx(), RUN, 0, 5).await.unwrap();
        assert_eq!((seqs(&short), short.next), (vec![1, 2], Some(Cursor::Seq(2))));
    }

    #[tokio::test]
    async fn the_history_is_asked_for_the_room_left_in_the_page_plus_one_to_tell_whether_more_follow() {
        let mut history = crate::ports::MockEventSequencer::new();
        history
            .expect_history_after()
            .withf(|_, run, after, limit| *run == RUN && *after == 3 && *limit == 3)
            .times(1)
            .returning(|_, _, _, _| Ok(vec![event(4), event(5), event(6)]));
        let queries = event_queries(log_holding_1_to_3(), history);
        let page = queries.events(&ctx(), RUN, 0, 5).await.unwrap();
        assert_eq!((seqs(&page), page.next), (vec![1, 2, 3, 4, 5], Some(Cursor::Seq(5))));
    }

    fn unreadable_history() -> crate::ports::MockEventSequencer {
        let mut history = crate::ports::MockEventSequencer::new();
        history
            .expect_history_after()
            .returning(|_, _, _, _| Err(SequencerError::Unavailable(anyhow::anyhow!("timeout"))));
        history
    }

    #[tokio::test]
    async fn a_store_outage_while_listing_runs_is_unexpected() {
        let mut runs = MockRunRepository::new();
        runs.expect_list()
            .withf(|tenant, _, _| *tenant == ctx().principal.tenant_id)
            .times(1)
            .returning(|_, _, _| Err(outage()));
        let queries = queries_with(
            runs,
            MockStepRepository::new(),
            MockToolCallRepository::new(),
            MockEventLog::new(),
            crate::ports::MockEventSequencer::new(),
        );
        let failed = queries.list(&ctx(), RunFilter::default(), PageRequest::first(5)).await;
        assert!(matches!(failed, Err(RunServiceError::Unexpected(_))), "{failed:?}");
    }

    #[tokio::test]
    async fn a_store_outage_while_checking_visibility_is_unexpected_not_not_found_and_reads_no_detail() {
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(|_, _| Err(outage()));
        let mut steps = MockStepRepository::new();
        steps.expect_list().never();
        let mut calls = MockToolCallRepository::new();
        calls.expect_list().never();
        let mut events = MockEventLog::new();
        events.expect_list_after().never();
        let mut history = crate::ports::MockEventSequencer::new();
        history.expect_history_after().never();
        let queries = queries_with(runs, steps, calls, events, history);
        let answers = [
            queries.steps(&ctx(), RUN, PageRequest::first(5)).await.err(),
            queries.tool_calls(&ctx(), RUN, PageRequest::first(5)).await.err(),
            queries.events(&ctx(), RUN, 0, 5).await.err(),
            queries.recent_events(&ctx(), RUN, 0, 5).await.err(),
        ];
        for answer in answers {
            assert!(matches!(answer, Some(RunServiceError::Unexpected(_))), "{answer:?}");
        }
    }

    #[tokio::test]
    async fn a_store_outage_while_listing_steps_or_tool_calls_is_unexpected() {
        let mut steps = MockStepRepository::new();
        steps.expect_list().times(1).returning(|_, _, _| Err(outage()));
        let mut calls = MockToolCallRepository::new();
        calls.expect_list().times(1).returning(|_, _, _| Err(outage()));
        let queries = queries_with(
            runs_holding_run_9(),
            steps,
            calls,
            MockEventLog::new(),
            crate::ports::MockEventSequencer::new(),
        );
        let failed = queries.steps(&ctx(), RUN, PageRequest::first(5)).await;
        assert!(matches!(failed, Err(RunServiceError::Unexpected(_))), "{failed:?}");
        let failed = queries.tool_calls(&ctx(), RUN, PageRequest::first(5)).await;
        assert!(matches!(failed, Err(RunServiceError::Unexpected(_))), "{failed:?}");
    }

    #[tokio::test]
    async fn a_store_outage_while_reading_events_is_unexpected_and_the_history_is_not_read() {
        let mut events = MockEventLog::new();
        events.expect_list_after().times(1).returning(|_, _, _, _| Err(outage()));
        let mut history = crate::ports::MockEventSequencer::new();
        history.expect_history_after().never();
        let queries = event_queries(events, history);
        let failed = queries.events(&ctx(), RUN, 0, 10).await;
        assert!(matches!(failed, Err(RunServiceError::Unexpected(_))), "{failed:?}");
    }

    #[tokio::test]
    async fn an_unreadable_history_answers_the_persisted_events_only() {
        let queries = event_queries(log_holding_1_to_3(), unreadable_history());
        let page = queries.events(&ctx(), RUN, 0, 10).await.unwrap();
        assert_eq!((seqs(&page), page.next), (vec![1, 2, 3], None));
    }

    #[tokio::test]
    async fn recent_events_fall_back_to_the_persisted_events_when_the_history_cannot_be_read() {
        let queries = event_queries(log_holding_1_to_3(), unreadable_history());
        let recent = queries.recent_events(&ctx(), RUN, 1, 10).await.unwrap();
        assert_eq!(recent.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    }
}
