//! Errors shared by use cases whose failures mean the same thing to their callers.

use crate::ports::RepositoryError;

/// What can go wrong in a use case on one record of the caller's tenant (a session, a
/// knowledge document).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No such record for the caller's tenant, including records of other tenants (which
    /// must look exactly like missing ones).
    #[error("not found")]
    NotFound,
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
    /// The caller is not an administrator this read is for; the message says who is.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}
