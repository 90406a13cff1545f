//! Adapters on Supabase's data (migrations/supabase/): row-level-secured tenant data.
//!
//! `sql` talks to the database directly (Supabase's pooler, or a self-hosted PostgreSQL):
//! every unit of work is one transaction that sets its role and tenant context first, so it
//! is safe behind a transaction-mode pooler.

pub mod sql;

pub use sql::{SupabaseSql, SupabaseSqlTenantDirectory, UnitOfWork};
