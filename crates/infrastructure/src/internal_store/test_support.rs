//! Test helpers: a fresh, migrated internal store per test, so tests run in parallel.
//!
//! PostgreSQL comes from the private instance that `scripts/test.sh` starts; a test that
//! needs it fails loudly when it is missing instead of being skipped.
#![allow(clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use secrecy::SecretString;
use uuid::Uuid;

use super::{InternalStore, PoolOptions, StoreLocation};

/// The environment variable naming the private PostgreSQL's admin URL.
pub const ADMIN_URL_VAR: &str = "SBA_TEST_DATABASE_URL";

const POOL: PoolOptions = PoolOptions { max_connections: 5, connect_timeout: Duration::from_secs(10) };

/// The admin URL of the private test PostgreSQL.
///
/// # Panics
/// With instructions, when the variable is unset: a test that needs PostgreSQL must fail
/// loudly rather than be skipped.
pub fn admin_url() -> String {
    std::env::var(ADMIN_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{ADMIN_URL_VAR} is not set: run the tests with scripts/test.sh, which starts a private \
             PostgreSQL (or source target/services/env after scripts/services-up.sh)"
        )
    })
}

/// Creates an empty database with a random name on the test PostgreSQL and returns its URL.
///
/// # Panics
/// When the test PostgreSQL is unreachable.
pub async fn fresh_postgres_url() -> String {
    let admin = admin_url();
    let name = format!("sba_test_{}", Uuid::new_v4().simple());
    let conn = Database::connect(admin.as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {ADMIN_URL_VAR}: {e}"));
    conn.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("creating the test database");
    conn.close().await.expect("closing the admin connection");
    let mut url = url::Url::parse(&admin).expect("SBA_TEST_DATABASE_URL is a URL");
    url.set_path(&name);
    url.to_string()
}

/// A fresh, migrated PostgreSQL store and its location.
pub async fn fresh_postgres_store() -> (InternalStore, StoreLocation) {
    let location = StoreLocation::Postgres(SecretString::from(fresh_postgres_url().await));
    (migrated(&location).await, location)
}

/// A fresh, migrated SQLite store in a temporary file, and its location.
pub async fn fresh_sqlite_store() -> (InternalStore, StoreLocation) {
    let path = std::env::temp_dir().join(format!("sba-test-{}.db", Uuid::new_v4().simple()));
    let location = StoreLocation::Sqlite(path);
    (migrated(&location).await, location)
}

async fn migrated(location: &StoreLocation) -> InternalStore {
    let store = InternalStore::connect(location, POOL).await.expect("connecting to the test store");
    store.migrate_up().await.expect("migrating the test store");
    store
}

/// A fresh database with the Supabase schema, as `supabase db push` would make it: the
/// test bootstrap (Supabase's roles, `auth.jwt()`) and every migration of
/// `migrations/supabase/`, in name order (a new migration is picked up by every test).
///
/// # Panics
/// When the test PostgreSQL is unreachable or a migration fails.
pub async fn fresh_supabase_url() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/supabase");
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    };
    let mut migrations: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("listing the Supabase migrations").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    migrations.sort();
    assert!(!migrations.is_empty(), "no migrations in {}", dir.display());
    let url = fresh_postgres_url().await;
    execute_sql(&url, &read(&dir.join("test-bootstrap/00_supabase_roles.sql"))).await;
    for migration in migrations {
        execute_sql(&url, &read(&migration)).await;
    }
    url
}

/// Runs raw SQL on the database at `url` (test setup such as fault-injection triggers).
///
/// # Panics
/// When the database is unreachable or the SQL fails.
pub async fn execute_sql(url: &str, sql: &str) {
    let conn = Database::connect(url).await.expect("connecting to the test database");
    conn.execute_unprepared(sql).await.expect("running test SQL");
    conn.close().await.expect("closing the test connection");
}

/// A new queued run of a new tenant (user `u`, agent `bot`), its time in microseconds as
/// PostgreSQL keeps it.
///
/// # Panics
/// Never: the fixed user id and agent name are valid.
pub fn new_run() -> sba_domain::AgentRun {
    use chrono::SubsecRound as _;
    sba_domain::AgentRun::new(
        sba_domain::RunId::from_uuid(Uuid::now_v7()),
        sba_domain::runs::NewRun {
            tenant_id: sba_domain::TenantId::from_uuid(Uuid::now_v7()),
            user_id: sba_domain::UserId::parse("u").expect("a valid user id"),
            agent: sba_domain::AgentName::parse("bot").expect("a valid agent name"),
            input: serde_json::Value::Null,
            session_id: None,
            metadata: sba_domain::Metadata::default(),
        },
        chrono::Utc::now().trunc_subsecs(6),
    )
}

/// The audit entry of `run`'s creation by its user, for `RunLedger::create_run`.
pub fn creation_audit(run: &sba_domain::AgentRun) -> sba_domain::AuditEntry {
    sba_domain::AuditEntry {
        id: sba_domain::AuditEntryId::from_uuid(Uuid::now_v7()),
        tenant_id: run.tenant_id,
        actor: "u".into(),
        action: "run.create".into(),
        resource_type: "run".into(),
        resource_id: Some(run.id.to_string()),
        outcome: sba_domain::AuditOutcome::Success,
        ip: None,
        request_id: None,
        client_request_id: None,
        created_at: chrono::Utc::now(),
    }
}

/// Generates one `#[tokio::test]` per internal store (a fresh PostgreSQL database and a fresh
/// SQLite file) for each listed async test body taking the `InternalStore`.
#[macro_export]
macro_rules! on_both_internal_stores {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _) = $crate::internal_store::test_support::fresh_postgres_store().await;
                    super::$name(store).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _) = $crate::internal_store::test_support::fresh_sqlite_store().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

/// The raw baseline of the persistence benchmarks (`benches/apply_events.rs` and the event
/// pipeline's): the `agent_events` rows `RunLedger::apply_events` writes for `batch`, bound
/// as parameters of one plain multi-row `INSERT`.
///
/// # Panics
/// On a seq beyond `i64::MAX` (benchmark data never has one).
pub fn multi_row_insert(batch: &[sba_domain::events::RunEvent]) -> sea_orm::sea_query::InsertStatement {
    let mut insert = sea_orm::sea_query::Query::insert();
    insert.into_table("agent_events").columns([
        "tenant_id",
        "run_id",
        "seq",
        "producer_id",
        "kind",
        "data",
        "created_at",
    ]);
    for event in batch {
        insert
            .values([
                event.tenant_id.as_uuid().into(),
                event.run_id.as_uuid().into(),
                i64::try_from(event.seq).expect("a seq within i64").into(),
                event.producer_id.clone().into(),
                event.kind().as_str().into(),
                event.data_json().into(),
                event.created_at.into(),
            ])
            .expect("one value per column");
    }
    insert
}
