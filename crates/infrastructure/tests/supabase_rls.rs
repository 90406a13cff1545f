#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! The Supabase schema (migrations/supabase/) on the private PostgreSQL with pgvector
//! (scripts/install-pgvector.sh): row-level security holds even for a query without a
//! tenant filter, no context means no rows, a pooled connection carries no context into the
//! next transaction, PostgREST's pre-request path sets the context from the JWT claims, and
//! `match_knowledge` ranks the caller tenant's chunks; and the direct-SQL adapters
//! (`SupabaseSql` units of work, the tenant directory) on it. Each test has its own
//! database.

use sba_application::ports::TenantDirectory as _;
use sba_domain::ratelimit::Quota;
use sba_domain::{TenantId, TenantStatus};
use sba_infrastructure::internal_store::test_support::{execute_sql, fresh_supabase_url};
use sba_infrastructure::supabase::{SupabaseSql, UnitOfWork};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};
use uuid::Uuid;

struct Fixture {
    db: DatabaseConnection,
    a: Uuid,
    b: Uuid,
}

/// A fresh database with the final schema (every migration, in order), two tenants with a
/// session each and tenant A with three chunks, tenant B with one; connections of a pool of
/// one, so transactions reuse the same server connection.
async fn fixture() -> Fixture {
    let url = fresh_supabase_url().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    // As the superuser (which RLS does not bind): the platform's seeding.
    execute_sql(
        &url,
        &format!(
            "insert into tenants (id, name) values ('{a}', 'a'), ('{b}', 'b');
             insert into sessions (tenant_id, user_id) values ('{a}', 'alice'), ('{b}', 'bob');
             insert into knowledge_documents (id, tenant_id, title) values
                 ('{a}', '{a}', 'doc a'), ('{b}', '{b}', 'doc b');
             insert into knowledge_chunks (tenant_id, document_id, ordinal, content, metadata, embedding) values
                 ('{a}', '{a}', 0, 'exact', '{{\"lang\": \"en\"}}', {e0}),
                 ('{a}', '{a}', 1, 'close', '{{\"lang\": \"en\"}}', {close}),
                 ('{a}', '{a}', 2, 'orthogonal', '{{\"lang\": \"de\"}}', {e1}),
                 ('{b}', '{b}', 0, 'tenant b exact', '{{\"lang\": \"en\"}}', {e0});",
            e0 = vector(&[(0, 1.0)]),
            close = vector(&[(0, 0.9), (1, 0.1)]),
            e1 = vector(&[(1, 1.0)]),
        ),
    )
    .await;
    let mut options = ConnectOptions::new(url);
    options.max_connections(1).min_connections(1).sqlx_logging(false);
    Fixture { db: Database::connect(options).await.unwrap(), a, b }
}

/// A 384-dimension vector literal with the given components set.
fn vector(components: &[(usize, f32)]) -> String {
    let mut values = vec![0.0_f32; 384];
    for &(i, v) in components {
        values[i] = v;
    }
    let list: Vec<String> = values.iter().map(ToString::to_string).collect();
    format!("'[{}]'::vector", list.join(","))
}

async fn count(conn: &impl ConnectionTrait, table: &str) -> i64 {
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("select count(*) as n from {table}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn exec(conn: &impl ConnectionTrait, sql: &str) {
    conn.execute_unprepared(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

const TABLES: [&str; 4] = ["tenants", "sessions", "knowledge_documents", "knowledge_chunks"];

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_rows_even_without_a_tenant_filter() {
    let f = fixture().await;
    let tx = f.db.begin().await.unwrap();
    exec(&tx, "set local role authenticated").await;
    exec(&tx, &format!("select set_tenant_context('{}')", f.a)).await;
    assert_eq!(count(&tx, "tenants").await, 1);
    assert_eq!(count(&tx, "sessions").await, 1);
    assert_eq!(count(&tx, "knowledge_chunks").await, 3);
    let foreign = tx
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("select id from sessions where tenant_id = '{}'", f.b),
        ))
        .await
        .unwrap();
    assert!(foreign.is_empty(), "even asking for tenant B by id returns nothing");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn writes_for_another_tenant_are_refused() {
    let f = fixture().await;
    let tx = f.db.begin().await.unwrap();
    exec(&tx, "set local role authenticated").await;
    exec(&tx, &format!("select set_tenant_context('{}')", f.a)).await;
    let refused = tx
        .execute_unprepared(&format!(
            "insert into sessions (tenant_id, user_id) values ('{}', 'mallory')",
            f.b
        ))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("row-level security"), "{refused}");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn without_a_tenant_context_no_rows_are_visible() {
    let f = fixture().await;
    let tx = f.db.begin().await.unwrap();
    exec(&tx, "set local role authenticated").await;
    for table in TABLES {
        assert_eq!(count(&tx, table).await, 0, "{table}");
    }
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_pooled_connection_carries_no_tenant_context_into_the_next_transaction() {
    let f = fixture().await;
    let tx = f.db.begin().await.unwrap();
    exec(&tx, "set local role authenticated").await;
    exec(&tx, &format!("select set_tenant_context('{}')", f.a)).await;
    assert_eq!(count(&tx, "sessions").await, 1);
    tx.commit().await.unwrap();
    // The pool has one connection: this transaction runs on the same one.
    let next = f.db.begin().await.unwrap();
    exec(&next, "set local role authenticated").await;
    assert_eq!(count(&next, "sessions").await, 0, "tenant A's context leaked");
    next.rollback().await.unwrap();
}

/// As PostgREST runs a request: role and claims set transaction-locally, then the
/// pre-request function, then the query.
async fn as_postgrest(f: &Fixture, claims: &serde_json::Value) -> i64 {
    let tx = f.db.begin().await.unwrap();
    exec(&tx, "set local role authenticated").await;
    let claims = claims.to_string().replace('\'', "''");
    exec(&tx, &format!("select set_config('request.jwt.claims', '{claims}', true)")).await;
    exec(&tx, "select sba_pre_request()").await;
    let n = count(&tx, "sessions").await;
    tx.rollback().await.unwrap();
    n
}

#[tokio::test]
async fn the_postgrest_pre_request_takes_the_tenant_from_the_jwt_claims_only() {
    let f = fixture().await;
    let a = f.a.to_string();
    assert_eq!(as_postgrest(&f, &serde_json::json!({"sub": "alice", "tenant_id": a})).await, 1);
    assert_eq!(
        as_postgrest(&f, &serde_json::json!({"sub": "alice", "app_metadata": {"tenant_id": a}})).await,
        1
    );
    assert_eq!(
        as_postgrest(&f, &serde_json::json!({"sub": "alice", "user_metadata": {"tenant_id": a}})).await,
        0,
        "user_metadata is editable by users: never a tenant"
    );
    assert_eq!(as_postgrest(&f, &serde_json::json!({"sub": "alice", "tenant_id": "not-a-uuid"})).await, 0);
    assert_eq!(as_postgrest(&f, &serde_json::json!({"sub": "alice"})).await, 0);
}

#[tokio::test]
async fn match_knowledge_ranks_the_callers_chunks_by_cosine_similarity() {
    let f = fixture().await;
    let tx = f.db.begin().await.unwrap();
    exec(&tx, "set local role authenticated").await;
    exec(&tx, &format!("select set_tenant_context('{}')", f.a)).await;
    let query = |filter: &str, min: f64| {
        format!(
            "select content, similarity from match_knowledge({}, 10, {min}, '{filter}'::jsonb)",
            vector(&[(0, 1.0)])
        )
    };
    let rows = tx.query_all_raw(Statement::from_string(DbBackend::Postgres, query("{}", 0.0))).await.unwrap();
    let ranked: Vec<(String, f64)> = rows
        .iter()
        .map(|r| (r.try_get("", "content").unwrap(), r.try_get("", "similarity").unwrap()))
        .collect();
    let contents: Vec<&str> = ranked.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(contents, ["exact", "close", "orthogonal"], "tenant B's exact match never appears");
    assert!((ranked[0].1 - 1.0).abs() < 1e-6 && ranked[2].1.abs() < 1e-6, "{ranked:?}");
    let filtered = tx
        .query_all_raw(Statement::from_string(DbBackend::Postgres, query("{\"lang\": \"en\"}", 0.5)))
        .await
        .unwrap();
    assert_eq!(filtered.len(), 2, "metadata filter and minimum similarity");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn units_of_work_see_only_their_tenant_and_leave_no_context_behind() {
    let f = fixture().await;
    let sql = SupabaseSql::new(f.db.clone());
    for tenant in [f.a, f.b] {
        let tx = sql.begin(UnitOfWork::Tenant(TenantId::from_uuid(tenant))).await.unwrap();
        let rows = tx
            .query_all_raw(Statement::from_string(DbBackend::Postgres, "select tenant_id from sessions"))
            .await
            .unwrap();
        let seen: Vec<Uuid> = rows.iter().map(|r| r.try_get("", "tenant_id").unwrap()).collect();
        assert_eq!(seen, [tenant]);
        tx.commit().await.unwrap();
    }
    // The same pooled connection, as a user with no context: nothing.
    let next = f.db.begin().await.unwrap();
    exec(&next, "set local role authenticated").await;
    assert_eq!(count(&next, "sessions").await, 0);
    next.rollback().await.unwrap();
    let platform = sql.begin(UnitOfWork::Platform).await.unwrap();
    assert_eq!(count(&platform, "sessions").await, 2, "platform work sees every tenant");
    platform.rollback().await.unwrap();
}

#[tokio::test]
async fn the_tenant_directory_reads_tenants_and_registered_origins() {
    let f = fixture().await;
    exec(
        &f.db,
        &format!(
            "update tenants set plan = 'pro', cors_origins = '{{https://app.a.test}}',
                 rate_limit_requests = 100, rate_limit_window_secs = 60 where id = '{a}';
             update tenants set status = 'suspended', cors_origins = '{{https://app.b.test}}' where id = '{b}';",
            a = f.a,
            b = f.b
        ),
    )
    .await;
    let directory = SupabaseSql::new(f.db.clone()).tenant_directory();
    let a = directory.find(TenantId::from_uuid(f.a)).await.unwrap().unwrap();
    assert_eq!(a.status, TenantStatus::Active);
    assert_eq!(a.plan.as_deref(), Some("pro"));
    assert_eq!(a.allowed_origins, ["https://app.a.test"]);
    assert_eq!(a.rate_limit, Some(Quota::new(100, 60).unwrap()));
    let b = directory.find(TenantId::from_uuid(f.b)).await.unwrap().unwrap();
    assert_eq!(b.status, TenantStatus::Suspended);
    assert!(directory.find(TenantId::from_uuid(Uuid::now_v7())).await.unwrap().is_none());
    let origins = directory.registered_origins().await.unwrap();
    assert!(origins.contains(&"https://app.a.test".to_owned()));
    assert!(!origins.contains(&"https://app.b.test".to_owned()), "suspended tenant");
}
