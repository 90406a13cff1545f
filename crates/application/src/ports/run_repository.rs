//! Storage of agent runs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_domain::{AgentName, AgentRun, RunId, RunStatus, SessionId, TenantId};

use super::RepositoryError;
use crate::pagination::{Page, PageRequest};

/// Which runs a listing returns; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub agent: Option<AgentName>,
    pub session_id: Option<SessionId>,
}

/// Reads of stored [`AgentRun`]s, scoped to one tenant (writes go through `RunLedger`).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RunRepository: std::fmt::Debug + Send + Sync + 'static {
    /// The run `id` of `tenant`, or `None` when it does not exist *or belongs to another
    /// tenant* (the two are indistinguishable by design).
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn get(&self, tenant: TenantId, id: RunId) -> Result<Option<AgentRun>, RepositoryError>;

    /// One page of the runs of `tenant` matching `filter`, newest first (by creation time,
    /// then id), resuming after a `Cursor::Time` of a previous page.
    ///
    /// # Errors
    /// `Unexpected` on storage failure or a cursor of another listing.
    async fn list(
        &self,
        tenant: TenantId,
        filter: RunFilter,
        page: PageRequest,
    ) -> Result<Page<AgentRun>, RepositoryError>;

    /// Runs of *every* tenant that have not ended and were created before `created_before`,
    /// oldest first, at most `limit`. Platform work only (the run-expiry sweep of
    /// `sba worker`); never used to serve a tenant's request.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn list_overdue(
        &self,
        created_before: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<AgentRun>, RepositoryError>;
}
