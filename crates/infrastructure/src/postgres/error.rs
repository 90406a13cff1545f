//! Translation of sea-orm errors into the ports' error contract.

use sba_application::ports::RepositoryError;
use sea_orm::{DbErr, SqlErr};

/// A unique violation becomes `Conflict`; everything else is `Unexpected`, with context.
pub(super) fn map_db_err(error: DbErr, doing: &'static str) -> RepositoryError {
    match error.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(what)) => RepositoryError::Conflict(what),
        _ => RepositoryError::Unexpected(anyhow::Error::new(error).context(doing)),
    }
}

/// A stored row that does not satisfy the domain's rules: data corruption, not user error.
pub(super) fn corrupt_row(table: &'static str, what: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::Unexpected(anyhow::anyhow!("corrupt row in {table}: {what}"))
}
