//! [`PostgrestKnowledgeStore`]: `knowledge_documents` and `knowledge_chunks`, written through
//! the `add_knowledge_document` RPC (one transaction) and searched through
//! `match_knowledge`, with a plain user's token or through the service for admins, agents
//! and services.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound as _, Utc};
use sba_application::context::Caller;
use sba_application::ports::{KnowledgeStore, RepositoryError};
use sba_domain::knowledge::{KnowledgeDocument, KnowledgeMatch, KnowledgeQuery, NewDocument};
use sba_domain::{DocumentId, Metadata, Role};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::client::{Acting, Call, PostgrestClient, through_the_service};
use super::eq;
use crate::supabase::{ChunkArg, added_document, chunk_args};
use crate::tenant_data::{DocumentRow, MatchRow};

const DOCUMENTS: &str = "knowledge_documents";
const CHUNKS: &str = "knowledge_chunks";
const DOCUMENT_COLUMNS: &str =
    "id,tenant_id,title,source,metadata,created_at,knowledge_chunks(id,ordinal,content,metadata)";

/// Knowledge in Supabase's `knowledge_documents` and `knowledge_chunks` (pgvector). A plain
/// user's requests carry its token (row-level security applies), the others go through the
/// service with the tenant named (`X-SBA-Tenant`); table reads also filter on the caller's
/// tenant.
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

/// A row returned by `add_knowledge_document`.
#[derive(Deserialize)]
struct AddedChunk {
    chunk_id: Uuid,
    ordinal: i64,
}

/// The arguments of `match_knowledge`.
#[derive(Serialize)]
struct MatchArgs<'a> {
    query_embedding: String,
    match_count: u32,
    min_similarity: f64,
    filter: &'a Metadata,
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
        // Through the service the database sees `service_role`, which may write: only the
        // roles the permission matrix lets write are sent that way. A plain user's token is
        // forwarded and `add_knowledge_document` refuses it itself.
        if through_the_service(caller) && !matches!(caller.role, Role::Admin | Role::Service) {
            return Err(anyhow::anyhow!(
                "adding a knowledge document: a {} does not write knowledge",
                caller.role
            )
            .into());
        }
        // PostgreSQL keeps microseconds: the document returned is the one stored.
        let created_at = now.trunc_subsecs(6);
        let args = AddDocumentArgs {
            document_id: id.as_uuid(),
            title: &document.title,
            source: document.source.as_deref(),
            metadata: &document.metadata,
            created_at,
            chunks: chunk_args(document),
        };
        let call = Call::rpc("adding a knowledge document", "rpc/add_knowledge_document", &args)?;
        let added: Vec<AddedChunk> = self.client.fetch(Acting::User(caller), call).await?;
        let returned = added.into_iter().map(|chunk| (chunk.ordinal, chunk.chunk_id));
        added_document(document, id, caller.tenant, created_at, returned)
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
        rows.into_iter().next().map(|row| row.into_document(DOCUMENTS, CHUNKS)).transpose()
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
        rows.into_iter().map(|row| row.into_match(CHUNKS)).collect()
    }
}
