#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! The direct-SQL Supabase adapters, `SupabaseSqlSessionStore` and
//! `SupabaseSqlKnowledgeStore`, on the final Supabase schema (migrations/supabase/, applied in
//! order) in the private PostgreSQL with pgvector: round trips, keyset pages, tenant
//! isolation, the error contract, atomic documents, and similarity search that stays correct
//! when filters discard most of what the HNSW index hands up. Each test has its own database
//! with two tenants.

use chrono::{DateTime, Utc};
use sba_application::context::Caller;
use sba_application::pagination::{Cursor, PageRequest};
use sba_application::ports::{KnowledgeStore as _, RepositoryError, SessionStore as _};
use sba_domain::knowledge::{Embedding, KnowledgeQuery, NewChunk, NewDocument};
use sba_domain::{
    DocumentId, Metadata, Role, Session, SessionId, SessionTitle, SessionUpdate, TenantId, UserId,
};
use sba_infrastructure::internal_store::test_support::{execute_sql, fresh_supabase_url};
use sba_infrastructure::supabase::{SupabaseSql, UnitOfWork};
use sea_orm::{
    ConnectOptions, ConnectionTrait as _, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
    Statement, TransactionTrait as _,
};
use serde_json::json;
use uuid::Uuid;

struct Fixture {
    /// As the superuser (which row-level security does not bind): for checking what is stored.
    db: DatabaseConnection,
    sql: SupabaseSql,
    a: Caller,
    b: Caller,
}

/// A fresh database with the final schema and tenants A and B.
async fn fixture() -> Fixture {
    setup("").await
}

/// As [`fixture`], with the planner steered to the HNSW index for every nearest-neighbour
/// query (`enable_sort = off` rules out the exact plan, the tenant index plus a sort). On a
/// few thousand rows the planner reads a small tenant exactly; it takes the HNSW index when
/// it expects the tenant filter to keep many rows, as on a large table with few tenants, and
/// that is the plan whose filtering these tests are about.
async fn fixture_preferring_the_hnsw_index() -> Fixture {
    setup(
        "do $$ begin execute format('alter database %I set enable_sort = off', current_database()); end $$;",
    )
    .await
}

async fn setup(database_settings: &str) -> Fixture {
    let url = fresh_supabase_url().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    execute_sql(&url, &format!("insert into tenants (id, name) values ('{a}', 'a'), ('{b}', 'b');")).await;
    if !database_settings.is_empty() {
        // Before the pool connects: database settings apply to new connections.
        execute_sql(&url, database_settings).await;
    }
    let mut options = ConnectOptions::new(url);
    options.max_connections(4).sqlx_logging(false);
    let db = Database::connect(options).await.unwrap();
    let caller = |tenant: Uuid, user: &str| Caller {
        tenant: TenantId::from_uuid(tenant),
        user: UserId::parse(user).unwrap(),
        role: Role::Authenticated,
        token: None,
    };
    Fixture { sql: SupabaseSql::new(db.clone()), db, a: caller(a, "alice"), b: caller(b, "bob") }
}

/// A time in the future, `micros` microseconds apart (PostgreSQL keeps microseconds).
fn at(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_800_000_000_000_000 + micros).unwrap()
}

fn metadata(value: &serde_json::Value) -> Metadata {
    Metadata::parse(value.as_object().unwrap().clone()).unwrap()
}

fn session_of(caller: &Caller, created_at: DateTime<Utc>) -> Session {
    Session {
        id: SessionId::from_uuid(Uuid::now_v7()),
        tenant_id: caller.tenant,
        user_id: caller.user.clone(),
        title: Some(SessionTitle::parse("Refund for order 42").unwrap()),
        metadata: metadata(&json!({"channel": "web", "tags": ["a", "b"]})),
        created_at,
        updated_at: created_at,
    }
}

/// A 384-dimension embedding with the given components set, the others zero.
fn embedding(components: &[(usize, f64)]) -> Embedding {
    let mut values = vec![0.0; 384];
    for &(i, v) in components {
        values[i] = v;
    }
    Embedding::parse("embedding", &values).unwrap()
}

fn chunk(content: &str, meta: &serde_json::Value, embedding: Embedding) -> NewChunk {
    NewChunk::new(content, metadata(meta), embedding).unwrap()
}

fn document(title: &str, chunks: Vec<NewChunk>) -> NewDocument {
    NewDocument::new(title, Some("https://docs.test/manual"), metadata(&json!({"kind": "manual"})), chunks)
        .unwrap()
}

fn query(
    embedding: Embedding,
    top_k: u32,
    min_similarity: f64,
    filter: &serde_json::Value,
) -> KnowledgeQuery {
    KnowledgeQuery::new(embedding, Some(top_k), Some(min_similarity), metadata(filter)).unwrap()
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

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await.unwrap().unwrap();
    row.try_get_by_index(0).unwrap()
}

// Sessions.

#[tokio::test]
async fn a_session_round_trips_through_create_get_and_update() {
    let f = fixture().await;
    let store = f.sql.session_store();
    let session = session_of(&f.a, at(0));
    store.create(&f.a, &session).await.unwrap();
    assert_eq!(store.get(&f.a, session.id).await.unwrap(), Some(session.clone()));

    let change = SessionUpdate {
        title: Some(Some(SessionTitle::parse("Refund sent").unwrap())),
        metadata: Some(metadata(&json!({"channel": "email", "nested": {"n": 1}}))),
    };
    let mut expected = session.clone();
    change.apply_to(&mut expected, at(5));
    let updated = store.update(&f.a, session.id, &change, at(5)).await.unwrap();
    assert_eq!(updated, Some(expected.clone()), "returns the session as stored");
    assert_eq!(store.get(&f.a, session.id).await.unwrap(), Some(expected.clone()));

    // `Some(None)` clears the title; absent fields keep what is stored.
    let clear = SessionUpdate { title: Some(None), metadata: None };
    clear.apply_to(&mut expected, at(9));
    assert_eq!(store.update(&f.a, session.id, &clear, at(9)).await.unwrap(), Some(expected.clone()));
    assert_eq!(store.get(&f.a, session.id).await.unwrap(), Some(expected));

    let unknown = SessionId::from_uuid(Uuid::now_v7());
    assert_eq!(store.get(&f.a, unknown).await.unwrap(), None);
    assert_eq!(store.update(&f.a, unknown, &clear, at(10)).await.unwrap(), None);
}

#[tokio::test]
async fn listing_pages_through_every_session_newest_first_without_gaps_or_duplicates() {
    let f = fixture().await;
    let store = f.sql.session_store();
    // Pairs share a creation time, so the id decides their order.
    let mut sessions = Vec::new();
    for micros in [0, 10, 10, 20, 30, 30, 40] {
        let session = session_of(&f.a, at(micros));
        store.create(&f.a, &session).await.unwrap();
        sessions.push(session);
    }
    store.create(&f.b, &session_of(&f.b, at(50))).await.unwrap();
    sessions.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));

    let first = store.list(&f.a, PageRequest::first(3)).await.unwrap();
    // A session created between two pages is newer than the cursor: it shifts nothing.
    store.create(&f.a, &session_of(&f.a, at(60))).await.unwrap();
    let mut listed = first.items.clone();
    let mut next = first.next;
    let mut pages = 1;
    while let Some(cursor) = next {
        assert!(matches!(cursor, Cursor::Time { .. }));
        let page = store.list(&f.a, PageRequest { limit: 3, after: Some(cursor) }).await.unwrap();
        assert!(page.items.len() <= 3);
        listed.extend(page.items);
        next = page.next;
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(listed, sessions, "every session once, newest first, tenant B's left out");

    let exact = store.list(&f.a, PageRequest::first(8)).await.unwrap();
    assert_eq!(exact.items.len(), 8);
    assert_eq!(exact.next, None, "no next page when the last row fills the page");
    let refused = store.list(&f.a, PageRequest { limit: 3, after: Some(Cursor::Seq(1)) }).await.unwrap_err();
    assert!(matches!(refused, RepositoryError::Unexpected(_)), "{refused:?}");
}

#[tokio::test]
async fn another_tenants_session_is_missing_for_get_update_and_list() {
    let f = fixture().await;
    let store = f.sql.session_store();
    let theirs = session_of(&f.b, at(0));
    store.create(&f.b, &theirs).await.unwrap();

    assert_eq!(store.get(&f.a, theirs.id).await.unwrap(), None);
    let change = SessionUpdate { title: Some(None), metadata: Some(Metadata::default()) };
    assert_eq!(store.update(&f.a, theirs.id, &change, at(1)).await.unwrap(), None);
    assert!(store.list(&f.a, PageRequest::first(10)).await.unwrap().items.is_empty());
    assert_eq!(store.get(&f.b, theirs.id).await.unwrap(), Some(theirs), "tenant A's update changed nothing");

    let mut forged = session_of(&f.b, at(2));
    forged.user_id = f.a.user.clone();
    let refused = store.create(&f.a, &forged).await.unwrap_err();
    assert!(
        matches!(refused, RepositoryError::Unexpected(_)),
        "a session of tenant B created as A: {refused:?}"
    );
    assert_eq!(store.get(&f.b, forged.id).await.unwrap(), None);
}

#[tokio::test]
async fn a_duplicate_session_id_is_a_conflict() {
    let f = fixture().await;
    let store = f.sql.session_store();
    let session = session_of(&f.a, at(0));
    store.create(&f.a, &session).await.unwrap();
    let mut again = session_of(&f.a, at(1));
    again.id = session.id;
    let conflict = store.create(&f.a, &again).await.unwrap_err();
    assert!(matches!(conflict, RepositoryError::Conflict(_)), "{conflict:?}");
    assert_eq!(store.get(&f.a, session.id).await.unwrap(), Some(session.clone()), "the first one is kept");

    // Ids are global: an id taken by another tenant conflicts too (and reveals nothing else).
    let mut theirs = session_of(&f.b, at(2));
    theirs.id = session.id;
    let conflict = store.create(&f.b, &theirs).await.unwrap_err();
    assert!(matches!(conflict, RepositoryError::Conflict(_)), "{conflict:?}");
}

// Knowledge documents.

#[tokio::test]
async fn a_document_is_stored_with_its_chunks_and_read_back_in_order() {
    let f = fixture().await;
    let store = f.sql.knowledge_store();
    let chunks: Vec<NewChunk> = (0..5)
        .map(|i| chunk(&format!("part {i}"), &json!({"part": i}), embedding(&[(i, 1.0), (100, 0.5)])))
        .collect();
    let id = DocumentId::from_uuid(Uuid::now_v7());
    let now = DateTime::from_timestamp_nanos(1_800_000_000_123_456_789);
    let stored = store.add_document(&f.a, id, &document("Manual", chunks), now).await.unwrap();

    assert_eq!(stored.id, id);
    assert_eq!(stored.tenant_id, f.a.tenant);
    assert_eq!(stored.created_at, at(123_456), "kept to the microsecond, as stored");
    let ordinals: Vec<u32> = stored.chunks.iter().map(|c| c.ordinal).collect();
    assert_eq!(ordinals, [0, 1, 2, 3, 4]);
    let read = store.get_document(&f.a, id).await.unwrap().unwrap();
    assert_eq!(read, stored, "the document as read is the document as returned");
    assert_eq!(read.chunks[3].content, "part 3");
    assert_eq!(read.chunks[3].metadata, metadata(&json!({"part": 3})));
    assert_eq!(read.source.as_deref(), Some("https://docs.test/manual"));

    assert_eq!(store.get_document(&f.b, id).await.unwrap(), None, "another tenant's document is missing");
    assert_eq!(store.get_document(&f.a, DocumentId::from_uuid(Uuid::now_v7())).await.unwrap(), None);
}

#[tokio::test]
async fn a_duplicate_document_id_is_a_conflict_and_changes_nothing() {
    let f = fixture().await;
    let store = f.sql.knowledge_store();
    let id = DocumentId::from_uuid(Uuid::now_v7());
    let first = document("First", vec![chunk("one", &json!({}), embedding(&[(0, 1.0)]))]);
    let stored = store.add_document(&f.a, id, &first, at(0)).await.unwrap();
    let second = document(
        "Second",
        vec![
            chunk("two", &json!({}), embedding(&[(1, 1.0)])),
            chunk("three", &json!({}), embedding(&[(2, 1.0)])),
        ],
    );
    let conflict = store.add_document(&f.a, id, &second, at(1)).await.unwrap_err();
    assert!(matches!(conflict, RepositoryError::Conflict(_)), "{conflict:?}");
    assert_eq!(store.get_document(&f.a, id).await.unwrap(), Some(stored));
    assert_eq!(count(&f.db, "select count(*) from knowledge_chunks").await, 1);
}

/// `add_knowledge_document($1..$6)` as the adapters call it, with `chunks` as given.
fn add_document_rpc(id: Uuid, chunks: serde_json::Value) -> Statement {
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        "select chunk_id, ordinal from public.add_knowledge_document($1, $2, $3, $4, $5, $6)",
        [
            id.into(),
            "Manual".into(),
            Option::<String>::None.into(),
            json!({}).into(),
            at(0).into(),
            chunks.into(),
        ],
    )
}

#[tokio::test]
async fn a_chunk_with_a_wrong_dimension_rejects_the_whole_document_and_leaves_nothing_behind() {
    let f = fixture().await;
    let id = Uuid::now_v7();
    // The domain cannot make such an embedding: call the RPC as the adapter does.
    let chunks = json!([
        {"content": "fine", "metadata": {}, "embedding": embedding(&[(0, 1.0)]).to_pgvector_text()},
        {"content": "short", "metadata": {}, "embedding": "[1,0,0]"},
    ]);
    let tx = f.sql.begin(UnitOfWork::Tenant(f.a.tenant)).await.unwrap();
    let error = tx.query_all_raw(add_document_rpc(id, chunks)).await.unwrap_err();
    assert!(error.to_string().contains("expected 384 dimensions, not 3"), "{error}");
    drop(tx);

    assert_eq!(count(&f.db, "select count(*) from knowledge_documents").await, 0);
    assert_eq!(count(&f.db, "select count(*) from knowledge_chunks").await, 0);
    let store = f.sql.knowledge_store();
    assert_eq!(store.get_document(&f.a, DocumentId::from_uuid(id)).await.unwrap(), None);
}

#[tokio::test]
async fn add_knowledge_document_refuses_to_run_without_a_tenant_context() {
    let f = fixture().await;
    let chunks =
        json!([{"content": "c", "metadata": {}, "embedding": embedding(&[(0, 1.0)]).to_pgvector_text()}]);

    // Platform work (service_role bypasses row-level security) has no tenant to store for.
    let platform = f.sql.begin(UnitOfWork::Platform).await.unwrap();
    let error = platform.query_all_raw(add_document_rpc(Uuid::now_v7(), chunks.clone())).await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("42501"), "{error}");
    drop(platform);

    // A user's transaction that never set a context.
    let tx = f.db.begin().await.unwrap();
    tx.execute_unprepared("set local role authenticated").await.unwrap();
    let error = tx.query_all_raw(add_document_rpc(Uuid::now_v7(), chunks)).await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("42501"), "{error}");
    drop(tx);

    assert_eq!(count(&f.db, "select count(*) from knowledge_documents").await, 0);
}

// Search.

/// Tenant A's chunks at known angles from the first axis, tenant B's exact match.
async fn seed_known_vectors(f: &Fixture) {
    let store = f.sql.knowledge_store();
    let ours = document(
        "Ours",
        vec![
            chunk("orthogonal", &json!({"lang": "en"}), embedding(&[(1, 1.0)])),
            chunk("diagonal", &json!({"lang": "de"}), embedding(&[(0, 1.0), (1, 1.0)])),
            chunk("exact", &json!({"lang": "en", "tags": ["x"]}), embedding(&[(0, 2.0)])),
            chunk("opposite", &json!({"lang": "en"}), embedding(&[(0, -1.0)])),
            chunk("close", &json!({"lang": "en"}), embedding(&[(0, 0.9), (1, 0.1)])),
        ],
    );
    store.add_document(&f.a, DocumentId::from_uuid(Uuid::now_v7()), &ours, at(0)).await.unwrap();
    let theirs =
        document("Theirs", vec![chunk("tenant b exact", &json!({"lang": "en"}), embedding(&[(0, 1.0)]))]);
    store.add_document(&f.b, DocumentId::from_uuid(Uuid::now_v7()), &theirs, at(0)).await.unwrap();
}

#[tokio::test]
async fn search_ranks_the_callers_chunks_by_cosine_similarity() {
    let f = fixture().await;
    seed_known_vectors(&f).await;
    let store = f.sql.knowledge_store();
    let found = store.search(&f.a, &query(embedding(&[(0, 1.0)]), 10, -1.0, &json!({}))).await.unwrap();
    let ranked: Vec<(&str, f64)> = found.iter().map(|m| (m.content.as_str(), m.similarity)).collect();
    let expected = [
        ("exact", 1.0),
        ("close", 0.9 / 0.82_f64.sqrt()),
        ("diagonal", std::f64::consts::FRAC_1_SQRT_2),
        ("orthogonal", 0.0),
        ("opposite", -1.0),
    ];
    assert_eq!(ranked.len(), expected.len(), "{ranked:?}");
    for ((content, similarity), (want, want_similarity)) in ranked.iter().zip(expected) {
        assert_eq!(*content, want, "{ranked:?}");
        assert!(
            (similarity - want_similarity).abs() < 1e-6,
            "{content}: {similarity}, not {want_similarity}"
        );
    }
    assert_eq!(found[0].metadata, metadata(&json!({"lang": "en", "tags": ["x"]})));
    assert_eq!(found[0].ordinal, 2);

    let theirs = store.search(&f.b, &query(embedding(&[(0, 1.0)]), 10, -1.0, &json!({}))).await.unwrap();
    let contents: Vec<&str> = theirs.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["tenant b exact"], "each tenant sees only its own chunks");

    let top = store.search(&f.a, &query(embedding(&[(0, 1.0)]), 2, -1.0, &json!({}))).await.unwrap();
    assert_eq!(top.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["exact", "close"]);
}

#[tokio::test]
async fn search_applies_the_minimum_similarity_and_the_metadata_filter() {
    let f = fixture().await;
    seed_known_vectors(&f).await;
    let store = f.sql.knowledge_store();
    let contents = |found: Vec<sba_domain::knowledge::KnowledgeMatch>| {
        found.into_iter().map(|m| m.content).collect::<Vec<_>>()
    };
    let q = embedding(&[(0, 1.0)]);
    assert_eq!(
        contents(store.search(&f.a, &query(q.clone(), 10, 0.5, &json!({}))).await.unwrap()),
        ["exact", "close", "diagonal"]
    );
    assert_eq!(
        contents(store.search(&f.a, &query(q.clone(), 10, 0.5, &json!({"lang": "en"}))).await.unwrap()),
        ["exact", "close"]
    );
    assert_eq!(
        contents(store.search(&f.a, &query(q.clone(), 10, -1.0, &json!({"tags": ["x"]}))).await.unwrap()),
        ["exact"],
        "containment as jsonb: an array contains the arrays of its elements"
    );
    assert_eq!(
        contents(store.search(&f.a, &query(q.clone(), 10, -1.0, &json!({"tags": "x"}))).await.unwrap()),
        Vec::<String>::new(),
        "jsonb's array-contains-a-scalar exception holds at the top level only, never inside an object"
    );
    assert_eq!(
        contents(store.search(&f.a, &query(q.clone(), 10, -1.0, &json!({"lang": "fr"}))).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(contents(store.search(&f.a, &query(q, 10, 1.0, &json!({}))).await.unwrap()).len(), 1);
}

/// A deterministic stream of noise in `[-0.5, 0.5)` (xorshift64*): the same data every run.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        #[allow(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
        let unit = bits as f64 / (1_u64 << 53) as f64;
        unit - 0.5
    }

    /// `scale` times the first axis plus noise of `spread` on every axis.
    fn around_first_axis(&mut self, scale: f64, spread: f64) -> Embedding {
        let values: Vec<f64> =
            (0..384).map(|i| if i == 0 { scale } else { 0.0 } + self.next() * spread).collect();
        Embedding::parse("embedding", &values).unwrap()
    }
}

/// Stores `count` chunks for `caller`, in documents of at most 1000 chunks, and returns them.
async fn seed_noise(
    f: &Fixture,
    caller: &Caller,
    noise: &mut Noise,
    count: usize,
    scale: f64,
    spread: f64,
) -> Vec<NewChunk> {
    let chunks: Vec<NewChunk> = (0..count)
        .map(|i| chunk(&format!("chunk {i}"), &json!({"i": i}), noise.around_first_axis(scale, spread)))
        .collect();
    for part in chunks.chunks(1000) {
        let doc = document("Noise", part.to_vec());
        f.sql
            .knowledge_store()
            .add_document(caller, DocumentId::from_uuid(Uuid::now_v7()), &doc, at(0))
            .await
            .unwrap();
    }
    chunks
}

/// What the first migration's `match_knowledge` ran: filters applied to the HNSW scan's
/// candidates, in the caller's unit of work. Returns how many rows it found, and whether the
/// HNSW index served it.
async fn first_migration_search(
    f: &Fixture,
    caller: &Caller,
    q: &Embedding,
    match_count: i32,
) -> (usize, bool) {
    let tx = f.sql.begin(UnitOfWork::Tenant(caller.tenant)).await.unwrap();
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "select c.id from public.knowledge_chunks c \
             where c.tenant_id = public.current_tenant_id() and c.metadata @> '{}' \
               and 1 - (c.embedding <=> $1::vector) >= -1 \
             order by c.embedding <=> $1::vector limit least(greatest($2, 1), 100)",
            [q.to_pgvector_text().into(), match_count.into()],
        ))
        .await
        .unwrap();
    let used = hnsw_scans(&tx).await > 0;
    tx.rollback().await.unwrap();
    (rows.len(), used)
}

/// Scans of the HNSW index in the current transaction so far.
async fn hnsw_scans(tx: &sea_orm::DatabaseTransaction) -> i64 {
    let row = tx
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select pg_stat_get_xact_numscans('public.knowledge_chunks_embedding'::regclass) as n",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

/// `match_knowledge` as the adapter calls it, in the caller's unit of work: whether the HNSW
/// index served it (so the rows were not found by an exact scan).
async fn match_knowledge_used_hnsw(f: &Fixture, caller: &Caller, q: &Embedding, match_count: i32) -> bool {
    let tx = f.sql.begin(UnitOfWork::Tenant(caller.tenant)).await.unwrap();
    tx.query_all_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "select id from public.match_knowledge($1::vector, $2, -1, '{}')",
        [q.to_pgvector_text().into(), match_count.into()],
    ))
    .await
    .unwrap();
    let used = hnsw_scans(&tx).await > 0;
    tx.rollback().await.unwrap();
    used
}

#[tokio::test]
async fn a_small_tenant_gets_its_top_k_even_when_another_tenants_chunks_are_all_nearer() {
    let f = fixture_preferring_the_hnsw_index().await;
    let mut noise = Noise(0x5ba_5eed);
    // Tenant B: 2000 chunks close to the query (cosine about 0.85 to 0.9); tenant A: 30
    // chunks further away (about 0.3 to 0.5), so every one of B's is nearer than all of A's.
    seed_noise(&f, &f.b, &mut noise, 2000, 1.0, 0.1).await;
    let ours = seed_noise(&f, &f.a, &mut noise, 30, 0.5, 0.2).await;
    let q = embedding(&[(0, 1.0)]);

    let (found_before, plain_used_hnsw) = first_migration_search(&f, &f.a, &q, 20).await;
    assert!(plain_used_hnsw, "the scenario needs the HNSW plan");
    assert!(
        found_before < 20,
        "the first migration's search finds {found_before} of 20: the scenario is not filtered"
    );
    assert!(
        match_knowledge_used_hnsw(&f, &f.a, &q, 20).await,
        "match_knowledge is not exercised on the HNSW index"
    );

    let found = f.sql.knowledge_store().search(&f.a, &query(q.clone(), 20, -1.0, &json!({}))).await.unwrap();
    assert_eq!(found.len(), 20);
    let mut exact: Vec<f64> = ours.iter().map(|c| c.embedding.cosine_similarity(&q)).collect();
    exact.sort_by(|x, y| y.total_cmp(x));
    let similarities: Vec<f64> = found.iter().map(|m| m.similarity).collect();
    assert!(similarities.is_sorted_by(|x, y| x >= y), "best first: {similarities:?}");
    for m in &found {
        let i: usize = m.content.strip_prefix("chunk ").unwrap().parse().unwrap();
        assert_eq!(m.metadata, metadata(&json!({"i": i})));
        let own = ours[i].embedding.cosine_similarity(&q);
        assert!((m.similarity - own).abs() < 1e-5, "{} is tenant A's chunk {i}", m.content);
        assert!(m.similarity < 0.6, "tenant B's chunks (similarity above 0.8) never appear");
    }
    // An approximate index: the 20 found are A's 20 nearest up to the index's recall.
    let threshold = exact[19] - 1e-5;
    let among_best = similarities.iter().filter(|s| **s >= threshold).count();
    assert!(among_best >= 18, "{among_best} of the 20 found are among the 20 nearest");
}

#[tokio::test]
async fn a_search_for_a_hundred_returns_a_hundred_when_the_tenant_has_them() {
    let f = fixture_preferring_the_hnsw_index().await;
    let mut noise = Noise(0x0dec_0ded);
    // Tenant A's chunks are the nearest: only the number asked for is at stake here.
    seed_noise(&f, &f.a, &mut noise, 150, 1.0, 0.1).await;
    seed_noise(&f, &f.b, &mut noise, 100, 0.5, 0.2).await;
    let q = embedding(&[(0, 1.0)]);

    let (found_before, plain_used_hnsw) = first_migration_search(&f, &f.a, &q, 100).await;
    assert!(plain_used_hnsw, "the scenario needs the HNSW plan");
    assert!(found_before <= 40, "a plain HNSW scan stops at hnsw.ef_search (40): found {found_before}");
    assert!(
        match_knowledge_used_hnsw(&f, &f.a, &q, 100).await,
        "match_knowledge is not exercised on the HNSW index"
    );

    let found = f.sql.knowledge_store().search(&f.a, &query(q, 100, -1.0, &json!({}))).await.unwrap();
    assert_eq!(found.len(), 100);
    assert!(found.windows(2).all(|w| w[0].similarity >= w[1].similarity), "best first");
    let chunk_ids: std::collections::HashSet<_> = found.iter().map(|m| m.chunk_id).collect();
    assert_eq!(chunk_ids.len(), 100, "no chunk twice");
}
