//! [`KnowledgeService`]: adding documents (with their chunks and embeddings), reading them
//! and searching the caller's tenant's chunks by similarity, through the `KnowledgeStore`.
//!
//! Every user of a tenant reads and searches its knowledge base, but only administrators
//! and services write it: what a document says reaches every user's agent runs, so a user
//! who could write it could plant instructions in other users' runs.

use std::sync::Arc;

use sba_domain::knowledge::{KnowledgeDocument, KnowledgeMatch, KnowledgeQuery, NewDocument};
use sba_domain::{AuditOutcome, DocumentId};

use crate::RequestContext;
use crate::audit::Auditor;
use crate::authorization::{Action, authorize};
use crate::error::RecordError;
use crate::ports::{Clock, IdGenerator, KnowledgeStore};

/// The audit action and resource type of a document upload.
const CREATE_ACTION: &str = "knowledge_document.create";
const RESOURCE: &str = "knowledge_document";

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

    /// Asked before an upload's body is read, so that a caller who may not write the
    /// knowledge base neither takes an upload place nor has its body decoded: `Forbidden`
    /// when the matrix refuses. The refusal is audited as denied in the background (the
    /// answer does not wait for the audit store); needs a Tokio runtime.
    ///
    /// # Errors
    /// `Forbidden` when the caller may not write the knowledge base.
    pub fn admit_upload(&self, ctx: &RequestContext) -> Result<(), RecordError> {
        authorize(&ctx.principal, Action::WriteKnowledge).map_err(|denied| {
            let (auditor, ctx) = (self.auditor.clone(), ctx.clone());
            tokio::spawn(async move {
                auditor.record_after(&ctx, CREATE_ACTION, RESOURCE, None, AuditOutcome::Denied).await;
            });
            denied.into()
        })
    }

    /// Stores a document with all its chunks (all or nothing) for the caller's tenant.
    ///
    /// # Errors
    /// `Forbidden` when the caller may not write the knowledge base (audited as denied);
    /// `Unexpected` when it cannot be stored (nothing is then stored). Its audit entry is
    /// written after it, in another store (see [`Auditor::record_after`]).
    pub async fn add_document(
        &self,
        ctx: &RequestContext,
        document: &NewDocument,
    ) -> Result<KnowledgeDocument, RecordError> {
        if let Err(denied) = authorize(&ctx.principal, Action::WriteKnowledge) {
            self.auditor.record_after(ctx, CREATE_ACTION, RESOURCE, None, AuditOutcome::Denied).await;
            return Err(denied.into());
        }
        let id = DocumentId::from_uuid(self.ids.new_id());
        let resource = Some(id.to_string());
        let stored = self.store.add_document(&ctx.caller(), id, document, self.clock.now()).await;
        let outcome = if stored.is_ok() { AuditOutcome::Success } else { AuditOutcome::Error };
        self.auditor.record_after(ctx, CREATE_ACTION, RESOURCE, resource, outcome).await;
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
        authorize(&ctx.principal, Action::ReadKnowledge)?;
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
        authorize(&ctx.principal, Action::ReadKnowledge)?;
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
    use crate::ports::{ConflictKind, MockAuditLog, MockIdGenerator, MockKnowledgeStore, RepositoryError};
    use crate::testing::TestClock;

    /// A tenant administrator, who may write the knowledge base.
    fn ctx() -> RequestContext {
        ctx_as(Role::Admin)
    }

    fn ctx_as(role: Role) -> RequestContext {
        RequestContext {
            principal: Principal {
                tenant_id: TenantId::from_uuid(Uuid::from_u128(0xa)),
                user_id: UserId::parse("alice").unwrap(),
                role,
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

    fn outage() -> RepositoryError {
        RepositoryError::Unexpected(anyhow::anyhow!("connection lost"))
    }

    fn query() -> KnowledgeQuery {
        KnowledgeQuery::new(document().chunks[0].embedding.clone(), None, None, Metadata::default()).unwrap()
    }

    #[tokio::test]
    async fn a_taken_document_id_is_unexpected_and_audited_as_an_error() {
        let mut store = MockKnowledgeStore::new();
        store
            .expect_add_document()
            .times(1)
            .returning(|_, _, _, _| Err(RepositoryError::Conflict(ConflictKind::DuplicateId)));
        let result = service(store, AuditOutcome::Error).add_document(&ctx(), &document()).await;
        assert!(matches!(result, Err(RecordError::Unexpected(_))), "{result:?}");
    }

    #[tokio::test]
    async fn a_store_outage_while_reading_a_document_is_unexpected_not_not_found() {
        let mut store = MockKnowledgeStore::new();
        store.expect_get_document().times(1).returning(|_, _| Err(outage()));
        let service = service_with(store, MockAuditLog::new(), 9);
        let read = service
            .get_document(&ctx_as(Role::Authenticated), DocumentId::from_uuid(Uuid::from_u128(1)))
            .await;
        assert!(matches!(read, Err(RecordError::Unexpected(_))), "{read:?}");
    }

    #[tokio::test]
    async fn a_store_outage_while_searching_is_unexpected_not_an_empty_result() {
        let mut store = MockKnowledgeStore::new();
        store.expect_search().times(1).returning(|_, _| Err(outage()));
        let service = service_with(store, MockAuditLog::new(), 9);
        let found = service.search(&ctx_as(Role::Authenticated), &query()).await;
        assert!(matches!(found, Err(RecordError::Unexpected(_))), "{found:?}");
    }

    #[tokio::test]
    async fn a_refused_upload_is_forbidden_at_once_and_audited_as_denied_in_the_background() {
        let (written, audited) = tokio::sync::oneshot::channel();
        let written = std::sync::Mutex::new(Some(written));
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(|entry| {
                entry.action == "knowledge_document.create"
                    && entry.outcome == AuditOutcome::Denied
                    && entry.resource_id.is_none()
            })
            .times(1)
            .returning(move |_| {
                written.lock().unwrap().take().unwrap().send(()).unwrap();
                Ok(())
            });
        let service = service_with(MockKnowledgeStore::new(), audit, 9);
        let admitted = service.admit_upload(&ctx_as(Role::Authenticated));
        assert!(matches!(admitted, Err(RecordError::Forbidden(_))), "{admitted:?}");
        tokio::time::timeout(std::time::Duration::from_secs(5), audited).await.unwrap().unwrap();
        service.admit_upload(&ctx_as(Role::Admin)).unwrap();
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

    #[tokio::test]
    async fn only_admins_and_services_add_documents_and_a_refusal_is_audited_as_denied() {
        for role in [Role::Authenticated, Role::Agent] {
            let mut store = MockKnowledgeStore::new();
            store.expect_add_document().never();
            let result = service(store, AuditOutcome::Denied).add_document(&ctx_as(role), &document()).await;
            assert!(matches!(result, Err(RecordError::Forbidden(_))), "{role}: {result:?}");
        }
        let mut store = MockKnowledgeStore::new();
        store.expect_add_document().times(1).returning(stored);
        service(store, AuditOutcome::Success)
            .add_document(&ctx_as(Role::Service), &document())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn every_role_reads_and_searches_the_knowledge_base() {
        for role in [Role::Authenticated, Role::Admin, Role::Agent, Role::Service] {
            let mut store = MockKnowledgeStore::new();
            store.expect_get_document().times(1).returning(|_, _| Ok(None));
            store.expect_search().times(1).returning(|_, _| Ok(Vec::new()));
            let service = service_with(store, MockAuditLog::new(), 9);
            let missing =
                service.get_document(&ctx_as(role), DocumentId::from_uuid(Uuid::from_u128(1))).await;
            assert!(matches!(missing, Err(RecordError::NotFound)), "{role}");
            let query =
                KnowledgeQuery::new(document().chunks[0].embedding.clone(), None, None, Metadata::default())
                    .unwrap();
            assert!(service.search(&ctx_as(role), &query).await.unwrap().is_empty(), "{role}");
        }
    }
}
