//! Opening a connection pool, the same way for every SQL adapter.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};

use percent_encoding::percent_decode_str;

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
///
/// A PostgreSQL password leaves the URL for a closure the options do not print: sea-orm's
/// connect span records the options (URL included) with `Debug`, and every `trace` line
/// inside it would repeat the password.
pub(crate) fn connect_options(url: String, pool: PoolOptions) -> ConnectOptions {
    let (url, password) = split_password(url);
    let mut options = ConnectOptions::new(url);
    if let Some(password) = password {
        options.map_sqlx_postgres_opts(move |opts| opts.password(&password));
    }
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

/// A PostgreSQL URL without its password, and the password (percent-decoded); any other URL
/// as it is.
fn split_password(url: String) -> (String, Option<String>) {
    let Ok(mut parsed) = url::Url::parse(&url) else { return (url, None) };
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return (url, None);
    }
    let Some(password) = parsed.password().map(|p| percent_decode_str(p).decode_utf8_lossy().into_owned())
    else {
        return (url, None);
    };
    if parsed.set_password(None).is_err() {
        return (url, None);
    }
    (parsed.to_string(), Some(password))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_password_leaves_the_url_decoded_and_other_urls_stay() {
        let (url, password) = split_password("postgres://app:p%40ss%2Fw@db:5432/sba?sslmode=require".into());
        assert_eq!(url, "postgres://app@db:5432/sba?sslmode=require");
        assert_eq!(password.as_deref(), Some("p@ss/w"));
        for same in ["postgres://app@db/sba", "sqlite://data/sba.db?mode=rwc", "not a url"] {
            assert_eq!(split_password(same.into()), (same.to_owned(), None));
        }
    }
}
