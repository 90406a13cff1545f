//! The audit trail of mutations.

use async_trait::async_trait;
use sba_domain::AuditEntry;

use super::RepositoryError;

/// Append-only record of who attempted which mutation and how it ended.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends one entry.
    ///
    /// # Errors
    /// `Unexpected` on storage failure (entries are never rejected for their content).
    async fn record(&self, entry: &AuditEntry) -> Result<(), RepositoryError>;
}
