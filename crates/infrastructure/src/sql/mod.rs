//! SQL plumbing shared by the sea-orm adapters (`internal_store/`, `embedded/` and
//! `supabase::sql`): opening a pool, translating driver errors into the ports' errors, the
//! readiness check, and keeping passwords out of messages.

mod check;
mod connect;
mod error;
mod redact;

pub(crate) use check::DatabaseCheck;
pub use connect::PoolOptions;
pub(crate) use connect::{connect, connect_options, create_parent_dir, create_sqlite_dir};
pub(crate) use error::{conflict_kind, map_db_err, unexpected};
pub(crate) use redact::{describe_postgres, redact_url};
