//! Translation of sea-orm errors into the ports' error contract, for every SQL adapter.

use sba_application::ports::{ConflictKind, RepositoryError};
use sea_orm::{DbErr, SqlErr};

/// A unique violation (SQLSTATE 23505 on PostgreSQL, also when raised inside an RPC; a
/// `UNIQUE` failure on SQLite) becomes `Conflict` of its kind; everything else is `Unexpected`, with
/// what was being done.
pub(crate) fn map_db_err(error: DbErr, doing: &'static str) -> RepositoryError {
    match error.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(what)) => RepositoryError::Conflict(conflict_kind(&what)),
        _ => unexpected(error, doing),
    }
}

/// The kind of a unique violation, from the database's message: PostgreSQL names the
/// constraint (`... unique constraint "sessions_pkey"`), SQLite the columns
/// (`UNIQUE constraint failed: sessions.id`). A primary key is a taken id.
pub(crate) fn conflict_kind(message: &str) -> ConflictKind {
    let sqlite_columns = message.rsplit_once(": ").map(|(_, columns)| columns);
    if message.contains("_pkey\"")
        || sqlite_columns.is_some_and(|c| !c.contains(',') && c.split('.').nth(1) == Some("id"))
    {
        ConflictKind::DuplicateId
    } else {
        ConflictKind::DuplicateKey
    }
}

/// A failed statement that cannot be the caller's fault, with what was being done.
pub(crate) fn unexpected(error: DbErr, doing: &'static str) -> RepositoryError {
    RepositoryError::Unexpected(anyhow::Error::new(error).context(doing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_key_is_a_taken_id_and_another_unique_key_a_taken_key() {
        for (message, kind) in [
            ("duplicate key value violates unique constraint \"sessions_pkey\"", ConflictKind::DuplicateId),
            ("UNIQUE constraint failed: audit_logs.id", ConflictKind::DuplicateId),
            (
                "duplicate key value violates unique constraint \"agent_events_run_id_seq_key\"",
                ConflictKind::DuplicateKey,
            ),
            ("UNIQUE constraint failed: agent_events.run_id, agent_events.seq", ConflictKind::DuplicateKey),
            ("UNIQUE constraint failed: tenants.user_id", ConflictKind::DuplicateKey),
            ("", ConflictKind::DuplicateKey),
        ] {
            assert_eq!(conflict_kind(message), kind, "{message}");
        }
    }
}
