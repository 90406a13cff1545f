//! The error contract shared by storage ports.

/// What can go wrong when a storage port reads or writes.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The record does not exist for this tenant.
    #[error("not found")]
    NotFound,
    /// The write conflicts with the stored state (a unique key, or a concurrent change).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else: connection lost, timeout, corrupt row. Not the caller's fault.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}
