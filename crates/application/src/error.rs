//! Errors shared by use cases whose failures mean the same thing to their callers.

use crate::authorization::Denied;
use crate::ports::RepositoryError;

/// What can go wrong in a use case on one record of the caller's tenant (a session, a
/// knowledge document).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No such record for the caller's tenant, including records of other tenants (which
    /// must look exactly like missing ones).
    #[error("not found")]
    NotFound,
    /// The permission matrix refuses the caller this action on the tenant's records (for
    /// example a user writing the knowledge base).
    #[error(transparent)]
    Forbidden(#[from] Denied),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<RepositoryError> for RecordError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::NotFound => Self::NotFound,
            other => Self::Unexpected(anyhow::Error::new(other).context("tenant data store")),
        }
    }
}

/// What can go wrong in a read reserved to administrators (the tenant's audit trail, the
/// recorded system health).
#[derive(Debug, thiserror::Error)]
pub enum RestrictedReadError {
    /// The caller is not an administrator this read is for; the refusal says who is.
    #[error(transparent)]
    Forbidden(#[from] Denied),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}
