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
use sba_domain::DocumentId;
use sba_domain::knowledge::{KnowledgeDocument, KnowledgeMatch, KnowledgeQuery, NewDocument};
use sea_orm::{ConnectionTrait as _, DbBackend, DbErr, QueryResult, Statement};

use super::{SupabaseSql, commit, db_error, metadata_object, metadata_value, unexpected};
use crate::observe;
use crate::supabase::{added_document, chunk_args};
use crate::tenant_data::{ChunkRow, DocumentRow, MatchRow};

const DOCUMENTS: &str = "knowledge_documents";
const CHUNKS: &str = "knowledge_chunks";

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

/// A `knowledge_chunks` row without its embedding.
fn chunk_row_of(row: &QueryResult) -> Result<ChunkRow, RepositoryError> {
    let read = |e: DbErr| unexpected(e, "reading a chunk row");
    Ok(ChunkRow {
        id: row.try_get("", "id").map_err(read)?,
        ordinal: i64::from(row.try_get::<i32>("", "ordinal").map_err(read)?),
        content: row.try_get("", "content").map_err(read)?,
        metadata: metadata_object(row.try_get("", "metadata").map_err(read)?, CHUNKS)?,
    })
}

/// A search result, from a `match_knowledge` row.
fn match_of(row: &QueryResult) -> Result<KnowledgeMatch, RepositoryError> {
    let read = |e: DbErr| unexpected(e, "reading a search result");
    MatchRow {
        id: row.try_get("", "id").map_err(read)?,
        document_id: row.try_get("", "document_id").map_err(read)?,
        ordinal: i64::from(row.try_get::<i32>("", "ordinal").map_err(read)?),
        content: row.try_get("", "content").map_err(read)?,
        metadata: metadata_object(row.try_get("", "metadata").map_err(read)?, CHUNKS)?,
        similarity: row.try_get("", "similarity").map_err(read)?,
    }
    .into_match(CHUNKS)
}

/// A `(ordinal, chunk_id)` row returned by `add_knowledge_document`.
fn added_chunk_of(row: &QueryResult) -> Result<(i64, uuid::Uuid), RepositoryError> {
    let read = |e: DbErr| unexpected(e, "reading a stored chunk id");
    Ok((
        i64::from(row.try_get::<i32>("", "ordinal").map_err(read)?),
        row.try_get("", "chunk_id").map_err(read)?,
    ))
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
        observe::sql!(Supabase, "knowledge.add_document", &self.sql.db, async {
            // PostgreSQL keeps microseconds: the document returned is the one a read gives back.
            let created_at = now.trunc_subsecs(6);
            let chunks = serde_json::to_value(chunk_args(document)).map_err(|e| {
                RepositoryError::Unexpected(
                    anyhow::Error::new(e).context("encoding the chunks of a document"),
                )
            })?;
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
                        chunks.into(),
                    ],
                ))
                .await
                .map_err(|e| db_error(e, "inserting a document and its chunks"))?;
            // Checked before the commit, so a mismatch stores nothing.
            let returned = rows.iter().map(added_chunk_of).collect::<Result<Vec<_>, _>>()?;
            let stored = added_document(document, id, caller.tenant, created_at, returned)?;
            commit(tx, "committing a document insert").await?;
            Ok(stored)
        })
        .await
    }

    async fn get_document(
        &self,
        caller: &Caller,
        id: DocumentId,
    ) -> Result<Option<KnowledgeDocument>, RepositoryError> {
        observe::sql!(Supabase, "knowledge.get_document", &self.sql.db, async {
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
            let document = DocumentRow {
                id: row.try_get("", "id").map_err(read)?,
                tenant_id: row.try_get("", "tenant_id").map_err(read)?,
                title: row.try_get("", "title").map_err(read)?,
                source: row.try_get("", "source").map_err(read)?,
                metadata: metadata_object(row.try_get("", "metadata").map_err(read)?, DOCUMENTS)?,
                created_at: row.try_get("", "created_at").map_err(read)?,
                chunks: chunk_rows.iter().map(chunk_row_of).collect::<Result<_, _>>()?,
            };
            document.into_document(DOCUMENTS, CHUNKS).map(Some)
        })
        .await
    }

    async fn search(
        &self,
        caller: &Caller,
        query: &KnowledgeQuery,
    ) -> Result<Vec<KnowledgeMatch>, RepositoryError> {
        observe::sql!(Supabase, "knowledge.search", &self.sql.db, async {
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
        })
        .await
    }
}
