//! Storage of agent runs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_domain::{AgentRun, RunId, TenantId};

use super::RepositoryError;

/// Reads of stored [`AgentRun`]s, scoped to one tenant (writes go through `RunLedger`).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RunRepository: Send + Sync + 'static {
    /// The run `id` of `tenant`, or `None` when it does not exist *or belongs to another
    /// tenant* (the two are indistinguishable by design).
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn get(&self, tenant: TenantId, id: RunId) -> Result<Option<AgentRun>, RepositoryError>;

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
