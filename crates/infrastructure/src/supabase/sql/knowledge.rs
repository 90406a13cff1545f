//! [`SupabaseSqlKnowledgeStore`]: the `KnowledgeStore` on Supabase's `knowledge_documents`
//! and `knowledge_chunks` (pgvector) over direct SQL.
//!
//! Writes and searches go through the schema's RPCs, `add_knowledge_document` and
//! `match_knowledge` (migrations/supabase/), which the PostgREST adapter calls too, so both
//! adapters store and rank the same way. Both take the tenant from the unit of work's tenant
//! context; reads of a document also name the tenant in their filters.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound as _, Utc};
use sba_application::context::Caller;
use sba_application::ports::{KnowledgeStore, RepositoryError};
use sba_domain::knowledge::{ChunkSummary, KnowledgeDocument, KnowledgeMatch, KnowledgeQuery, NewDocument};
use sba_domain::{ChunkId, DocumentId, TenantId};
use sea_orm::{ConnectionTrait as _, DbBackend, DbErr, QueryResult, Statement};
use serde_json::json;

use super::{SupabaseSql, commit, corrupt, db_error, metadata_of, metadata_value, unexpected};

/// Knowledge in Supabase, stored and searched over direct SQL.
#[derive(Debug, Clone)]
pub struct SupabaseSqlKnowledgeStore {
    sql: SupabaseSql,
}

impl SupabaseSqlKnowledgeStore {
    pub(super) const fn new(sql: SupabaseSql) -> Self {
        Self { sql }
    }
}

/// A stored ordinal (`integer`, never negative) as the domain's.
fn ordinal_of(ordinal: i32, table: &'static str) -> Result<u32, RepositoryError> {
    u32::try_from(ordinal).map_err(|_| corrupt(table, format_args!("ordinal {ordinal}")))
}

/// A chunk as a reader sees it, from a `knowledge_chunks` row.
fn chunk_of(row: &QueryResult) -> Result<ChunkSummary, RepositoryError> {
    let read = |e: DbErr| unexpected(e, "reading a chunk row");
    Ok(ChunkSummary {
        id: ChunkId::from_uuid(row.try_get("", "id").map_err(read)?),
        ordinal: ordinal_of(row.try_get("", "ordinal").map_err(read)?, "knowledge_chunks")?,
        content: row.try_get("", "content").map_err(read)?,
        metadata: metadata_of(row.try_get("", "metadata").map_err(read)?, "knowledge_chunks")?,
    })
}

/// A search result, from a `match_knowledge` row.
fn match_of(row: &QueryResult) -> Result<KnowledgeMatch, RepositoryError> {
    let read = |e: DbErr| unexpected(e, "reading a search result");
    Ok(KnowledgeMatch {
        chunk_id: ChunkId::from_uuid(row.try_get("", "id").map_err(read)?),
        document_id: DocumentId::from_uuid(row.try_get("", "document_id").map_err(read)?),
        ordinal: ordinal_of(row.try_get("", "ordinal").map_err(read)?, "knowledge_chunks")?,
        content: row.try_get("", "content").map_err(read)?,
        metadata: metadata_of(row.try_get("", "metadata").map_err(read)?, "knowledge_chunks")?,
        similarity: row.try_get("", "similarity").map_err(read)?,
    })
}

/// The chunks of `document` as stored, given the `(chunk_id, ordinal)` rows that
/// `add_knowledge_document` returned: one per chunk, the ordinal being its index.
fn stored_chunks(document: &NewDocument, rows: &[QueryResult]) -> Result<Vec<ChunkSummary>, RepositoryError> {
    let read = |e: DbErr| unexpected(e, "reading a stored chunk id");
    let mut ids = vec![None; document.chunks.len()];
    for row in rows {
        let ordinal: i32 = row.try_get("", "ordinal").map_err(read)?;
        let slot = usize::try_from(ordinal).ok().and_then(|i| ids.get_mut(i)).ok_or_else(|| {
            corrupt("knowledge_chunks", format_args!("add_knowledge_document returned ordinal {ordinal}"))
        })?;
        *slot = Some(ChunkId::from_uuid(row.try_get("", "chunk_id").map_err(read)?));
    }
    document
        .chunks
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(index, (chunk, id))| {
            let missing = || corrupt("knowledge_chunks", format_args!("no chunk stored at ordinal {index}"));
            Ok(ChunkSummary {
                id: id.ok_or_else(missing)?,
                ordinal: u32::try_from(index).map_err(|_| missing())?,
                content: chunk.content.clone(),
                metadata: chunk.metadata.clone(),
            })
        })
        .collect()
}

#[async_trait]
impl KnowledgeStore for SupabaseSqlKnowledgeStore {
    async fn add_document(
        &self,
        caller: &Caller,
        id: DocumentId,
        document: &NewDocument,
        now: DateTime<Utc>,
    ) -> Result<KnowledgeDocument, RepositoryError> {
        // PostgreSQL keeps microseconds: the document returned is the one a read gives back.
        let created_at = now.trunc_subsecs(6);
        let chunks: Vec<serde_json::Value> = document
            .chunks
            .iter()
            .map(|chunk| {
                json!({
                    "content": chunk.content,
                    "metadata": chunk.metadata.as_map(),
                    "embedding": chunk.embedding.to_pgvector_text(),
                })
            })
            .collect();
        let tx = self.sql.begin_for(caller, "opening a document insert").await?;
        let rows = tx
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "select chunk_id, ordinal from public.add_knowledge_document($1, $2, $3, $4, $5, $6)",
                [
                    id.as_uuid().into(),
                    document.title.as_str().into(),
                    document.source.clone().into(),
                    metadata_value(&document.metadata),
                    created_at.into(),
                    serde_json::Value::Array(chunks).into(),
                ],
            ))
            .await
            .map_err(|e| db_error(e, "inserting a document and its chunks"))?;
        // Checked before the commit, so a mismatch stores nothing.
        if rows.len() != document.chunks.len() {
            return Err(corrupt(
                "knowledge_chunks",
                format_args!("{} chunk ids returned for {} chunks", rows.len(), document.chunks.len()),
            ));
        }
        let chunks = stored_chunks(document, &rows)?;
        commit(tx, "committing a document insert").await?;
        Ok(KnowledgeDocument {
            id,
            tenant_id: caller.tenant,
            title: document.title.clone(),
            source: document.source.clone(),
            metadata: document.metadata.clone(),
            created_at,
            chunks,
        })
    }

    async fn get_document(
        &self,
        caller: &Caller,
        id: DocumentId,
    ) -> Result<Option<KnowledgeDocument>, RepositoryError> {
        let tenant = caller.tenant.as_uuid();
        let tx = self.sql.begin_for(caller, "opening a document read").await?;
        let Some(row) = tx
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "select id, tenant_id, title, source, metadata, created_at from public.knowledge_documents \
                 where tenant_id = $1 and id = $2",
                [tenant.into(), id.as_uuid().into()],
            ))
            .await
            .map_err(|e| unexpected(e, "reading a document"))?
        else {
            commit(tx, "ending a document read").await?;
            return Ok(None);
        };
        let chunk_rows = tx
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "select id, ordinal, content, metadata from public.knowledge_chunks \
                 where tenant_id = $1 and document_id = $2 order by ordinal",
                [tenant.into(), id.as_uuid().into()],
            ))
            .await
            .map_err(|e| unexpected(e, "reading a document's chunks"))?;
        commit(tx, "ending a document read").await?;
        let read = |e: DbErr| unexpected(e, "reading a document row");
        Ok(Some(KnowledgeDocument {
            id: DocumentId::from_uuid(row.try_get("", "id").map_err(read)?),
            tenant_id: TenantId::from_uuid(row.try_get("", "tenant_id").map_err(read)?),
            title: row.try_get("", "title").map_err(read)?,
            source: row.try_get("", "source").map_err(read)?,
            metadata: metadata_of(row.try_get("", "metadata").map_err(read)?, "knowledge_documents")?,
            created_at: row.try_get("", "created_at").map_err(read)?,
            chunks: chunk_rows.iter().map(chunk_of).collect::<Result<_, _>>()?,
        }))
    }

    async fn search(
        &self,
        caller: &Caller,
        query: &KnowledgeQuery,
    ) -> Result<Vec<KnowledgeMatch>, RepositoryError> {
        let top_k = i32::try_from(query.top_k)
            .map_err(|_| anyhow::anyhow!("searching knowledge: top_k {} is out of range", query.top_k))?;
        let tx = self.sql.begin_for(caller, "opening a knowledge search").await?;
        let rows = tx
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "select id, document_id, ordinal, content, metadata, similarity \
                 from public.match_knowledge($1::vector, $2, $3, $4) \
                 order by similarity desc, id",
                [
                    query.embedding.to_pgvector_text().into(),
                    top_k.into(),
                    query.min_similarity.into(),
                    metadata_value(&query.filter),
                ],
            ))
            .await
            .map_err(|e| unexpected(e, "searching knowledge"))?;
        commit(tx, "ending a knowledge search").await?;
        rows.iter().map(match_of).collect()
    }
}
