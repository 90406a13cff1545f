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
use crate::pagination::{Page, PageRequest};
use crate::ports::{EventLog, RunFilter, RunRepository, StepRepository, ToolCallRepository};

/// Read-side use cases of runs.
#[derive(Clone, Debug)]
pub struct RunQueries {
    runs: Arc<dyn RunRepository>,
    steps: Arc<dyn StepRepository>,
    tool_calls: Arc<dyn ToolCallRepository>,
    events: Arc<dyn EventLog>,
    access: RunAccess,
}

impl RunQueries {
    pub fn new(
        runs: Arc<dyn RunRepository>,
        steps: Arc<dyn StepRepository>,
        tool_calls: Arc<dyn ToolCallRepository>,
        events: Arc<dyn EventLog>,
        access: RunAccess,
    ) -> Self {
        Self { runs, steps, tool_calls, events, access }
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

    /// The events of run `id` after `after_seq`, in `seq` order.
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
        Ok(self.events.list_after(ctx.principal.tenant_id, id, after_seq, limit).await?)
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
    use sba_domain::{Principal, Role, TenantId, UserId};
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockEventLog, MockRunRepository, MockStepRepository, MockToolCallRepository};

    fn ctx() -> RequestContext {
        RequestContext {
            principal: Principal {
                tenant_id: TenantId::from_uuid(Uuid::from_u128(1)),
                user_id: UserId::parse("u").unwrap(),
                role: Role::Authenticated,
            },
            ip: None,
            request_id: "r".into(),
            client_request_id: None,
            token: None,
        }
    }

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
        let queries = RunQueries::new(runs, Arc::new(steps), Arc::new(calls), Arc::new(events), access);
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
}
