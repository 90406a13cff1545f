#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! The Supabase schema (migrations/supabase/) on the private PostgreSQL with pgvector
//! (scripts/install-pgvector.sh): row-level security holds even for a query without a
//! tenant filter, no context means no rows, a pooled connection carries no context into the
//! next transaction, PostgREST's pre-request path sets the context from the JWT claims, and
//! `match_knowledge` ranks the caller tenant's chunks; and the direct-SQL adapters
//! (`SupabaseSql` units of work, the tenant directory) on it. Each test has its own
//! database.

use sba_application::context::Caller;
use sba_application::ports::TenantDirectory as _;
use sba_domain::ratelimit::Quota;
use sba_domain::{Role, TenantId, TenantStatus, UserId};
use sba_infrastructure::internal_store::test_support::{execute_sql, fresh_supabase_url};
use sba_infrastructure::supabase::{SupabaseSql, UnitOfWork};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    RuntimeErr, Statement, TransactionTrait,
};
use uuid::Uuid;

struct Fixture {
    db: DatabaseConnection,
    a: Uuid,
    b: Uuid,
}

/// A fresh database with the final schema (every migration, in order), two tenants, tenant A
/// with sessions of alice and carol, tenant B with one of bob's, and tenant A with three chunks, tenant B with one; connections of a pool of
/// one, so transactions reuse the same server connection.
async fn fixture() -> Fixture {
    let url = fresh_supabase_url().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    // As the superuser (which RLS does not bind): the platform's seeding.
    execute_sql(
        &url,
        &format!(
            "insert into tenants (id, name) values ('{a}', 'a'), ('{b}', 'b');
             insert into sessions (tenant_id, user_id, title) values
                 ('{a}', 'alice', 'alice''s'), ('{a}', 'carol', 'carol''s'), ('{b}', 'bob', 'bob''s');
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

/// The tables the API roles may read (`tenants` is for the platform only).
const TABLES: [&str; 3] = ["sessions", "knowledge_documents", "knowledge_chunks"];

/// The JWT claims of a plain user of `tenant` (`authenticated`).
fn user_of(tenant: Uuid, sub: &str) -> serde_json::Value {
    serde_json::json!({"sub": sub, "role": "authenticated", "tenant_id": tenant})
}

/// Alice, a plain user of tenant A (the fixture's `tenant_id` claim does not matter to the
/// direct-SQL path, which sets the context itself).
fn alice() -> serde_json::Value {
    serde_json::json!({"sub": "alice", "role": "authenticated"})
}

/// The claims of an admin of `tenant`.
fn admin_of(tenant: Uuid) -> serde_json::Value {
    serde_json::json!({"sub": "root", "role": "admin", "tenant_id": tenant})
}

/// A transaction as SBA's direct-SQL adapter opens one: as the schema owner, the tenant
/// context and the caller's claims (transaction-local), then the role `authenticated`.
async fn as_user(f: &Fixture, tenant: Uuid, claims: &serde_json::Value) -> DatabaseTransaction {
    let tx = f.db.begin().await.unwrap();
    exec(&tx, &format!("select set_tenant_context('{tenant}')")).await;
    let claims = claims.to_string().replace('\'', "''");
    exec(&tx, &format!("select set_config('request.jwt.claims', '{claims}', true)")).await;
    exec(&tx, "set local role authenticated").await;
    tx
}

/// Runs `sql` in a transaction of `claims` for `tenant` and returns its error, failing the
/// test if it succeeds.
async fn refused(f: &Fixture, tenant: Uuid, claims: &serde_json::Value, sql: &str) -> DbErr {
    let tx = as_user(f, tenant, claims).await;
    let error = tx.execute_unprepared(sql).await.expect_err(sql);
    tx.rollback().await.unwrap();
    error
}

/// How many rows `sql` changes in a transaction of `claims` for `tenant` (rolled back).
async fn affected(f: &Fixture, tenant: Uuid, claims: &serde_json::Value, sql: &str) -> u64 {
    let tx = as_user(f, tenant, claims).await;
    let n = tx.execute_unprepared(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).rows_affected();
    tx.rollback().await.unwrap();
    n
}

/// The SQLSTATE of a database error.
fn sqlstate(error: &DbErr) -> Option<String> {
    match error {
        DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) => e
            .as_database_error()
            .and_then(sea_orm::sqlx::error::DatabaseError::code)
            .map(std::borrow::Cow::into_owned),
        _ => None,
    }
}

/// PostgreSQL's "insufficient privilege": permission denied, or a function refusing.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_rows_even_without_a_tenant_filter() {
    let f = fixture().await;
    let tx = as_user(&f, f.a, &alice()).await;
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
    let tx = as_user(&f, f.a, &alice()).await;
    let refused = tx
        .execute_unprepared(&format!("insert into sessions (tenant_id, user_id) values ('{}', 'alice')", f.b))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("row-level security"), "{refused}");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn without_a_tenant_context_no_rows_are_visible() {
    let f = fixture().await;
    let tx = f.db.begin().await.unwrap();
    exec(&tx, &format!("select set_config('request.jwt.claims', '{}', true)", admin_of(f.a))).await;
    exec(&tx, "set local role authenticated").await;
    for table in TABLES {
        assert_eq!(count(&tx, table).await, 0, "{table}");
    }
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn a_pooled_connection_carries_no_tenant_context_into_the_next_transaction() {
    let f = fixture().await;
    let tx = as_user(&f, f.a, &alice()).await;
    assert_eq!(count(&tx, "sessions").await, 1);
    tx.commit().await.unwrap();
    // The pool has one connection: this transaction runs on the same one.
    let next = f.db.begin().await.unwrap();
    exec(&next, "set local role authenticated").await;
    assert_eq!(count(&next, "sessions").await, 0, "tenant A's context or claims leaked");
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
    let tx = as_user(&f, f.a, &alice()).await;
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

/// A caller of `tenant` as the application makes one.
fn caller(tenant: Uuid, user: &str, role: Role) -> Caller {
    Caller { tenant: TenantId::from_uuid(tenant), user: UserId::parse(user).unwrap(), role, token: None }
}

/// The `(tenant_id, user_id)` of every session a unit of work sees.
async fn sessions_seen(tx: &DatabaseTransaction) -> Vec<(Uuid, String)> {
    let rows = tx
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "select tenant_id, user_id from sessions order by user_id",
        ))
        .await
        .unwrap();
    rows.iter().map(|r| (r.try_get("", "tenant_id").unwrap(), r.try_get("", "user_id").unwrap())).collect()
}

#[tokio::test]
async fn units_of_work_see_only_their_tenant_and_leave_no_context_behind() {
    let f = fixture().await;
    let sql = SupabaseSql::new(f.db.clone());
    for (tenant, user) in [(f.a, "alice"), (f.b, "bob")] {
        let tx = sql.begin(UnitOfWork::Caller(&caller(tenant, user, Role::Admin))).await.unwrap();
        let seen: Vec<Uuid> = sessions_seen(&tx).await.into_iter().map(|(t, _)| t).collect();
        assert!(!seen.is_empty() && seen.iter().all(|&t| t == tenant), "{seen:?}");
        tx.commit().await.unwrap();
    }
    // The same pooled connection, as a user with no context and no claims: nothing.
    let next = f.db.begin().await.unwrap();
    exec(&next, "set local role authenticated").await;
    assert_eq!(count(&next, "sessions").await, 0);
    let row = next
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select coalesce(current_setting('request.jwt.claims', true), '') as claims",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "claims").unwrap(), "", "the last caller's claims leaked");
    next.rollback().await.unwrap();
    let platform = sql.begin(UnitOfWork::Platform).await.unwrap();
    assert_eq!(count(&platform, "sessions").await, 3, "platform work sees every tenant");
    platform.rollback().await.unwrap();
}

#[tokio::test]
async fn a_units_claims_scope_sessions_to_the_user_unless_its_role_sees_the_whole_tenant() {
    let f = fixture().await;
    let sql = SupabaseSql::new(f.db.clone());
    let a = |user: &str| (f.a, user.to_owned());
    for (role, expected) in [
        (Role::Authenticated, vec![a("alice")]),
        (Role::Agent, vec![a("alice")]),
        (Role::Admin, vec![a("alice"), a("carol")]),
        (Role::Service, vec![a("alice"), a("carol")]),
    ] {
        let tx = sql.begin(UnitOfWork::Caller(&caller(f.a, "alice", role))).await.unwrap();
        assert_eq!(sessions_seen(&tx).await, expected, "{role}");
        tx.rollback().await.unwrap();
    }
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

// Least privilege (migrations/supabase/20261206000000_least_privilege.sql): the attacks an
// end user with a Supabase JWT could make on the schema directly, as role `authenticated`.

#[tokio::test]
async fn a_user_can_delete_no_session_document_or_chunk() {
    let f = fixture().await;
    for table in TABLES {
        for claims in [alice(), admin_of(f.a)] {
            let error = refused(&f, f.a, &claims, &format!("delete from {table}")).await;
            assert_eq!(sqlstate(&error).as_deref(), Some(INSUFFICIENT_PRIVILEGE), "{table}: {error}");
        }
    }
    assert_eq!(count(&f.db, "sessions").await, 3);
    assert_eq!(count(&f.db, "knowledge_chunks").await, 4);
}

#[tokio::test]
async fn a_user_cannot_rename_another_users_session_but_can_rename_its_own() {
    let f = fixture().await;
    let rename = |user: &str| format!("update sessions set title = 'pwned' where user_id = '{user}'");
    assert_eq!(affected(&f, f.a, &alice(), &rename("carol")).await, 0, "carol's session is not alice's");
    assert_eq!(affected(&f, f.a, &alice(), &rename("alice")).await, 1);
    assert_eq!(affected(&f, f.a, &admin_of(f.a), &rename("carol")).await, 1, "an admin acts on the tenant's");
    assert_eq!(affected(&f, f.a, &admin_of(f.a), &rename("bob")).await, 0, "never another tenant's");
}

#[tokio::test]
async fn a_user_cannot_give_a_session_away_or_change_its_tenant() {
    let f = fixture().await;
    for column in
        ["user_id = 'carol'".to_owned(), format!("tenant_id = '{}'", f.b), "id = gen_random_uuid()".into()]
    {
        let error = refused(&f, f.a, &alice(), &format!("update sessions set {column}")).await;
        assert_eq!(sqlstate(&error).as_deref(), Some(INSUFFICIENT_PRIVILEGE), "{column}: {error}");
    }
}

#[tokio::test]
async fn a_user_cannot_insert_a_session_for_another_user() {
    let f = fixture().await;
    let insert =
        |user: &str| format!("insert into sessions (tenant_id, user_id) values ('{}', '{user}')", f.a);
    let error = refused(&f, f.a, &alice(), &insert("carol")).await;
    assert!(error.to_string().contains("row-level security"), "{error}");
    let error = refused(&f, f.a, &admin_of(f.a), &insert("carol")).await;
    assert!(
        error.to_string().contains("row-level security"),
        "even an admin's is created for itself: {error}"
    );
    assert_eq!(affected(&f, f.a, &alice(), &insert("alice")).await, 1);
}

#[tokio::test]
async fn a_user_cannot_write_the_knowledge_tables_directly() {
    let f = fixture().await;
    let statements = [
        format!("insert into knowledge_documents (tenant_id, title) values ('{}', 'spam')", f.a),
        format!(
            "insert into knowledge_chunks (tenant_id, document_id, ordinal, content, embedding) \
             values ('{a}', '{a}', 9, 'spam', {v})",
            a = f.a,
            v = vector(&[(0, 1.0)])
        ),
        "update knowledge_documents set title = 'defaced'".to_owned(),
        "update knowledge_chunks set content = 'defaced'".to_owned(),
    ];
    for sql in &statements {
        for claims in [alice(), admin_of(f.a)] {
            let error = refused(&f, f.a, &claims, sql).await;
            assert_eq!(sqlstate(&error).as_deref(), Some(INSUFFICIENT_PRIVILEGE), "{sql}: {error}");
        }
    }
}

/// `add_knowledge_document` with one chunk, as the adapters call it.
fn add_document(id: Uuid) -> String {
    let embedding = vector(&[(0, 1.0)]).replace("'::vector", "").replace('\'', "");
    format!(
        "select * from add_knowledge_document('{id}', 'Manual', null, '{{}}', now(), \
         '[{{\"content\": \"c\", \"metadata\": {{}}, \"embedding\": \"{embedding}\"}}]')"
    )
}

#[tokio::test]
async fn only_admins_and_services_add_knowledge_documents() {
    let f = fixture().await;
    for role in ["authenticated", "agent", "anon", "service_role", ""] {
        let claims = serde_json::json!({"sub": "alice", "role": role});
        let error = refused(&f, f.a, &claims, &add_document(Uuid::now_v7())).await;
        assert_eq!(sqlstate(&error).as_deref(), Some(INSUFFICIENT_PRIVILEGE), "role {role:?}: {error}");
    }
    for role in ["admin", "service"] {
        let claims = serde_json::json!({"sub": "root", "role": role});
        let tx = as_user(&f, f.a, &claims).await;
        exec(&tx, &add_document(Uuid::now_v7())).await;
        tx.commit().await.unwrap();
    }
    assert_eq!(count(&f.db, "knowledge_documents").await, 4, "the two seeded and the admin's and service's");
}

#[tokio::test]
async fn set_tenant_context_is_denied_to_every_api_role() {
    let f = fixture().await;
    for role in ["anon", "authenticated", "service_role"] {
        let tx = f.db.begin().await.unwrap();
        exec(&tx, &format!("set local role {role}")).await;
        let error =
            tx.execute_unprepared(&format!("select set_tenant_context('{}')", f.b)).await.unwrap_err();
        assert_eq!(sqlstate(&error).as_deref(), Some(INSUFFICIENT_PRIVILEGE), "{role}: {error}");
        assert!(error.to_string().contains("permission denied"), "{error}");
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn a_suspended_tenants_rows_are_invisible_and_it_stores_no_knowledge() {
    let f = fixture().await;
    exec(&f.db, &format!("update tenants set status = 'suspended' where id = '{}'", f.a)).await;
    let tx = as_user(&f, f.a, &admin_of(f.a)).await;
    for table in TABLES {
        assert_eq!(count(&tx, table).await, 0, "{table}");
    }
    let found = tx
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("select id from match_knowledge({}, 10, -1, '{{}}')", vector(&[(0, 1.0)])),
        ))
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    tx.rollback().await.unwrap();
    let error = refused(&f, f.a, &admin_of(f.a), &add_document(Uuid::now_v7())).await;
    assert_eq!(sqlstate(&error).as_deref(), Some(INSUFFICIENT_PRIVILEGE), "{error}");
    let tx = as_user(&f, f.b, &admin_of(f.b)).await;
    assert_eq!(count(&tx, "sessions").await, 1, "tenant B is still active");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn anon_and_users_cannot_read_tenants_and_anon_reads_nothing() {
    let f = fixture().await;
    let error = refused(&f, f.a, &alice(), "select count(*) from tenants").await;
    assert_eq!(sqlstate(&error).as_deref(), Some(INSUFFICIENT_PRIVILEGE), "{error}");
    for table in ["tenants", "sessions", "knowledge_documents", "knowledge_chunks"] {
        let tx = f.db.begin().await.unwrap();
        exec(&tx, "set local role anon").await;
        let error = tx.execute_unprepared(&format!("select count(*) from {table}")).await.unwrap_err();
        assert_eq!(sqlstate(&error).as_deref(), Some(INSUFFICIENT_PRIVILEGE), "{table}: {error}");
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn the_api_roles_hold_exactly_the_privileges_the_adapters_use() {
    let f = fixture().await;
    let row = f
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select coalesce(string_agg(grantee || ' ' || privilege_type || ' ' || table_name, ', ' \
                 order by grantee, table_name, privilege_type), '') as grants \
             from information_schema.role_table_grants \
             where table_schema = 'public' and grantee in ('PUBLIC', 'anon', 'authenticated', 'service_role')",
        ))
        .await
        .unwrap()
        .unwrap();
    let grants: String = row.try_get("", "grants").unwrap();
    assert_eq!(
        grants,
        "authenticated SELECT knowledge_chunks, authenticated SELECT knowledge_documents, \
         authenticated INSERT sessions, authenticated SELECT sessions, \
         service_role SELECT knowledge_chunks, service_role SELECT knowledge_documents, \
         service_role INSERT sessions, service_role SELECT sessions, service_role SELECT tenants"
    );
    let row =
        f.db.query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select string_agg(grantee || ' ' || column_name, ', ' order by grantee, column_name) as columns \
             from information_schema.column_privileges \
             where table_schema = 'public' and table_name = 'sessions' and privilege_type = 'UPDATE' \
               and grantee in ('PUBLIC', 'anon', 'authenticated', 'service_role')",
        ))
        .await
        .unwrap()
        .unwrap();
    let columns: String = row.try_get("", "columns").unwrap();
    assert_eq!(
        columns,
        "authenticated metadata, authenticated title, authenticated updated_at, \
         service_role metadata, service_role title, service_role updated_at"
    );
}

#[tokio::test]
async fn every_function_of_the_schema_pins_its_search_path() {
    let f = fixture().await;
    let row = f
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select count(*) as functions, \
                    coalesce(string_agg(p.proname, ', ') filter (where not exists \
                        (select 1 from unnest(p.proconfig) as c where c like 'search_path=%')), '') as unpinned \
             from pg_proc p \
             where p.pronamespace = 'public'::regnamespace \
               and not exists (select 1 from pg_depend d \
                               where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')",
        ))
        .await
        .unwrap()
        .unwrap();
    let functions: i64 = row.try_get("", "functions").unwrap();
    let unpinned: String = row.try_get("", "unpinned").unwrap();
    assert!(functions >= 10, "the schema's own functions, not pgvector's: {functions}");
    assert_eq!(unpinned, "", "functions without a pinned search_path");
}

#[tokio::test]
async fn the_pre_request_takes_the_tenant_from_x_sba_tenant_only_for_service_role_requests() {
    let f = fixture().await;
    let context = |role: &'static str, claims: serde_json::Value| {
        let db = f.db.clone();
        let b = f.b;
        async move {
            let tx = db.begin().await.unwrap();
            exec(&tx, &format!("set local role {role}")).await;
            exec(&tx, &format!("select set_config('request.jwt.claims', '{claims}', true)")).await;
            let headers = serde_json::json!({"x-sba-tenant": b});
            exec(&tx, &format!("select set_config('request.headers', '{headers}', true)")).await;
            exec(&tx, "select sba_pre_request()").await;
            let row = tx
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "select current_tenant_id()::text as tenant",
                ))
                .await
                .unwrap()
                .unwrap();
            let tenant: Option<String> = row.try_get("", "tenant").unwrap();
            tx.rollback().await.unwrap();
            tenant
        }
    };
    let b = Some(f.b.to_string());
    let a = Some(f.a.to_string());
    assert_eq!(context("service_role", serde_json::json!({"role": "service_role"})).await, b);
    assert_eq!(context("authenticated", user_of(f.a, "alice")).await, a, "a user's header is ignored");
    assert_eq!(
        context("authenticated", serde_json::json!({"sub": "alice", "role": "service_role"})).await,
        None,
        "the claim alone is not the service role"
    );
}

#[tokio::test]
async fn a_stored_cors_origin_must_be_a_web_origin() {
    let f = fixture().await;
    let set = |origin: &str| {
        let db = f.db.clone();
        let sql = format!(
            "update tenants set cors_origins = array['{}'] where id = '{}'",
            origin.replace('\'', "''"),
            f.a
        );
        async move { db.execute_unprepared(&sql).await }
    };
    for good in [
        "https://app.example.com",
        "http://localhost:3000",
        "https://a-b.c1.example:65535",
        "http://127.0.0.1:8080",
        "http://[::1]:5173",
        "https://[2001:db8::1]",
        "https://xn--bcher-kva.example",
    ] {
        set(good).await.unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "null",
        "file://",
        "file:///etc/passwd",
        "https://app.example.com/",
        "https://app.example.com/path",
        "https://app.example.com?q",
        "https://app.example.com#f",
        "https://user@app.example.com",
        "https://App.example.com",
        "ftp://app.example.com",
        "https://app.example.com:0",
        "https://app.example.com:65536",
        "https://app.example.com:080",
        "https://app.example.com.",
        "https://-app.example.com",
        "https://app_1.example.com",
        "https://999.1.1.1",
        "https://1.2.3",
        "https://[::1",
        "https://[zz::1]",
        "https://[::1/64]",
        "https://",
        "",
        " https://app.example.com",
    ] {
        let error = set(bad).await.expect_err(bad);
        assert_eq!(sqlstate(&error).as_deref(), Some("23514"), "{bad}: {error}");
    }
    let nulls =
        f.db.execute_unprepared(&format!(
            "update tenants set cors_origins = array[null::text] where id = '{}'",
            f.a
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&nulls).as_deref(), Some("23514"), "{nulls}");
}

/// A transaction as PostgREST opens one for a request: the role, then the verified claims
/// and the request headers (transaction-local), then the pre-request function.
async fn as_postgrest_request(
    f: &Fixture,
    role: &str,
    claims: &serde_json::Value,
    headers: &serde_json::Value,
) -> DatabaseTransaction {
    let tx = f.db.begin().await.unwrap();
    exec(&tx, &format!("set local role {role}")).await;
    exec(&tx, &format!("select set_config('request.jwt.claims', '{claims}', true)")).await;
    exec(&tx, &format!("select set_config('request.headers', '{headers}', true)")).await;
    exec(&tx, "select sba_pre_request()").await;
    tx
}

#[tokio::test]
async fn through_postgrest_a_user_works_on_its_own_sessions_and_reads_knowledge_with_its_token() {
    let f = fixture().await;
    let none = serde_json::json!({});
    let tx = as_postgrest_request(&f, "authenticated", &user_of(f.a, "alice"), &none).await;
    exec(
        &tx,
        &format!("insert into sessions (tenant_id, user_id, title) values ('{}', 'alice', 'new')", f.a),
    )
    .await;
    exec(&tx, "update sessions set title = 'renamed', metadata = '{}', updated_at = now()").await;
    let row = tx
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select count(*) filter (where title = 'renamed') as renamed, count(*) as n from sessions",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "renamed").unwrap(), 2, "alice's two sessions, not carol's");
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 2);
    assert_eq!(count(&tx, "knowledge_documents").await, 1);
    assert_eq!(count(&tx, "knowledge_chunks").await, 3);
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn through_postgrest_the_service_role_writes_and_searches_knowledge_for_the_named_tenant_only() {
    let f = fixture().await;
    let service = serde_json::json!({"role": "service_role"});
    let tx =
        as_postgrest_request(&f, "service_role", &service, &serde_json::json!({"x-sba-tenant": f.b})).await;
    let id = Uuid::now_v7();
    exec(&tx, &add_document(id)).await;
    let found = tx
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("select document_id from match_knowledge({}, 10, -1, '{{}}')", vector(&[(0, 1.0)])),
        ))
        .await
        .unwrap();
    let documents: Vec<Uuid> = found.iter().map(|r| r.try_get("", "document_id").unwrap()).collect();
    assert_eq!(documents.len(), 2, "tenant B's seeded chunk and the new one: {documents:?}");
    assert!(documents.contains(&id) && documents.contains(&f.b));
    tx.commit().await.unwrap();
    let row =
        f.db.query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("select tenant_id from knowledge_documents where id = '{id}'"),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<Uuid>("", "tenant_id").unwrap(), f.b);

    // Without a tenant header there is no context, so nothing is written.
    let tx = as_postgrest_request(&f, "service_role", &service, &serde_json::json!({})).await;
    let error = tx.execute_unprepared(&add_document(Uuid::now_v7())).await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some(INSUFFICIENT_PRIVILEGE), "{error}");
    tx.rollback().await.unwrap();
    // A plain user naming another tenant in the header gets its own token's tenant.
    let tx = as_postgrest_request(
        &f,
        "authenticated",
        &user_of(f.a, "alice"),
        &serde_json::json!({"x-sba-tenant": f.b}),
    )
    .await;
    let error = tx.execute_unprepared(&add_document(Uuid::now_v7())).await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some(INSUFFICIENT_PRIVILEGE), "{error}");
    tx.rollback().await.unwrap();
}
