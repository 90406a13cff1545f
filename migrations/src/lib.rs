//! Migrations of SBA's internal operational schema (sea-orm-migration), for PostgreSQL and
//! SQLite alike.
//!
//! The Supabase-owned schema (tenants, sessions, knowledge) is not here: it lives in
//! `migrations/supabase/*.sql` and is applied with Supabase's own tooling.

use sea_orm_migration::prelude::*;
pub use sea_orm_migration::{MigrationStatus, MigratorTrait};

mod m20261128_000001_runs_and_audit_logs;
mod m20261128_000002_run_details_usage_health_idempotency;
mod m20261206_000001_audit_client_request_id;

/// Every migration of the internal schema, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_runs_and_audit_logs::Migration),
            Box::new(m20261128_000002_run_details_usage_health_idempotency::Migration),
            Box::new(m20261206_000001_audit_client_request_id::Migration),
        ]
    }
}
