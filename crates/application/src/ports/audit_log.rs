//! The audit trail of mutations.

use async_trait::async_trait;
use sba_domain::{AuditEntry, TenantId};

use super::RepositoryError;
use crate::pagination::{Page, PageRequest};

/// Append-only record of who attempted which mutation and how it ended.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AuditLog: std::fmt::Debug + Send + Sync + 'static {
    /// Appends one entry.
    ///
    /// # Errors
    /// `Unexpected` on storage failure (entries are never rejected for their content).
    async fn record(&self, entry: &AuditEntry) -> Result<(), RepositoryError>;

    /// One page of the entries of `tenant`, newest first, resuming after a `Cursor::Time`.
    ///
    /// # Errors
    /// `Unexpected` on storage failure or a cursor of another listing.
    async fn list(&self, tenant: TenantId, page: PageRequest) -> Result<Page<AuditEntry>, RepositoryError>;
}
