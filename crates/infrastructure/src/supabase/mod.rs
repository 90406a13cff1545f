//! Adapters on Supabase's data (migrations/supabase/): row-level-secured tenant data.
//!
//! `sql` talks to the database directly (Supabase's pooler, or a self-hosted PostgreSQL):
//! every unit of work is one transaction that sets its role and tenant context first, so it
//! is safe behind a transaction-mode pooler. `postgrest` talks to Supabase's REST API,
//! forwarding the user's token so that row-level security applies there too.

pub mod postgrest;
pub mod sql;

use std::time::Duration;

use anyhow::Context as _;
use sea_orm::{ConnectOptions, Database};
use secrecy::{ExposeSecret as _, SecretString};

pub use postgrest::{
    PostgrestClient, PostgrestKnowledgeStore, PostgrestSessionStore, PostgrestSettings,
    PostgrestTenantDirectory,
};
pub use sql::{
    SupabaseSql, SupabaseSqlKnowledgeStore, SupabaseSqlSessionStore, SupabaseSqlTenantDirectory, UnitOfWork,
};

/// How many connections the direct-SQL adapters keep at most.
const SQL_POOL_SIZE: u32 = 10;

/// Connects the direct-SQL adapters to `url` (`SUPABASE_DB_URL`); connecting and waiting for
/// a pooled connection are bounded by `timeout`.
///
/// # Errors
/// When the database cannot be reached (the message never shows the URL's password).
pub async fn connect_sql(url: &SecretString, timeout: Duration) -> anyhow::Result<SupabaseSql> {
    let mut options = ConnectOptions::new(url.expose_secret().to_owned());
    options
        .max_connections(SQL_POOL_SIZE)
        .connect_timeout(timeout)
        .acquire_timeout(timeout)
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .map_err(|error| anyhow::anyhow!("{}", crate::postgres::redact_url_in(&error.to_string())))
        .context("connecting to the Supabase database")?;
    Ok(SupabaseSql::new(db))
}
