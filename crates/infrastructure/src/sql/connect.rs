//! Opening a connection pool, the same way for every SQL adapter.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};

use super::redact::redact_url_in;

/// How long a SQLite statement waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// Bounds both connecting and waiting for a pooled connection.
    pub connect_timeout: Duration,
}

/// The options of a pool to `url`: `pool`'s size and waits, no statement logging, and for a
/// SQLite file WAL (readers run beside the one writer), foreign keys enforced and a bounded
/// wait for the write lock. PostgreSQL ignores the SQLite part.
pub(crate) fn connect_options(url: String, pool: PoolOptions) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(pool.max_connections)
        .connect_timeout(pool.connect_timeout)
        .acquire_timeout(pool.connect_timeout)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal).foreign_keys(true).busy_timeout(SQLITE_BUSY_TIMEOUT)
        });
    options
}

/// Opens the pool; the error says `what` was being done and never shows the URL's password
/// (drivers sometimes echo the URL).
pub(crate) async fn connect(options: ConnectOptions, what: String) -> anyhow::Result<DatabaseConnection> {
    Database::connect(options)
        .await
        .map_err(|error| anyhow::anyhow!("{}", redact_url_in(&error.to_string())))
        .context(what)
}

/// Creates the directory of a SQLite file, as SQLite creates only the file itself.
pub(crate) fn create_parent_dir(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory of the SQLite file {}", path.display())),
        _ => Ok(()),
    }
}

/// Creates the directory of the SQLite file that `url` names.
pub(crate) fn create_sqlite_dir(url: &str) -> anyhow::Result<()> {
    let options: SqliteConnectOptions = url.parse().context("parsing the embedded store's URL")?;
    create_parent_dir(options.get_filename())
}
