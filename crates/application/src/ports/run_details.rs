//! Reads of what happened inside a run: its steps, tool calls and events.

use async_trait::async_trait;
use sba_domain::events::{ProducerId, RunEvent};
use sba_domain::steps::{Step, ToolCall};
use sba_domain::{RunId, TenantId};

use super::RepositoryError;
use crate::pagination::{Page, PageRequest};

/// The steps of a run, oldest first (by the `seq` of the event that created each).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait StepRepository: std::fmt::Debug + Send + Sync + 'static {
    /// One page of the steps of run `run_id` of `tenant` (empty for another tenant's run).
    ///
    /// # Errors
    /// `Unexpected` on storage failure or a cursor of another listing.
    async fn list(
        &self,
        tenant: TenantId,
        run_id: RunId,
        page: PageRequest,
    ) -> Result<Page<Step>, RepositoryError>;
}

/// The tool calls of a run, oldest first (by the `seq` of the event that started each).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ToolCallRepository: std::fmt::Debug + Send + Sync + 'static {
    /// One page of the tool calls of run `run_id` of `tenant` (empty for another tenant's run).
    ///
    /// # Errors
    /// `Unexpected` on storage failure or a cursor of another listing.
    async fn list(
        &self,
        tenant: TenantId,
        run_id: RunId,
        page: PageRequest,
    ) -> Result<Page<ToolCall>, RepositoryError>;
}

/// The per-run, gapless event log.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait EventLog: std::fmt::Debug + Send + Sync + 'static {
    /// Events of run `run_id` of `tenant` with `seq > after_seq`, in `seq` order, at most
    /// `limit` (empty for another tenant's run).
    ///
    /// # Errors
    /// `Unexpected` on storage failure or an unreadable stored event.
    async fn list_after(
        &self,
        tenant: TenantId,
        run_id: RunId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Page<RunEvent>, RepositoryError>;

    /// The highest `seq` stored for run `run_id` of `tenant`; `None` when it has no event (or
    /// belongs to another tenant).
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn last_seq(&self, tenant: TenantId, run_id: RunId) -> Result<Option<u64>, RepositoryError>;

    /// Every producer id stored for run `run_id` of `tenant`, with its seq (the server's own
    /// events have none), in seq order.
    ///
    /// # Errors
    /// `Unexpected` on storage failure or an unreadable stored id.
    async fn producer_ids(
        &self,
        tenant: TenantId,
        run_id: RunId,
    ) -> Result<Vec<(ProducerId, u64)>, RepositoryError>;
}
