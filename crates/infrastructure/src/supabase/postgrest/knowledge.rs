//! [`PostgrestKnowledgeStore`]: `knowledge_documents` and `knowledge_chunks`, written through
//! the `add_knowledge_document` RPC (one transaction) and searched through
//! `match_knowledge`, with the caller's token.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound as _, Utc};
use sba_application::context::Caller;
use sba_application::ports::{KnowledgeStore, RepositoryError};
use sba_domain::knowledge::{ChunkSummary, KnowledgeDocument, KnowledgeMatch, KnowledgeQuery, NewDocument};
use sba_domain::{ChunkId, DocumentId, Metadata, TenantId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::client::{Acting, Call, PostgrestClient};
use super::{corrupt_row, eq, metadata_of};

const DOCUMENTS: &str = "knowledge_documents";
const CHUNKS: &str = "knowledge_chunks";
const DOCUMENT_COLUMNS: &str =
    "id,tenant_id,title,source,metadata,created_at,knowledge_chunks(id,ordinal,content,metadata)";

/// Knowledge in Supabase's `knowledge_documents` and `knowledge_chunks` (pgvector). Every
/// request carries the caller's token (row-level security applies); table reads also
/// filter on the caller's tenant.
#[derive(Debug, Clone)]
pub struct PostgrestKnowledgeStore {
    client: PostgrestClient,
}

impl PostgrestKnowledgeStore {
    pub(super) const fn new(client: PostgrestClient) -> Self {
        Self { client }
    }
}

/// The arguments of `add_knowledge_document`; the tenant is the caller's context.
#[derive(Serialize)]
struct AddDocumentArgs<'a> {
    document_id: Uuid,
    title: &'a str,
    source: Option<&'a str>,
    metadata: &'a Metadata,
    created_at: DateTime<Utc>,
    chunks: Vec<ChunkArg<'a>>,
}

/// One chunk of `add_knowledge_document`; its ordinal is its position in the array.
#[derive(Serialize)]
struct ChunkArg<'a> {
    content: &'a str,
    metadata: &'a Metadata,
    /// pgvector's text form: PostgREST has no JSON form of `vector`.
    embedding: String,
}

/// A row returned by `add_knowledge_document`.
#[derive(Deserialize)]
struct AddedChunk {
    chunk_id: Uuid,
    ordinal: i64,
}

/// A `knowledge_documents` row with its chunks embedded.
#[derive(Deserialize)]
struct DocumentRow {
    id: Uuid,
    tenant_id: Uuid,
    title: String,
    source: Option<String>,
    metadata: serde_json::Map<String, serde_json::Value>,
    created_at: DateTime<Utc>,
    knowledge_chunks: Vec<ChunkRow>,
}

#[derive(Deserialize)]
struct ChunkRow {
    id: Uuid,
    ordinal: i64,
    content: String,
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// The arguments of `match_knowledge`.
#[derive(Serialize)]
struct MatchArgs<'a> {
    query_embedding: String,
    match_count: u32,
    min_similarity: f64,
    filter: &'a Metadata,
}

/// A row returned by `match_knowledge`.
#[derive(Deserialize)]
struct MatchRow {
    id: Uuid,
    document_id: Uuid,
    ordinal: i64,
    content: String,
    metadata: serde_json::Map<String, serde_json::Value>,
    similarity: f64,
}

fn ordinal_of(ordinal: i64) -> Result<u32, RepositoryError> {
    u32::try_from(ordinal).map_err(|_| corrupt_row(CHUNKS, format_args!("ordinal {ordinal}")))
}

/// The chunk ids `add_knowledge_document` returned, in the order of the `count` chunks sent:
/// exactly one per ordinal `0..count`.
fn chunk_ids(added: Vec<AddedChunk>, count: usize) -> Result<Vec<ChunkId>, RepositoryError> {
    let mismatch = || {
        anyhow::anyhow!("adding a knowledge document: the chunk ids returned do not match the chunks sent")
    };
    let mut ids = vec![None; count];
    for chunk in added {
        let slot = usize::try_from(chunk.ordinal).ok().and_then(|i| ids.get_mut(i)).ok_or_else(mismatch)?;
        if slot.replace(ChunkId::from_uuid(chunk.chunk_id)).is_some() {
            return Err(mismatch().into());
        }
    }
    ids.into_iter().map(|id| id.ok_or_else(|| mismatch().into())).collect()
}

#[async_trait]
impl KnowledgeStore for PostgrestKnowledgeStore {
    async fn add_document(
        &self,
        caller: &Caller,
        id: DocumentId,
        document: &NewDocument,
        now: DateTime<Utc>,
    ) -> Result<KnowledgeDocument, RepositoryError> {
        // PostgreSQL keeps microseconds: the document returned is the one stored.
        let created_at = now.trunc_subsecs(6);
        let args = AddDocumentArgs {
            document_id: id.as_uuid(),
            title: &document.title,
            source: document.source.as_deref(),
            metadata: &document.metadata,
            created_at,
            chunks: document
                .chunks
                .iter()
                .map(|chunk| ChunkArg {
                    content: &chunk.content,
                    metadata: &chunk.metadata,
                    embedding: chunk.embedding.to_pgvector_text(),
                })
                .collect(),
        };
        let call = Call::rpc("adding a knowledge document", "rpc/add_knowledge_document", &args)?;
        let added: Vec<AddedChunk> = self.client.fetch(Acting::User(caller), call).await?;
        let ids = chunk_ids(added, document.chunks.len())?;
        let chunks = document
            .chunks
            .iter()
            .zip(ids)
            .zip(0_u32..)
            .map(|((chunk, id), ordinal)| ChunkSummary {
                id,
                ordinal,
                content: chunk.content.clone(),
                metadata: chunk.metadata.clone(),
            })
            .collect();
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
        let call = Call::get("reading a knowledge document", DOCUMENTS)
            .query("select", DOCUMENT_COLUMNS)
            .query("id", eq(id))
            .query("tenant_id", eq(caller.tenant))
            .query("knowledge_chunks.order", "ordinal.asc");
        let rows: Vec<DocumentRow> = self.client.fetch(Acting::User(caller), call).await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let chunks = row
            .knowledge_chunks
            .into_iter()
            .map(|chunk| {
                Ok(ChunkSummary {
                    id: ChunkId::from_uuid(chunk.id),
                    ordinal: ordinal_of(chunk.ordinal)?,
                    content: chunk.content,
                    metadata: metadata_of(CHUNKS, chunk.metadata)?,
                })
            })
            .collect::<Result<_, RepositoryError>>()?;
        Ok(Some(KnowledgeDocument {
            id: DocumentId::from_uuid(row.id),
            tenant_id: TenantId::from_uuid(row.tenant_id),
            title: row.title,
            source: row.source,
            metadata: metadata_of(DOCUMENTS, row.metadata)?,
            created_at: row.created_at,
            chunks,
        }))
    }

    async fn search(
        &self,
        caller: &Caller,
        query: &KnowledgeQuery,
    ) -> Result<Vec<KnowledgeMatch>, RepositoryError> {
        let args = MatchArgs {
            query_embedding: query.embedding.to_pgvector_text(),
            match_count: query.top_k,
            min_similarity: query.min_similarity,
            filter: &query.filter,
        };
        // `match_knowledge` is `stable` (read-only), so it is retried like a read.
        let call = Call::read_only_rpc("searching knowledge", "rpc/match_knowledge", &args)?;
        let rows: Vec<MatchRow> = self.client.fetch(Acting::User(caller), call).await?;
        rows.into_iter()
            .map(|row| {
                Ok(KnowledgeMatch {
                    chunk_id: ChunkId::from_uuid(row.id),
                    document_id: DocumentId::from_uuid(row.document_id),
                    ordinal: ordinal_of(row.ordinal)?,
                    content: row.content,
                    metadata: metadata_of(CHUNKS, row.metadata)?,
                    similarity: row.similarity,
                })
            })
            .collect()
    }
}
