//! Storage of agent runs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_domain::{AgentRun, RunId, RunStatus, TenantId};

use super::RepositoryError;

/// Durable storage of [`AgentRun`]s, always scoped to one tenant.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RunRepository: Send + Sync + 'static {
    /// Stores a new run.
    ///
    /// # Errors
    /// `Conflict` when a run with this id exists; `Unexpected` on storage failure.
    async fn insert(&self, run: &AgentRun) -> Result<(), RepositoryError>;

    /// The run `id` of `tenant`, or `None` when it does not exist *or belongs to another
    /// tenant* (the two are indistinguishable by design).
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn get(&self, tenant: TenantId, id: RunId) -> Result<Option<AgentRun>, RepositoryError>;

    /// Writes the lifecycle fields of `run` (status, output, error, timestamps) if and only if
    /// its stored status is still `expected`: a compare-and-set that prevents lost updates
    /// when two nodes change the same run.
    ///
    /// # Errors
    /// `Conflict` when the stored status is no longer `expected`; `NotFound` when the run
    /// does not exist for this tenant; `Unexpected` on storage failure.
    async fn update_lifecycle(&self, run: &AgentRun, expected: RunStatus) -> Result<(), RepositoryError>;

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
