//! The embedded tenant-data store on SQLite: sessions and knowledge for development mode,
//! when no Supabase is configured.
//!
//! It gives the same behaviour as the Supabase adapters, with two differences that decide
//! where it may run:
//!
//! - **No row-level security.** SQLite has none, so tenant isolation is this module's job:
//!   every statement carries `tenant_id = ?` bound to `caller.tenant`, and nothing reads or
//!   writes a row without it. A row of another tenant is indistinguishable from a missing one.
//! - **One development node.** The database is a local file (or memory), not shared across
//!   nodes; several `sba serve` processes need the Supabase store.
//!
//! The tables mirror `migrations/supabase/20261201000000_tenant_data.sql` (columns, checks,
//! unique keys, the chunk-to-document foreign key) with SQLite types: UUIDs as lower-case
//! hyphenated text (so text order is UUID byte order, as in PostgreSQL), JSON as text,
//! times as integer microseconds since the epoch (exact ordering and cursor comparison; finer
//! digits are truncated, like `Cursor::encode`), embeddings as a BLOB of little-endian `f32`.
//! Their names start with `embedded_`, so the store can share one SQLite file with the
//! internal store.
//!
//! Knowledge search is a brute-force scan; see [`EmbeddedKnowledgeStore`] for its limits.

mod knowledge;
mod schema;
mod sessions;

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sba_application::ports::{ConflictKind, RepositoryError};
use sba_domain::Metadata;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr, SqlErr};
use uuid::Uuid;

use crate::postgres::error::unexpected;
use crate::tenant_data::{JsonObject, corrupt_row, metadata_of};

pub use knowledge::EmbeddedKnowledgeStore;
pub use sessions::EmbeddedSessionStore;

/// Connections to a file database: WAL lets readers run beside the one writer.
const FILE_POOL_SIZE: u32 = 4;
/// How long a statement waits for another connection's write lock, and a caller for a
/// pooled connection.
const WAIT: Duration = Duration::from_secs(5);

/// The embedded store: one SQLite connection pool, and the factory of its adapters.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: DatabaseConnection,
}

impl EmbeddedStore {
    /// Connects to the SQLite database at `url` (`sqlite://path/to.db?mode=rwc`, or
    /// `sqlite::memory:`) and creates its tables when they do not exist.
    ///
    /// An in-memory database lives as long as its connection, and each connection would
    /// get its own: a memory URL therefore gets a pool of exactly one connection that is
    /// never recycled, so every adapter sees the same data until the store is dropped.
    ///
    /// # Errors
    /// When the URL is not a SQLite URL, the database cannot be opened, or the schema
    /// cannot be created.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let in_memory = is_in_memory(url);
        if !in_memory {
            create_parent_dir(url)?;
        }
        let mut options = ConnectOptions::new(url);
        options.connect_timeout(WAIT).acquire_timeout(WAIT).sqlx_logging(false);
        if in_memory {
            options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
            options.map_sqlx_sqlite_opts(|opts| opts.foreign_keys(true));
        } else {
            options.max_connections(FILE_POOL_SIZE);
            options.map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(SqliteJournalMode::Wal).foreign_keys(true).busy_timeout(WAIT)
            });
        }
        let db = Database::connect(options).await.context("opening the embedded SQLite store")?;
        schema::create(&db).await.context("creating the embedded store's tables")?;
        Ok(Self { db })
    }

    /// Readiness of the store (`embedded_store` in `/readyz`).
    pub fn dependency_check(&self) -> std::sync::Arc<dyn sba_application::ports::DependencyCheck> {
        std::sync::Arc::new(crate::postgres::DatabaseCheck {
            component: "embedded_store",
            db: self.db.clone(),
        })
    }

    /// Sessions, scoped to each caller's tenant.
    pub fn session_store(&self) -> EmbeddedSessionStore {
        EmbeddedSessionStore::new(self.db.clone())
    }

    /// Knowledge documents and their similarity search, scoped to each caller's tenant.
    pub fn knowledge_store(&self) -> EmbeddedKnowledgeStore {
        EmbeddedKnowledgeStore::new(self.db.clone())
    }

    /// Closes every pooled connection (an in-memory database is gone afterwards).
    pub async fn close(self) {
        if let Err(error) = self.db.close().await {
            tracing::warn!(%error, "closing the embedded store");
        }
    }
}

/// Whether `url` names an in-memory database (`sqlite::memory:`, or `mode=memory`).
fn is_in_memory(url: &str) -> bool {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|param| param == "mode=memory")
}

/// Creates the directory of a database file, as SQLite creates only the file itself.
fn create_parent_dir(url: &str) -> anyhow::Result<()> {
    let options: SqliteConnectOptions = url.parse().context("parsing the embedded store's URL")?;
    crate::postgres::create_parent_dir(options.get_filename())
}

/// A failed statement as the ports' error: a unique violation is a `conflict` of that
/// kind, anything else `Unexpected` with what was being done.
fn map_db_err(error: DbErr, doing: &'static str, conflict: ConflictKind) -> RepositoryError {
    match error.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => RepositoryError::Conflict(conflict),
        _ => unexpected(error, doing),
    }
}

/// A time as stored: whole microseconds since the epoch.
fn to_micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(table: &'static str, micros: i64) -> Result<DateTime<Utc>, RepositoryError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt_row(table, "time out of range"))
}

/// Metadata as stored: a JSON object in text.
fn metadata_to_text(metadata: &Metadata) -> Result<String, RepositoryError> {
    serde_json::to_string(metadata.as_map())
        .map_err(|e| RepositoryError::Unexpected(anyhow::Error::new(e).context("encoding metadata")))
}

/// The metadata object stored as text in a row of `table`.
fn object_from_text(table: &'static str, text: &str) -> Result<JsonObject, RepositoryError> {
    serde_json::from_str(text).map_err(|e| corrupt_row(table, format!("metadata: {e}")))
}

fn metadata_from_text(table: &'static str, text: &str) -> Result<Metadata, RepositoryError> {
    metadata_of(table, object_from_text(table, text)?)
}

/// A UUID stored as text in a row of `table`.
fn uuid_of(table: &'static str, text: &str) -> Result<Uuid, RepositoryError> {
    Uuid::parse_str(text).map_err(|e| corrupt_row(table, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_urls_are_recognised_and_files_are_not() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://:memory:"));
        assert!(is_in_memory("sqlite://file:dev?mode=memory&cache=shared"));
        assert!(!is_in_memory("sqlite://.sba/sba.db?mode=rwc"));
        assert!(!is_in_memory("sqlite:///tmp/memory.db"));
    }

    #[test]
    fn times_round_trip_exactly_to_the_microsecond() {
        let at = DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap();
        assert_eq!(from_micros("t", to_micros(at)).unwrap(), at);
        let before_epoch = DateTime::from_timestamp_micros(-1).unwrap();
        assert_eq!(from_micros("t", to_micros(before_epoch)).unwrap(), before_epoch);
    }
}
