//! The internal operational store on sea-orm: PostgreSQL in production, SQLite for the
//! embedded development mode. Both run the same migrations and the same adapters.

mod audit;
mod details;
mod entities;
mod health;
mod idempotency;
mod keyset;
mod ledger;
mod runs;
mod sequencer;
#[cfg(feature = "test-support")]
pub mod test_support;
mod usage;

use std::sync::Arc;

use anyhow::Context as _;
use sba_application::ports::{
    AuditLog, DependencyCheck, EventLog, EventSequencer, HealthLog, IdempotencyStore, RunLedger,
    RunRepository, StepRepository, ToolCallRepository, UsageLedger,
};
use sba_migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::sql::{DatabaseCheck, connect, connect_options, create_parent_dir, describe_postgres};

pub use audit::SeaOrmAuditLog;
pub use details::SeaOrmRunDetails;
pub use health::SeaOrmHealthLog;
pub use idempotency::SeaOrmIdempotencyStore;
pub use ledger::SeaOrmRunLedger;
pub use runs::SeaOrmRunRepository;
pub use sequencer::StoreEventSequencer;
pub use usage::SeaOrmUsageLedger;

pub use crate::sql::PoolOptions;

/// Where the internal store lives.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// A PostgreSQL URL (it may carry a password: never log it).
    Postgres(secrecy::SecretString),
    /// A SQLite file, created when missing.
    Sqlite(std::path::PathBuf),
}

/// One migration and whether it has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// A connection pool to the internal store, and the factory of its adapters.
#[derive(Debug, Clone)]
pub struct InternalStore {
    db: DatabaseConnection,
    description: String,
}

impl InternalStore {
    /// Connects (creating the SQLite file and its directory when needed).
    ///
    /// # Errors
    /// When the database cannot be reached; the message never contains the password.
    pub async fn connect(location: &StoreLocation, pool: PoolOptions) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret as _;
        let (url, description) = match location {
            StoreLocation::Postgres(url) => {
                (url.expose_secret().to_owned(), describe_postgres(url.expose_secret()))
            }
            StoreLocation::Sqlite(path) => {
                create_parent_dir(path)?;
                (format!("sqlite://{}?mode=rwc", path.display()), format!("sqlite ({})", path.display()))
            }
        };
        let db =
            connect(connect_options(url, pool), format!("connecting to the internal store at {description}"))
                .await?;
        Ok(Self { db, description })
    }

    /// What the store is, fit for logs: backend and host or file, never credentials.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Applies every pending migration.
    ///
    /// # Errors
    /// When a migration fails; PostgreSQL rolls the failed one back.
    pub async fn migrate_up(&self) -> anyhow::Result<()> {
        Migrator::up(&self.db, None).await.context("applying migrations")
    }

    /// Reverts the last `steps` applied migrations.
    ///
    /// # Errors
    /// When a migration's `down` fails.
    pub async fn migrate_down(&self, steps: u32) -> anyhow::Result<()> {
        Migrator::down(&self.db, Some(steps)).await.context("reverting migrations")
    }

    /// Every known migration, oldest first, with whether it has been applied.
    ///
    /// # Errors
    /// When the migration table cannot be read.
    pub async fn migration_status(&self) -> anyhow::Result<Vec<MigrationState>> {
        let migrations = Migrator::get_migration_with_status(&self.db).await.context("reading migrations")?;
        Ok(migrations
            .iter()
            .map(|m| MigrationState {
                name: m.name().to_owned(),
                applied: matches!(m.status(), sba_migration::MigrationStatus::Applied),
            })
            .collect())
    }

    /// A trivial round trip, for readiness checks.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.db.execute_unprepared("SELECT 1").await.map(|_| ()).context("pinging the internal store")
    }

    pub fn run_repository(&self) -> Arc<dyn RunRepository> {
        Arc::new(SeaOrmRunRepository::new(self.db.clone()))
    }

    pub fn step_repository(&self) -> Arc<dyn StepRepository> {
        Arc::new(SeaOrmRunDetails::new(self.db.clone()))
    }

    pub fn tool_call_repository(&self) -> Arc<dyn ToolCallRepository> {
        Arc::new(SeaOrmRunDetails::new(self.db.clone()))
    }

    pub fn event_log(&self) -> Arc<dyn EventLog> {
        Arc::new(SeaOrmRunDetails::new(self.db.clone()))
    }

    pub fn health_log(&self) -> Arc<dyn HealthLog> {
        Arc::new(SeaOrmHealthLog::new(self.db.clone()))
    }

    pub fn idempotency_store(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(SeaOrmIdempotencyStore::new(self.db.clone()))
    }

    pub fn run_ledger(&self) -> Arc<dyn RunLedger> {
        Arc::new(SeaOrmRunLedger::new(self.db.clone()))
    }

    /// The event sequencer when no Redis is configured: it stores each batch before answering.
    pub fn event_sequencer(&self) -> Arc<dyn EventSequencer> {
        Arc::new(StoreEventSequencer::new(self.db.clone()))
    }

    pub fn audit_log(&self) -> Arc<dyn AuditLog> {
        Arc::new(SeaOrmAuditLog::new(self.db.clone()))
    }

    pub fn usage_ledger(&self) -> Arc<dyn UsageLedger> {
        Arc::new(SeaOrmUsageLedger::new(self.db.clone()))
    }

    /// The readiness check of this store, reported as `database`.
    pub fn dependency_check(&self) -> Arc<dyn DependencyCheck> {
        Arc::new(DatabaseCheck { component: "database", db: self.db.clone() })
    }

    /// Closes every pooled connection.
    pub async fn close(self) {
        if let Err(error) = self.db.close().await {
            tracing::warn!(%error, "closing the internal store");
        }
    }
}
