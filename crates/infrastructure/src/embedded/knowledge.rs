//! [`KnowledgeStore`] on the embedded SQLite store, with a brute-force similarity search.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_application::context::Caller;
use sba_application::ports::{ConflictKind, KnowledgeStore, RepositoryError};
use sba_domain::knowledge::{
    EMBEDDING_DIMENSION, Embedding, KnowledgeDocument, KnowledgeMatch, KnowledgeQuery, NewChunk, NewDocument,
    metadata_contains,
};
use sba_domain::{ChunkId, DocumentId};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, TransactionTrait as _, Value,
};
use uuid::Uuid;

use super::{
    from_micros, map_db_err, metadata_from_text, metadata_to_text, object_from_text, to_micros, unexpected,
    uuid_of,
};
use crate::tenant_data::{ChunkRow, DocumentRow, MatchRow, corrupt_row};

const DOCUMENTS: &str = "embedded_knowledge_documents";
const CHUNKS: &str = "embedded_knowledge_chunks";
/// Chunks per `insert` statement: 7 values each, far below SQLite's parameter limit.
const INSERT_BATCH: usize = 64;
/// Chunks read per round trip of the search scan; bounds the rows held in memory at once.
const SCAN_PAGE: i64 = 256;
const EMBEDDING_BYTES: usize = EMBEDDING_DIMENSION * size_of::<f32>();

/// Knowledge documents and chunks in the `embedded_knowledge_*` tables; every statement
/// filters by the caller's tenant.
///
/// # Limits of the search
/// Search compares the query with every chunk of the tenant (no vector index): O(n) per
/// search in the tenant's chunk count n. The scan reads the chunks in pages of 256 rows
/// (rowid and embedding, plus metadata only when the query filters on it) inside one read
/// transaction, so memory holds one page (about 0.4 MB of embeddings) and a heap of at most
/// `top_k` (≤ 100) candidates, whatever n is; only the winners' content is read, afterwards.
/// Measured (release build, in-memory database, a shared two-CPU machine, top 10 of
/// pseudo-random embeddings): about 60 ms per search over 10 000 chunks and 0.8 s over
/// 100 000, i.e. 6–8 µs per chunk (fetching the row through the driver, decoding the BLOB,
/// the 384-dimension dot product in `f64`). Development sizes (a tenant with up
/// to some 10 000 chunks, a few hundred documents) answer well under 0.1 s; beyond that, use
/// the Supabase store (pgvector with an HNSW index).
#[derive(Debug, Clone)]
pub struct EmbeddedKnowledgeStore {
    db: DatabaseConnection,
}

impl EmbeddedKnowledgeStore {
    pub(super) const fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl KnowledgeStore for EmbeddedKnowledgeStore {
    async fn add_document(
        &self,
        caller: &Caller,
        id: DocumentId,
        document: &NewDocument,
        now: DateTime<Utc>,
    ) -> Result<KnowledgeDocument, RepositoryError> {
        let tenant = caller.tenant.as_uuid().to_string();
        let document_id = id.as_uuid().to_string();
        let created_at = from_micros(DOCUMENTS, to_micros(now))?;
        let chunk_ids: Vec<ChunkId> =
            document.chunks.iter().map(|_| ChunkId::from_uuid(Uuid::now_v7())).collect();
        // The document as it will be stored: its chunks' ordinals are the ones inserted.
        let stored = document
            .stored(id, caller.tenant, created_at, chunk_ids)
            .ok_or_else(|| RepositoryError::Unexpected(anyhow::anyhow!("too many chunks")))?;

        // Dropping the transaction on any early return rolls it back: all or nothing.
        let txn = self.db.begin().await.map_err(|e| unexpected(e, "starting a document insert"))?;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "insert into {DOCUMENTS} (id, tenant_id, title, source, metadata, created_at)
                 values (?, ?, ?, ?, ?, ?)"
            ),
            [
                document_id.clone().into(),
                tenant.clone().into(),
                document.title.clone().into(),
                document.source.clone().into(),
                metadata_to_text(&document.metadata)?.into(),
                to_micros(created_at).into(),
            ],
        ))
        .await
        .map_err(|e| map_db_err(e, "inserting a document", ConflictKind::DuplicateId))?;
        let chunks: Vec<_> = stored.chunks.iter().zip(&document.chunks).collect();
        for batch in chunks.chunks(INSERT_BATCH) {
            let mut values = Vec::with_capacity(batch.len() * 7);
            for (summary, chunk) in batch {
                values.extend(chunk_values(summary.id, &tenant, &document_id, summary.ordinal, chunk)?);
            }
            let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?)"; batch.len()].join(", ");
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                format!(
                    "insert into {CHUNKS}
                     (id, tenant_id, document_id, ordinal, content, metadata, embedding)
                     values {placeholders}"
                ),
                values,
            ))
            .await
            .map_err(|e| unexpected(e, "inserting the chunks of a document"))?;
        }
        txn.commit().await.map_err(|e| unexpected(e, "committing a document insert"))?;
        Ok(stored)
    }

    async fn get_document(
        &self,
        caller: &Caller,
        id: DocumentId,
    ) -> Result<Option<KnowledgeDocument>, RepositoryError> {
        let tenant: Value = caller.tenant.as_uuid().to_string().into();
        let document_id: Value = id.as_uuid().to_string().into();
        // No transaction needed: a document and its chunks are written once, together, and
        // never changed, so a visible document always has all its chunks.
        let Some(row) = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                format!(
                    "select tenant_id, title, source, metadata, created_at from {DOCUMENTS}
                     where tenant_id = ? and id = ?"
                ),
                [tenant.clone(), document_id.clone()],
            ))
            .await
            .map_err(|e| unexpected(e, "reading a document"))?
        else {
            return Ok(None);
        };
        let chunks = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                format!(
                    "select id, ordinal, content, metadata from {CHUNKS}
                     where tenant_id = ? and document_id = ? order by ordinal"
                ),
                [tenant, document_id],
            ))
            .await
            .map_err(|e| unexpected(e, "reading the chunks of a document"))?
            .iter()
            .map(chunk_row_of)
            .collect::<Result<Vec<_>, _>>()?;

        let read = |e| unexpected(e, "reading a document row");
        let tenant_id: String = row.try_get("", "tenant_id").map_err(read)?;
        let metadata: String = row.try_get("", "metadata").map_err(read)?;
        let created_at: i64 = row.try_get("", "created_at").map_err(read)?;
        DocumentRow {
            id: id.as_uuid(),
            tenant_id: uuid_of(DOCUMENTS, &tenant_id)?,
            title: row.try_get("", "title").map_err(read)?,
            source: row.try_get("", "source").map_err(read)?,
            metadata: object_from_text(DOCUMENTS, &metadata)?,
            created_at: from_micros(DOCUMENTS, created_at)?,
            chunks,
        }
        .into_document(DOCUMENTS, CHUNKS)
        .map(Some)
    }

    async fn search(
        &self,
        caller: &Caller,
        query: &KnowledgeQuery,
    ) -> Result<Vec<KnowledgeMatch>, RepositoryError> {
        let tenant = caller.tenant.as_uuid().to_string();
        // One read transaction: every page of the scan and the final read see one snapshot.
        let txn = self.db.begin().await.map_err(|e| unexpected(e, "starting a search"))?;
        let best = scan(&txn, &tenant, query).await?;
        let matches = read_matches(&txn, &tenant, &best).await?;
        txn.commit().await.map_err(|e| unexpected(e, "ending a search"))?;
        Ok(matches)
    }
}

/// The values of one chunk row, in the insert's column order.
fn chunk_values(
    id: ChunkId,
    tenant: &str,
    document_id: &str,
    ordinal: u32,
    chunk: &NewChunk,
) -> Result<[Value; 7], RepositoryError> {
    let embedding: Vec<u8> = chunk.embedding.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok([
        id.as_uuid().to_string().into(),
        tenant.into(),
        document_id.into(),
        i64::from(ordinal).into(),
        chunk.content.clone().into(),
        metadata_to_text(&chunk.metadata)?.into(),
        embedding.into(),
    ])
}

/// Scans the tenant's chunks page by page and keeps the `top_k` most similar ones that
/// pass the filter and the threshold, best first.
async fn scan(
    db: &impl ConnectionTrait,
    tenant: &str,
    query: &KnowledgeQuery,
) -> Result<Vec<Candidate>, RepositoryError> {
    let filtered = !query.filter.as_map().is_empty();
    // Metadata is read (and parsed) only when the query filters on it.
    let columns = if filtered { "rowid, embedding, metadata" } else { "rowid, embedding" };
    let mut best = TopK::new(query.top_k);
    let mut after = i64::MIN;
    loop {
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                format!(
                    "select {columns} from {CHUNKS}
                     where tenant_id = ? and rowid > ? order by rowid limit ?"
                ),
                [tenant.into(), after.into(), SCAN_PAGE.into()],
            ))
            .await
            .map_err(|e| unexpected(e, "scanning chunks"))?;
        for row in &rows {
            let read = |e| unexpected(e, "reading a chunk row");
            let rowid: i64 = row.try_get("", "rowid").map_err(read)?;
            after = rowid;
            if filtered {
                let metadata: String = row.try_get("", "metadata").map_err(read)?;
                if !metadata_contains(&metadata_from_text(CHUNKS, &metadata)?, &query.filter) {
                    continue;
                }
            }
            let bytes: Vec<u8> = row.try_get("", "embedding").map_err(read)?;
            let similarity = embedding_of(&bytes)?.cosine_similarity(&query.embedding);
            // `>=` is false for NaN, so a similarity that is no number is dropped too.
            if similarity >= query.min_similarity {
                best.offer(Candidate { similarity, rowid });
            }
        }
        if rows.len() < usize::try_from(SCAN_PAGE).unwrap_or(usize::MAX) {
            return Ok(best.into_best_first());
        }
    }
}

/// The full rows of the winners, in the winners' order.
async fn read_matches(
    db: &impl ConnectionTrait,
    tenant: &str,
    best: &[Candidate],
) -> Result<Vec<KnowledgeMatch>, RepositoryError> {
    if best.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = vec!["?"; best.len()].join(", ");
    let mut values: Vec<Value> = vec![tenant.into()];
    values.extend(best.iter().map(|c| Value::from(c.rowid)));
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "select rowid, id, document_id, ordinal, content, metadata from {CHUNKS}
                 where tenant_id = ? and rowid in ({placeholders})"
            ),
            values,
        ))
        .await
        .map_err(|e| unexpected(e, "reading the best chunks"))?;
    let mut by_rowid = HashMap::with_capacity(rows.len());
    for row in &rows {
        let rowid: i64 = row.try_get("", "rowid").map_err(|e| unexpected(e, "reading a chunk row"))?;
        by_rowid.insert(rowid, row);
    }
    best.iter()
        .map(|candidate| {
            let row = by_rowid
                .get(&candidate.rowid)
                .ok_or_else(|| corrupt_row(CHUNKS, "a scanned chunk vanished inside its transaction"))?;
            let chunk = chunk_row_of(row)?;
            let document_id: String =
                row.try_get("", "document_id").map_err(|e| unexpected(e, "reading a chunk row"))?;
            MatchRow {
                id: chunk.id,
                document_id: uuid_of(CHUNKS, &document_id)?,
                ordinal: chunk.ordinal,
                content: chunk.content,
                metadata: chunk.metadata,
                similarity: candidate.similarity,
            }
            .into_match(CHUNKS)
        })
        .collect()
}

/// A chunk row (`id, ordinal, content, metadata`) without its embedding.
fn chunk_row_of(row: &QueryResult) -> Result<ChunkRow, RepositoryError> {
    let read = |e| unexpected(e, "reading a chunk row");
    let id: String = row.try_get("", "id").map_err(read)?;
    let metadata: String = row.try_get("", "metadata").map_err(read)?;
    Ok(ChunkRow {
        id: uuid_of(CHUNKS, &id)?,
        ordinal: row.try_get("", "ordinal").map_err(read)?,
        content: row.try_get("", "content").map_err(read)?,
        metadata: object_from_text(CHUNKS, &metadata)?,
    })
}

/// A stored BLOB of little-endian `f32` values as an embedding.
fn embedding_of(bytes: &[u8]) -> Result<Embedding, RepositoryError> {
    if bytes.len() != EMBEDDING_BYTES {
        return Err(corrupt_row(CHUNKS, format!("an embedding of {} bytes", bytes.len())));
    }
    let values = bytes
        .chunks_exact(size_of::<f32>())
        .map(|b| <[u8; 4]>::try_from(b).map(f32::from_le_bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt_row(CHUNKS, e))?;
    Embedding::from_stored(values).map_err(|e| corrupt_row(CHUNKS, e))
}

/// A chunk that passed the filter and the threshold. Greater is better: more similar, or
/// equally similar and stored earlier (so ties rank the same way every time).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    similarity: f64,
    rowid: i64,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.similarity.total_cmp(&other.similarity).then_with(|| other.rowid.cmp(&self.rowid))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The best `k` candidates seen so far: a min-heap whose root is the worst one kept, so
/// each offer costs O(log k) and nothing beyond `k` is ever stored or sorted.
#[derive(Debug)]
struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Candidate>>,
}

impl TopK {
    fn new(k: u32) -> Self {
        // The query bounds k (≤ 100); the cap only guards the allocation.
        let k = usize::try_from(k.min(KnowledgeQuery::MAX_TOP_K)).unwrap_or(1);
        Self { k, heap: BinaryHeap::with_capacity(k) }
    }

    fn offer(&mut self, candidate: Candidate) {
        if self.heap.len() < self.k {
            self.heap.push(Reverse(candidate));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && candidate > worst.0
        {
            *worst = Reverse(candidate);
        }
    }

    /// The kept candidates, best first.
    fn into_best_first(self) -> Vec<Candidate> {
        // Ascending in `Reverse` order is descending in candidate order.
        self.heap.into_sorted_vec().into_iter().map(|Reverse(c)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(similarity: f64, rowid: i64) -> Candidate {
        Candidate { similarity, rowid }
    }

    #[test]
    fn top_k_keeps_the_best_k_best_first_and_breaks_ties_by_age() {
        let mut best = TopK::new(3);
        for (similarity, rowid) in [(0.1, 1), (0.9, 2), (0.5, 3), (0.7, 4), (0.9, 5), (0.2, 6)] {
            best.offer(candidate(similarity, rowid));
        }
        let kept: Vec<_> = best.into_best_first().iter().map(|c| (c.similarity, c.rowid)).collect();
        assert_eq!(kept, [(0.9, 2), (0.9, 5), (0.7, 4)]);
    }

    #[test]
    fn embeddings_round_trip_through_their_blob() {
        let mut values = vec![0.0_f64; EMBEDDING_DIMENSION];
        values[0] = 0.25;
        values[383] = -1.5;
        let embedding = Embedding::parse("e", &values).unwrap();
        let bytes: Vec<u8> = embedding.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(embedding_of(&bytes).unwrap(), embedding);
        assert!(embedding_of(&bytes[..4]).is_err());
    }
}
