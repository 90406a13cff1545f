#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! The embedded SQLite store for sessions and knowledge, on `sqlite::memory:` (a fresh
//! database per test) and on temporary files where a second connection or a reopen is
//! needed.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use sba_application::context::Caller;
use sba_application::pagination::{Cursor, PageRequest};
use sba_application::ports::{KnowledgeStore, RepositoryError, SessionStore};
use sba_domain::knowledge::{
    EMBEDDING_DIMENSION, Embedding, KnowledgeDocument, KnowledgeQuery, NewChunk, NewDocument,
};
use sba_domain::{
    DocumentId, Metadata, Role, Session, SessionId, SessionTitle, SessionUpdate, TenantId, UserId,
};
use sba_infrastructure::embedded::EmbeddedStore;
use sba_infrastructure::internal_store::test_support::execute_sql;
use serde_json::json;
use uuid::Uuid;

async fn memory_store() -> EmbeddedStore {
    EmbeddedStore::open("sqlite::memory:").await.expect("opening an in-memory store")
}

/// A SQLite file in the temporary directory, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("sba-embedded-{}.db", Uuid::new_v4().simple())))
    }

    fn url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

fn tenant() -> TenantId {
    TenantId::from_uuid(Uuid::now_v7())
}

fn caller(tenant: TenantId) -> Caller {
    Caller { tenant, user: UserId::parse("user-1").unwrap(), role: Role::Authenticated, token: None }
}

fn metadata(value: &serde_json::Value) -> Metadata {
    Metadata::parse(value.as_object().cloned().unwrap()).unwrap()
}

/// A time with microsecond precision, `n` microseconds after a fixed instant.
fn at(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_800_000_000_000_000 + n).unwrap()
}

fn session(tenant: TenantId, created_at: DateTime<Utc>) -> Session {
    Session {
        id: SessionId::from_uuid(Uuid::now_v7()),
        tenant_id: tenant,
        user_id: UserId::parse("user-1").unwrap(),
        title: Some(SessionTitle::parse("Refund for order 42 — ¿qué tal?").unwrap()),
        metadata: metadata(&json!({"channel": "web", "n": 3, "nested": {"a": [1, 2.5, null]}})),
        created_at,
        updated_at: created_at,
    }
}

/// An embedding with the given weights on the given axes, zero elsewhere.
fn vector(weights: &[(usize, f64)]) -> Embedding {
    let mut values = vec![0.0; EMBEDDING_DIMENSION];
    for (axis, weight) in weights {
        values[*axis] = *weight;
    }
    Embedding::parse("embedding", &values).unwrap()
}

fn axis(n: usize) -> Embedding {
    vector(&[(n, 1.0)])
}

fn chunk(content: &str, meta: &serde_json::Value, embedding: Embedding) -> NewChunk {
    NewChunk::new(content, metadata(meta), embedding).unwrap()
}

fn document(title: &str, chunks: Vec<NewChunk>) -> NewDocument {
    NewDocument::new(title, Some("https://example.test/manual"), metadata(&json!({"kind": "manual"})), chunks)
        .unwrap()
}

/// `n` chunks with deterministic pseudo-random embeddings.
fn noise_chunks(n: usize, seed: u64) -> Vec<NewChunk> {
    let mut state = seed;
    (0..n)
        .map(|i| {
            let values: Vec<f64> = (0..EMBEDDING_DIMENSION)
                .map(|_| {
                    state =
                        state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    f64::from(u32::try_from(state >> 40).unwrap()) / f64::from(1_u32 << 24) - 0.5
                })
                .collect();
            chunk(&format!("noise {i}"), &json!({"i": i}), Embedding::parse("e", &values).unwrap())
        })
        .collect()
}

fn query(
    embedding: Embedding,
    top_k: u32,
    min_similarity: f64,
    filter: &serde_json::Value,
) -> KnowledgeQuery {
    KnowledgeQuery::new(embedding, Some(top_k), Some(min_similarity), metadata(filter)).unwrap()
}

async fn add(
    store: &impl KnowledgeStore,
    caller: &Caller,
    title: &str,
    chunks: Vec<NewChunk>,
) -> KnowledgeDocument {
    store
        .add_document(caller, DocumentId::from_uuid(Uuid::now_v7()), &document(title, chunks), at(0))
        .await
        .unwrap()
}

// Sessions.

#[tokio::test]
async fn a_created_session_reads_back_identically() {
    let sessions = memory_store().await.session_store();
    let owner = tenant();
    let mut stored = session(owner, at(123_456));
    stored.updated_at = at(999_999);
    sessions.create(&caller(owner), &stored).await.unwrap();

    assert_eq!(sessions.get(&caller(owner), stored.id).await.unwrap(), Some(stored.clone()));

    let untitled = Session { id: SessionId::from_uuid(Uuid::now_v7()), title: None, ..stored };
    sessions.create(&caller(owner), &untitled).await.unwrap();
    assert_eq!(sessions.get(&caller(owner), untitled.id).await.unwrap(), Some(untitled));
    assert_eq!(sessions.get(&caller(owner), SessionId::from_uuid(Uuid::now_v7())).await.unwrap(), None);
}

#[tokio::test]
async fn sessions_list_newest_first_in_keyset_pages_without_gaps_or_duplicates() {
    let sessions = memory_store().await.session_store();
    let owner = tenant();
    // Three sessions share one creation time: the id decides their order.
    let times = [at(10), at(20), at(20), at(20), at(30), at(40), at(50)];
    let mut expected = Vec::new();
    for time in times {
        let s = session(owner, time);
        sessions.create(&caller(owner), &s).await.unwrap();
        expected.push(s);
    }
    expected.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id)));

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut after = None;
    loop {
        let page = sessions.list(&caller(owner), PageRequest { limit: 2, after }).await.unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|s| s.id));
        if pages == 1 {
            // A session created while the client pages is newer than the cursor: it does not
            // shift the later pages.
            sessions.create(&caller(owner), &session(owner, at(60))).await.unwrap();
        }
        match page.next {
            Some(next) => {
                let last = page.items.last().unwrap();
                assert_eq!(next, Cursor::Time { at: last.created_at, id: last.id.as_uuid() });
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, expected.iter().map(|s| s.id).collect::<Vec<_>>());

    let everything = sessions.list(&caller(owner), PageRequest::first(100)).await.unwrap();
    assert_eq!(everything.items.len(), 8);
    assert_eq!(everything.next, None);
}

#[tokio::test]
async fn a_seq_cursor_is_refused_by_the_session_listing() {
    let sessions = memory_store().await.session_store();
    let error = sessions.list(&caller(tenant()), PageRequest { limit: 2, after: Some(Cursor::Seq(3)) }).await;
    assert!(matches!(error, Err(RepositoryError::Unexpected(_))), "{error:?}");
}

#[tokio::test]
async fn another_tenants_session_is_invisible_to_get_list_and_update() {
    let sessions = memory_store().await.session_store();
    let (owner, stranger) = (tenant(), tenant());
    let stored = session(owner, at(1));
    sessions.create(&caller(owner), &stored).await.unwrap();

    assert_eq!(sessions.get(&caller(stranger), stored.id).await.unwrap(), None);
    assert!(sessions.list(&caller(stranger), PageRequest::first(100)).await.unwrap().items.is_empty());
    let update = SessionUpdate { title: Some(None), metadata: Some(Metadata::default()) };
    assert_eq!(sessions.update(&caller(stranger), stored.id, &update, at(2)).await.unwrap(), None);

    assert_eq!(sessions.get(&caller(owner), stored.id).await.unwrap(), Some(stored), "unchanged");
}

#[tokio::test]
async fn creating_a_session_with_an_existing_id_is_a_conflict() {
    let sessions = memory_store().await.session_store();
    let (owner, stranger) = (tenant(), tenant());
    let stored = session(owner, at(1));
    sessions.create(&caller(owner), &stored).await.unwrap();

    let again = Session { title: None, ..stored.clone() };
    let error = sessions.create(&caller(owner), &again).await;
    assert!(matches!(error, Err(RepositoryError::Conflict(_))), "{error:?}");
    // Ids are unique across tenants, as the primary key of the Supabase table.
    let foreign = Session { tenant_id: stranger, ..stored.clone() };
    let error = sessions.create(&caller(stranger), &foreign).await;
    assert!(matches!(error, Err(RepositoryError::Conflict(_))), "{error:?}");

    assert_eq!(sessions.get(&caller(owner), stored.id).await.unwrap(), Some(stored));
}

#[tokio::test]
async fn a_session_of_another_tenant_than_the_caller_is_not_created() {
    let sessions = memory_store().await.session_store();
    let (owner, stranger) = (tenant(), tenant());
    let stored = session(owner, at(1));
    let error = sessions.create(&caller(stranger), &stored).await;
    assert!(matches!(error, Err(RepositoryError::Unexpected(_))), "{error:?}");
    assert_eq!(sessions.get(&caller(owner), stored.id).await.unwrap(), None);
}

#[tokio::test]
async fn update_replaces_only_named_fields_and_returns_the_stored_session() {
    let sessions = memory_store().await.session_store();
    let owner = tenant();
    let mut expected = session(owner, at(1));
    sessions.create(&caller(owner), &expected).await.unwrap();

    let new_metadata = metadata(&json!({"k": [true]}));
    let update = SessionUpdate { title: None, metadata: Some(new_metadata) };
    let updated = sessions.update(&caller(owner), expected.id, &update, at(5)).await.unwrap();
    update.apply_to(&mut expected, at(5));
    assert_eq!(updated.as_ref(), Some(&expected));

    let clear_title = SessionUpdate { title: Some(None), metadata: None };
    let updated = sessions.update(&caller(owner), expected.id, &clear_title, at(9)).await.unwrap();
    clear_title.apply_to(&mut expected, at(9));
    assert_eq!(updated.as_ref(), Some(&expected));
    assert_eq!(expected.title, None);

    let retitle = SessionUpdate { title: Some(Some(SessionTitle::parse("New").unwrap())), metadata: None };
    let updated = sessions.update(&caller(owner), expected.id, &retitle, at(12)).await.unwrap();
    retitle.apply_to(&mut expected, at(12));
    assert_eq!(updated.as_ref(), Some(&expected));
    assert_eq!(sessions.get(&caller(owner), expected.id).await.unwrap(), Some(expected));

    let missing = SessionId::from_uuid(Uuid::now_v7());
    assert_eq!(sessions.update(&caller(owner), missing, &retitle, at(13)).await.unwrap(), None);
}

// Knowledge documents.

#[tokio::test]
async fn a_document_reads_back_with_its_chunks_in_order_and_only_for_its_tenant() {
    let knowledge = memory_store().await.knowledge_store();
    let (owner, stranger) = (tenant(), tenant());
    // More chunks than one insert batch (64), so ordering spans batches.
    let chunks: Vec<_> =
        (0..70).map(|i| chunk(&format!("part {i}"), &json!({"part": i}), axis(i % 7))).collect();
    let stored = add(&knowledge, &caller(owner), "Manual", chunks).await;

    assert_eq!(stored.tenant_id, owner);
    assert_eq!(stored.created_at, at(0));
    assert_eq!(stored.chunks.iter().map(|c| c.ordinal).collect::<Vec<_>>(), (0..70).collect::<Vec<u32>>());
    assert_eq!(stored.chunks[69].content, "part 69");
    let ids: std::collections::HashSet<_> = stored.chunks.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 70, "every chunk has its own id");

    assert_eq!(knowledge.get_document(&caller(owner), stored.id).await.unwrap(), Some(stored.clone()));
    assert_eq!(knowledge.get_document(&caller(stranger), stored.id).await.unwrap(), None);
    let missing = DocumentId::from_uuid(Uuid::now_v7());
    assert_eq!(knowledge.get_document(&caller(owner), missing).await.unwrap(), None);
}

#[tokio::test]
async fn adding_a_document_with_an_existing_id_is_a_conflict_that_keeps_the_original() {
    let knowledge = memory_store().await.knowledge_store();
    let owner = tenant();
    let original = add(&knowledge, &caller(owner), "Original", vec![chunk("one", &json!({}), axis(0))]).await;

    let replacement =
        document("Replacement", vec![chunk("a", &json!({}), axis(1)), chunk("b", &json!({}), axis(2))]);
    let error = knowledge.add_document(&caller(owner), original.id, &replacement, at(1)).await;
    assert!(matches!(error, Err(RepositoryError::Conflict(_))), "{error:?}");

    assert_eq!(knowledge.get_document(&caller(owner), original.id).await.unwrap(), Some(original));
    let hits = knowledge.search(&caller(owner), &query(axis(1), 10, -1.0, &json!({}))).await.unwrap();
    assert_eq!(
        hits.iter().map(|h| h.content.as_str()).collect::<Vec<_>>(),
        ["one"],
        "no chunk of the refused one"
    );
}

#[tokio::test]
async fn a_failure_in_the_middle_of_the_chunks_leaves_neither_document_nor_chunks() {
    let db = TempDb::new();
    let knowledge = EmbeddedStore::open(&db.url()).await.unwrap().knowledge_store();
    // Fails the 66th chunk: the document row and a first batch of 64 chunks are in by then.
    execute_sql(
        &db.url(),
        "create trigger fail_mid_document before insert on embedded_knowledge_chunks
         when new.ordinal = 65 begin select raise(abort, 'injected failure'); end",
    )
    .await;
    let owner = tenant();
    let id = DocumentId::from_uuid(Uuid::now_v7());
    let chunks: Vec<_> = (0..70).map(|i| chunk(&format!("part {i}"), &json!({}), axis(0))).collect();
    let new = document("Doomed", chunks);

    let error = knowledge.add_document(&caller(owner), id, &new, at(0)).await;
    assert!(matches!(&error, Err(RepositoryError::Unexpected(_))), "{error:?}");
    assert!(format!("{error:?}").contains("injected failure"), "failed at the trigger: {error:?}");
    assert_eq!(knowledge.get_document(&caller(owner), id).await.unwrap(), None);
    assert!(
        knowledge.search(&caller(owner), &query(axis(0), 100, -1.0, &json!({}))).await.unwrap().is_empty()
    );

    // Nothing was left behind that would make the same id a conflict.
    execute_sql(&db.url(), "drop trigger fail_mid_document").await;
    let stored = knowledge.add_document(&caller(owner), id, &new, at(0)).await.unwrap();
    assert_eq!(stored.chunks.len(), 70);
}

// Knowledge search.

/// Chunks at known angles to axis 0: similarities 1, 3/√10, 1/√2, 0 and -1.
async fn known_vectors(knowledge: &impl KnowledgeStore, owner: TenantId) {
    let chunks = vec![
        chunk("orthogonal", &json!({"lang": "en", "tags": ["b"]}), axis(1)),
        chunk("diagonal", &json!({"lang": "de", "tags": ["a", "b"]}), vector(&[(0, 1.0), (1, 1.0)])),
        chunk("opposite", &json!({"lang": "en"}), vector(&[(0, -2.0)])),
        chunk("exact", &json!({"lang": "en", "tags": ["a"]}), vector(&[(0, 5.0)])),
        chunk("close", &json!({"lang": "en", "meta": {"v": 2}}), vector(&[(0, 3.0), (1, 1.0)])),
    ];
    add(knowledge, &caller(owner), "Vectors", chunks).await;
}

#[tokio::test]
async fn search_ranks_chunks_by_cosine_similarity_best_first() {
    let knowledge = memory_store().await.knowledge_store();
    let owner = tenant();
    known_vectors(&knowledge, owner).await;

    let hits = knowledge.search(&caller(owner), &query(axis(0), 10, -1.0, &json!({}))).await.unwrap();
    let ranked: Vec<_> = hits.iter().map(|h| h.content.as_str()).collect();
    assert_eq!(ranked, ["exact", "close", "diagonal", "orthogonal", "opposite"]);
    let expected = [1.0, 3.0 / 10_f64.sqrt(), std::f64::consts::FRAC_1_SQRT_2, 0.0, -1.0];
    for (hit, want) in hits.iter().zip(expected) {
        assert!((hit.similarity - want).abs() < 1e-6, "{}: {} != {want}", hit.content, hit.similarity);
    }
    let exact = &hits[0];
    assert_eq!((exact.ordinal, &exact.metadata), (3, &metadata(&json!({"lang": "en", "tags": ["a"]}))));
}

#[tokio::test]
async fn search_drops_chunks_below_min_similarity() {
    let knowledge = memory_store().await.knowledge_store();
    let owner = tenant();
    known_vectors(&knowledge, owner).await;

    let hits = knowledge.search(&caller(owner), &query(axis(0), 10, 0.5, &json!({}))).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.content.as_str()).collect::<Vec<_>>(), ["exact", "close", "diagonal"]);
    let none = knowledge.search(&caller(owner), &query(axis(2), 10, 0.01, &json!({}))).await.unwrap();
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test]
async fn search_keeps_only_the_top_k() {
    let knowledge = memory_store().await.knowledge_store();
    let owner = tenant();
    known_vectors(&knowledge, owner).await;

    let hits = knowledge.search(&caller(owner), &query(axis(0), 2, -1.0, &json!({}))).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.content.as_str()).collect::<Vec<_>>(), ["exact", "close"]);
}

#[tokio::test]
async fn search_applies_the_metadata_filter_as_json_containment() {
    let knowledge = memory_store().await.knowledge_store();
    let owner = tenant();
    known_vectors(&knowledge, owner).await;
    let search = |filter: serde_json::Value| {
        let knowledge = knowledge.clone();
        async move {
            let hits = knowledge.search(&caller(owner), &query(axis(0), 10, -1.0, &filter)).await.unwrap();
            hits.into_iter().map(|h| h.content).collect::<Vec<_>>()
        }
    };

    assert_eq!(search(json!({"lang": "en"})).await, ["exact", "close", "orthogonal", "opposite"]);
    assert_eq!(search(json!({"tags": ["a"]})).await, ["exact", "diagonal"]);
    assert_eq!(search(json!({"tags": ["b"], "lang": "en"})).await, ["orthogonal"]);
    assert_eq!(search(json!({"meta": {"v": 2}})).await, ["close"]);
    assert!(search(json!({"lang": "fr"})).await.is_empty());
}

#[tokio::test]
async fn search_over_many_scan_pages_finds_what_a_full_sort_finds() {
    let knowledge = memory_store().await.knowledge_store();
    let owner = tenant();
    // 1200 chunks: several pages of the scan, and documents of the maximum size.
    let a = add(&knowledge, &caller(owner), "Noise A", noise_chunks(1000, 7)).await;
    let b = add(&knowledge, &caller(owner), "Noise B", noise_chunks(200, 11)).await;
    let probe = noise_chunks(1, 99).remove(0).embedding;

    let hits = knowledge.search(&caller(owner), &query(probe.clone(), 7, -1.0, &json!({}))).await.unwrap();

    let mut all: Vec<(f64, DocumentId, String)> = noise_chunks(1000, 7)
        .into_iter()
        .map(|c| (c.embedding.cosine_similarity(&probe), a.id, c.content))
        .chain(
            noise_chunks(200, 11)
                .into_iter()
                .map(|c| (c.embedding.cosine_similarity(&probe), b.id, c.content)),
        )
        .collect();
    all.sort_by(|x, y| y.0.total_cmp(&x.0));
    let found: Vec<_> = hits.iter().map(|h| (h.similarity, h.document_id, h.content.clone())).collect();
    assert_eq!(found, all[..7]);
}

#[tokio::test]
async fn search_never_returns_another_tenants_chunks() {
    let knowledge = memory_store().await.knowledge_store();
    let (owner, stranger, empty) = (tenant(), tenant(), tenant());
    add(&knowledge, &caller(owner), "Mine", vec![chunk("mine", &json!({"lang": "en"}), axis(1))]).await;
    add(&knowledge, &caller(stranger), "Theirs", vec![chunk("theirs", &json!({"lang": "en"}), axis(0))])
        .await;

    let hits = knowledge.search(&caller(owner), &query(axis(0), 100, -1.0, &json!({}))).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.content.as_str()).collect::<Vec<_>>(), ["mine"]);
    let filtered = knowledge.search(&caller(owner), &query(axis(0), 100, -1.0, &json!({"lang": "en"}))).await;
    assert_eq!(filtered.unwrap().len(), 1);
    assert!(
        knowledge.search(&caller(empty), &query(axis(0), 100, -1.0, &json!({}))).await.unwrap().is_empty()
    );
}

// Files.

#[tokio::test]
async fn a_file_database_keeps_sessions_and_knowledge_across_reopening() {
    let db = TempDb::new();
    let owner = tenant();
    let stored_session = session(owner, at(42));
    let store = EmbeddedStore::open(&db.url()).await.unwrap();
    store.session_store().create(&caller(owner), &stored_session).await.unwrap();
    let stored_document =
        add(&store.knowledge_store(), &caller(owner), "Kept", vec![chunk("kept", &json!({}), axis(3))]).await;
    store.close().await;

    // Opening again finds the tables (creation is idempotent) and the rows.
    let store = EmbeddedStore::open(&db.url()).await.unwrap();
    let sessions = store.session_store();
    let knowledge = store.knowledge_store();
    assert_eq!(sessions.get(&caller(owner), stored_session.id).await.unwrap(), Some(stored_session));
    assert_eq!(
        knowledge.get_document(&caller(owner), stored_document.id).await.unwrap(),
        Some(stored_document)
    );
    let hits = knowledge.search(&caller(owner), &query(axis(3), 1, 0.9, &json!({}))).await.unwrap();
    assert_eq!(hits.len(), 1);
    store.close().await;
}
