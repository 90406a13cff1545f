//! Translation of sea-orm errors into the ports' error contract, for every SQL adapter.

use sba_application::ports::RepositoryError;
use sea_orm::{DbErr, SqlErr};

/// A unique violation (SQLSTATE 23505 on PostgreSQL, also when raised inside an RPC; a
/// `UNIQUE` failure on SQLite) becomes `Conflict`; everything else is `Unexpected`, with
/// what was being done.
pub(crate) fn map_db_err(error: DbErr, doing: &'static str) -> RepositoryError {
    match error.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(what)) => RepositoryError::Conflict(what),
        _ => unexpected(error, doing),
    }
}

/// A failed statement that cannot be the caller's fault, with what was being done.
pub(crate) fn unexpected(error: DbErr, doing: &'static str) -> RepositoryError {
    RepositoryError::Unexpected(anyhow::Error::new(error).context(doing))
}
