//! [`KnowledgeService`]: adding documents (with their chunks and embeddings), reading them
//! and searching the caller's tenant's chunks by similarity, through the `KnowledgeStore`.

use std::sync::Arc;

use sba_domain::knowledge::{KnowledgeDocument, KnowledgeMatch, KnowledgeQuery, NewDocument};
use sba_domain::{AuditOutcome, DocumentId};

use crate::RequestContext;
use crate::audit::Auditor;
use crate::error::RecordError;
use crate::ports::{Clock, IdGenerator, KnowledgeStore};

/// The knowledge use cases.
#[derive(Clone, Debug)]
pub struct KnowledgeService {
    store: Arc<dyn KnowledgeStore>,
    auditor: Auditor,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

impl KnowledgeService {
    pub fn new(
        store: Arc<dyn KnowledgeStore>,
        auditor: Auditor,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        Self { store, auditor, clock, ids }
    }

    /// Stores a document with all its chunks (all or nothing) for the caller's tenant.
    ///
    /// # Errors
    /// `Unexpected` when it cannot be stored (nothing is then stored). Its audit entry is
    /// written after it, in another store (see [`Auditor::record_after`]).
    pub async fn add_document(
        &self,
        ctx: &RequestContext,
        document: &NewDocument,
    ) -> Result<KnowledgeDocument, RecordError> {
        let id = DocumentId::from_uuid(self.ids.new_id());
        let resource = Some(id.to_string());
        let stored = self.store.add_document(&ctx.caller(), id, document, self.clock.now()).await;
        let outcome = if stored.is_ok() { AuditOutcome::Success } else { AuditOutcome::Error };
        self.auditor
            .record_after(ctx, "knowledge_document.create", "knowledge_document", resource, outcome)
            .await;
        Ok(stored?)
    }

    /// The document `id` of the caller's tenant, with its chunks in order.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn get_document(
        &self,
        ctx: &RequestContext,
        id: DocumentId,
    ) -> Result<KnowledgeDocument, RecordError> {
        self.store.get_document(&ctx.caller(), id).await?.ok_or(RecordError::NotFound)
    }

    /// The caller's tenant's chunks most similar to the query, best first.
    ///
    /// # Errors
    /// `Unexpected` when the store cannot be searched.
    pub async fn search(
        &self,
        ctx: &RequestContext,
        query: &KnowledgeQuery,
    ) -> Result<Vec<KnowledgeMatch>, RecordError> {
        Ok(self.store.search(&ctx.caller(), query).await?)
    }
}

#[cfg(test)]
mod tests {
    use sba_domain::knowledge::{EMBEDDING_DIMENSION, Embedding, NewChunk};
    use sba_domain::{Metadata, Principal, Role, TenantId, UserId};
    use uuid::Uuid;

    use super::*;
    use crate::context::Caller;
    use crate::ports::{MockAuditLog, MockIdGenerator, MockKnowledgeStore, RepositoryError};
    use crate::testing::TestClock;

    fn ctx() -> RequestContext {
        RequestContext {
            principal: Principal {
                tenant_id: TenantId::from_uuid(Uuid::from_u128(0xa)),
                user_id: UserId::parse("alice").unwrap(),
                role: Role::Authenticated,
            },
            ip: None,
            request_id: "req-1".into(),
            client_request_id: None,
            token: None,
        }
    }

    fn document() -> NewDocument {
        let mut axis = vec![0.0; EMBEDDING_DIMENSION];
        axis[0] = 1.0;
        let chunk =
            NewChunk::new("text", Metadata::default(), Embedding::parse("e", &axis).unwrap()).unwrap();
        NewDocument::new("Manual", None, Metadata::default(), vec![chunk]).unwrap()
    }

    /// A service over `store` and `audit` whose next document id is `document_id`.
    fn service_with(store: MockKnowledgeStore, audit: MockAuditLog, document_id: u128) -> KnowledgeService {
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(Uuid::now_v7);
        let clock = Arc::new(TestClock::at(1_800_000_000_000));
        let mut document_ids = MockIdGenerator::new();
        document_ids.expect_new_id().returning(move || Uuid::from_u128(document_id));
        KnowledgeService::new(
            Arc::new(store),
            Auditor::new(Arc::new(audit), clock.clone(), Arc::new(ids)),
            clock,
            Arc::new(document_ids),
        )
    }

    /// A service over `store` whose audit log expects one `knowledge_document.create` entry
    /// with `outcome`.
    fn service(store: MockKnowledgeStore, outcome: AuditOutcome) -> KnowledgeService {
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(move |entry| entry.action == "knowledge_document.create" && entry.outcome == outcome)
            .times(1)
            .returning(|_| Ok(()));
        service_with(store, audit, 7)
    }

    /// What a store answers for a document it stored.
    #[allow(clippy::unnecessary_wraps, reason = "the mock's return type")]
    fn stored(
        caller: &Caller,
        id: DocumentId,
        new: &NewDocument,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<KnowledgeDocument, RepositoryError> {
        Ok(KnowledgeDocument {
            id,
            tenant_id: caller.tenant,
            title: new.title.clone(),
            source: None,
            metadata: Metadata::default(),
            created_at: now,
            chunks: Vec::new(),
        })
    }

    #[tokio::test]
    async fn an_added_document_is_stored_for_the_callers_tenant_and_audited() {
        let mut store = MockKnowledgeStore::new();
        store
            .expect_add_document()
            .withf(|caller, id, _, _| {
                caller.tenant == TenantId::from_uuid(Uuid::from_u128(0xa))
                    && *id == DocumentId::from_uuid(Uuid::from_u128(7))
            })
            .times(1)
            .returning(stored);
        let stored = service(store, AuditOutcome::Success).add_document(&ctx(), &document()).await.unwrap();
        assert_eq!(stored.title, "Manual");
    }

    #[tokio::test]
    async fn a_stored_document_is_returned_even_when_its_audit_entry_cannot_be_written() {
        let mut store = MockKnowledgeStore::new();
        store.expect_add_document().times(1).returning(stored);
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .times(1)
            .returning(|_| Err(RepositoryError::Unexpected(anyhow::anyhow!("audit store down"))));
        let service = service_with(store, audit, 8);
        let stored = service.add_document(&ctx(), &document()).await.unwrap();
        assert_eq!(stored.id, DocumentId::from_uuid(Uuid::from_u128(8)), "no retry needed: it is stored");
    }

    #[tokio::test]
    async fn a_document_that_cannot_be_stored_is_an_error_and_audited_as_such() {
        let mut store = MockKnowledgeStore::new();
        store
            .expect_add_document()
            .times(1)
            .returning(|_, _, _, _| Err(RepositoryError::Unexpected(anyhow::anyhow!("connection lost"))));
        let result = service(store, AuditOutcome::Error).add_document(&ctx(), &document()).await;
        assert!(matches!(result, Err(RecordError::Unexpected(_))));
    }
}
