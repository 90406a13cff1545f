//! The error contract shared by storage ports.

use std::fmt;

/// What can go wrong when a storage port reads or writes.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The record does not exist for this tenant.
    #[error("not found")]
    NotFound,
    /// The write conflicts with the stored state; the kind says how, so that callers can
    /// tell a taken id from a lost race.
    #[error("conflict: {0}")]
    Conflict(ConflictKind),
    /// Anything else: connection lost, timeout, corrupt row. Not the caller's fault.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// How a write conflicts with the stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// A record with this id already exists (ids are unique across tenants): the primary
    /// key.
    DuplicateId,
    /// Another record already holds a value that must be unique (a unique key other than
    /// the id, e.g. an event's `(run_id, seq)`).
    DuplicateKey,
    /// The record changed between two steps of the operation (e.g. an idempotency key
    /// released between its insert and its read); a retry may succeed.
    ConcurrentChange,
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DuplicateId => "a record with this id exists",
            Self::DuplicateKey => "a unique key is already taken",
            Self::ConcurrentChange => "the record changed concurrently",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_conflict_says_how_the_write_conflicts() {
        let said = |kind: ConflictKind| RepositoryError::Conflict(kind).to_string();
        assert_eq!(said(ConflictKind::DuplicateId), "conflict: a record with this id exists");
        assert_eq!(said(ConflictKind::DuplicateKey), "conflict: a unique key is already taken");
        assert_eq!(said(ConflictKind::ConcurrentChange), "conflict: the record changed concurrently");
    }
}
