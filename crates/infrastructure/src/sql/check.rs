//! Readiness of a sea-orm database.

use anyhow::Context as _;
use sba_application::ports::DependencyCheck;
use sea_orm::{ConnectionTrait, DatabaseConnection};

/// Readiness of a sea-orm database: `SELECT 1` through its pool (the internal store, the
/// Supabase database, the embedded store).
#[derive(Debug)]
pub(crate) struct DatabaseCheck {
    pub(crate) component: &'static str,
    pub(crate) db: DatabaseConnection,
}

#[async_trait::async_trait]
impl DependencyCheck for DatabaseCheck {
    fn component(&self) -> &'static str {
        self.component
    }

    async fn check(&self) -> anyhow::Result<()> {
        self.db
            .execute_unprepared("SELECT 1")
            .await
            .map(|_| ())
            .with_context(|| format!("pinging {}", self.component))
    }
}
