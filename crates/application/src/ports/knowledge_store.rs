//! Storage and similarity search of knowledge (Supabase `knowledge_documents` and
//! `knowledge_chunks` with pgvector, or the embedded store).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_domain::DocumentId;
use sba_domain::knowledge::{KnowledgeDocument, KnowledgeMatch, KnowledgeQuery, NewDocument};

use super::RepositoryError;
use crate::context::Caller;

/// Knowledge of the caller's tenant. Every method is scoped to `caller.tenant`.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait KnowledgeStore: std::fmt::Debug + Send + Sync + 'static {
    /// Stores a document with all its chunks atomically (all or nothing); chunk ids are
    /// made by the store. Returns the document as stored.
    ///
    /// # Errors
    /// `Conflict` when the id exists; `Unexpected` on storage failure.
    async fn add_document(
        &self,
        caller: &Caller,
        id: DocumentId,
        document: &NewDocument,
        now: DateTime<Utc>,
    ) -> Result<KnowledgeDocument, RepositoryError>;

    /// The document `id` with its chunks in order, or `None` when it does not exist for the
    /// caller's tenant.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn get_document(
        &self,
        caller: &Caller,
        id: DocumentId,
    ) -> Result<Option<KnowledgeDocument>, RepositoryError>;

    /// The tenant's chunks most similar to the query (cosine similarity, best first), at
    /// most `top_k`, none below `min_similarity`, only those whose metadata contains the
    /// filter.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn search(
        &self,
        caller: &Caller,
        query: &KnowledgeQuery,
    ) -> Result<Vec<KnowledgeMatch>, RepositoryError>;
}
