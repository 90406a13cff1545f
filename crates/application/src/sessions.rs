//! [`SessionService`]: creating, reading, listing and updating the sessions of the caller's
//! tenant through the `SessionStore`, with an audit entry per mutation attempt.
//!
//! Reads by id go through the `session` cache namespace (ADR 0007): a created session is
//! written through, an update drops the cached copy on every node, so the next read on any
//! node sees the change. Only existing sessions are cached (a lookup of an unknown id is
//! asked again), and lists are always read from the store.
//!
//! The permission matrix decides who uses sessions at all ([`authorize`]); the store scopes
//! every statement to the caller's own sessions unless the caller sees the whole tenant. The
//! cache is keyed by tenant and session only, so a cached session is checked against its
//! owner before it is served: another user of the tenant gets `NotFound`, as from the store.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sba_domain::{AuditOutcome, Metadata, Session, SessionId, SessionTitle, SessionUpdate, TenantId, UserId};
use serde::{Deserialize, Serialize};

use crate::RequestContext;
use crate::audit::Auditor;
use crate::authorization::{Action, authorize};
use crate::cache::{CachedNamespace, NamespacePolicy};
use crate::error::RecordError;
use crate::pagination::{Page, PageRequest};
use crate::ports::{Cache, Clock, IdGenerator, RepositoryError, SessionStore};

/// How sessions are cached: 60 s, up to 10 min for sessions that do not change.
pub const SESSION_NAMESPACE: NamespacePolicy = NamespacePolicy {
    name: "session",
    schema: 1,
    ttl: Duration::from_mins(1),
    max_ttl: Duration::from_mins(10),
};

/// A session as cached; a change here bumps [`SESSION_NAMESPACE`]'s schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedSession {
    user_id: String,
    title: Option<String>,
    /// The metadata object as JSON text (`MessagePack` has no arbitrary-JSON type of its own).
    metadata: String,
    created_at_us: i64,
    updated_at_us: i64,
}

impl From<&Session> for CachedSession {
    fn from(session: &Session) -> Self {
        Self {
            user_id: session.user_id.as_str().to_owned(),
            title: session.title.as_ref().map(|t| t.as_str().to_owned()),
            metadata: serde_json::Value::Object(session.metadata.as_map().clone()).to_string(),
            created_at_us: session.created_at.timestamp_micros(),
            updated_at_us: session.updated_at.timestamp_micros(),
        }
    }
}

impl CachedSession {
    /// The session, or `None` when the entry does not read back (then it is reloaded).
    fn to_session(&self, tenant_id: TenantId, id: SessionId) -> Option<Session> {
        let metadata = match serde_json::from_str(&self.metadata).ok()? {
            serde_json::Value::Object(map) => Metadata::parse(map).ok()?,
            _ => return None,
        };
        Some(Session {
            id,
            tenant_id,
            user_id: UserId::parse(&self.user_id).ok()?,
            title: self.title.as_deref().map(SessionTitle::parse).transpose().ok()?,
            metadata,
            created_at: DateTime::<Utc>::from_timestamp_micros(self.created_at_us)?,
            updated_at: DateTime::<Utc>::from_timestamp_micros(self.updated_at_us)?,
        })
    }
}

/// The session use cases.
#[derive(Clone)]
pub struct SessionService {
    store: Arc<dyn SessionStore>,
    auditor: Auditor,
    cached: CachedNamespace<CachedSession>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

impl std::fmt::Debug for SessionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService").field("policy", self.cached.policy()).finish_non_exhaustive()
    }
}

impl SessionService {
    pub fn new(
        store: Arc<dyn SessionStore>,
        auditor: Auditor,
        cache: Arc<dyn Cache>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        policy: NamespacePolicy,
    ) -> Self {
        Self { store, auditor, cached: CachedNamespace::new(cache, Arc::clone(&clock), policy), clock, ids }
    }

    /// Creates a session of the caller's tenant, owned by the caller.
    ///
    /// # Errors
    /// `Forbidden` when the caller's role has no sessions (audited as denied); `Unexpected`
    /// when it cannot be stored (nothing is then stored). Its audit entry is written after
    /// it, in another store (see [`Auditor::record_after`]).
    pub async fn create(
        &self,
        ctx: &RequestContext,
        title: Option<SessionTitle>,
        metadata: Metadata,
    ) -> Result<Session, RecordError> {
        if let Err(denied) = authorize(&ctx.principal, Action::CreateSession) {
            self.auditor.record_after(ctx, "session.create", "session", None, AuditOutcome::Denied).await;
            return Err(denied.into());
        }
        let now = self.clock.now();
        let session = Session {
            id: SessionId::from_uuid(self.ids.new_id()),
            tenant_id: ctx.principal.tenant_id,
            user_id: ctx.principal.user_id.clone(),
            title,
            metadata,
            created_at: now,
            updated_at: now,
        };
        let id = Some(session.id.to_string());
        if let Err(error) = self.store.create(&ctx.caller(), &session).await {
            self.auditor.record_after(ctx, "session.create", "session", id, AuditOutcome::Error).await;
            return Err(error.into());
        }
        self.auditor.record_after(ctx, "session.create", "session", id, AuditOutcome::Success).await;
        self.cached.set(session.tenant_id, &key(session.id), &CachedSession::from(&session)).await;
        Ok(session)
    }

    /// The session `id` of the caller's tenant, from the cache when fresh.
    ///
    /// # Errors
    /// `Forbidden` when the caller's role has no sessions; `NotFound` when it does not exist,
    /// belongs to another tenant, or to another user while the caller sees only its own.
    pub async fn get(&self, ctx: &RequestContext, id: SessionId) -> Result<Session, RecordError> {
        authorize(&ctx.principal, Action::ReadSessions)?;
        let session = self.load(ctx, id).await?;
        // The store only finds the caller's own sessions, but the cache may hold one that
        // another user of the tenant loaded.
        authorize(&ctx.principal, Action::AccessSession { owner: &session.user_id })
            .map_err(|_| RecordError::NotFound)?;
        Ok(session)
    }

    /// The session `id` of the caller's tenant, from the cache when fresh, whoever owns it.
    async fn load(&self, ctx: &RequestContext, id: SessionId) -> Result<Session, RecordError> {
        let tenant = ctx.principal.tenant_id;
        let caller = ctx.caller();
        let cached = self
            .cached
            .get_or_load(tenant, &key(id), || async {
                match self.store.get(&caller, id).await? {
                    Some(session) => Ok(CachedSession::from(&session)),
                    // Not cached: the error ends the load.
                    None => Err(RecordError::NotFound),
                }
            })
            .await?;
        if let Some(session) = cached.to_session(tenant, id) {
            return Ok(session);
        }
        tracing::warn!(session_id = %id, "a cached session could not be read; reloading it");
        self.cached.delete(tenant, &key(id)).await;
        self.store.get(&caller, id).await?.ok_or(RecordError::NotFound)
    }

    /// One page of the caller's sessions (all of the tenant's when the caller sees the whole
    /// tenant), newest first, always from the store.
    ///
    /// # Errors
    /// `Forbidden` when the caller's role has no sessions; `Unexpected` when the store
    /// cannot be read.
    pub async fn list(&self, ctx: &RequestContext, page: PageRequest) -> Result<Page<Session>, RecordError> {
        authorize(&ctx.principal, Action::ReadSessions)?;
        Ok(self.store.list(&ctx.caller(), page).await?)
    }

    /// Applies `update` to the session `id` and forgets its cached copy on every node.
    ///
    /// # Errors
    /// `Forbidden` when the caller's role has no sessions; `NotFound` when it does not exist,
    /// belongs to another tenant, or to another user while the caller sees only its own
    /// (both audited as denied).
    pub async fn update(
        &self,
        ctx: &RequestContext,
        id: SessionId,
        update: &SessionUpdate,
    ) -> Result<Session, RecordError> {
        let resource = Some(id.to_string());
        if let Err(denied) = authorize(&ctx.principal, Action::UpdateSessions) {
            self.auditor.record_after(ctx, "session.update", "session", resource, AuditOutcome::Denied).await;
            return Err(denied.into());
        }
        let updated = match self.store.update(&ctx.caller(), id, update, self.clock.now()).await {
            Ok(updated) => updated,
            Err(error) => {
                // The write may have been applied before the failure (a timeout after the
                // commit): the cached copy is dropped so that no reader keeps the old one.
                if matches!(error, RepositoryError::Unexpected(_)) {
                    self.cached.delete(ctx.principal.tenant_id, &key(id)).await;
                }
                self.auditor
                    .record_after(ctx, "session.update", "session", resource, AuditOutcome::Error)
                    .await;
                return Err(error.into());
            }
        };
        let Some(session) = updated else {
            self.auditor.record_after(ctx, "session.update", "session", resource, AuditOutcome::Denied).await;
            return Err(RecordError::NotFound);
        };
        self.cached.delete(session.tenant_id, &key(id)).await;
        self.auditor.record_after(ctx, "session.update", "session", resource, AuditOutcome::Success).await;
        Ok(session)
    }
}

fn key(id: SessionId) -> String {
    id.to_string()
}

#[cfg(test)]
mod tests {
    use mockall::predicate::{always, eq};
    use sba_domain::{Principal, Role};
    use uuid::Uuid;

    use super::*;
    use crate::ports::{ConflictKind, MockAuditLog, MockIdGenerator, MockSessionStore, RepositoryError};
    use crate::testing::{MapCache, TestClock};

    const TENANT: Uuid = Uuid::from_u128(0xa);

    fn ctx() -> RequestContext {
        RequestContext {
            principal: Principal {
                tenant_id: TenantId::from_uuid(TENANT),
                user_id: UserId::parse("alice").unwrap(),
                role: Role::Authenticated,
            },
            ip: None,
            request_id: "req-1".into(),
            client_request_id: None,
            token: None,
        }
    }

    fn session(id: SessionId, title: &str) -> Session {
        let at = DateTime::from_timestamp(1_800_000_000, 123_456_000).unwrap();
        Session {
            id,
            tenant_id: TenantId::from_uuid(TENANT),
            user_id: UserId::parse("alice").unwrap(),
            title: Some(SessionTitle::parse(title).unwrap()),
            metadata: Metadata::default(),
            created_at: at,
            updated_at: at,
        }
    }

    /// A service over `store` with an audit log that accepts `audits` entries.
    fn service(store: MockSessionStore, audits: usize) -> SessionService {
        let mut audit = MockAuditLog::new();
        audit.expect_record().times(audits).returning(|_| Ok(()));
        service_with(store, audit, MockIdGenerator::new())
    }

    /// A service over `store` and `audit`, new sessions getting their ids from `session_ids`.
    fn service_with(
        store: MockSessionStore,
        audit: MockAuditLog,
        session_ids: MockIdGenerator,
    ) -> SessionService {
        let clock = Arc::new(TestClock::at(1_800_000_000_000));
        service_over(store, audit, session_ids, Arc::default(), clock)
    }

    /// A service like [`service_with`]'s over a `cache` and `clock` the test looks at.
    fn service_over(
        store: MockSessionStore,
        audit: MockAuditLog,
        session_ids: MockIdGenerator,
        cache: Arc<MapCache>,
        clock: Arc<TestClock>,
    ) -> SessionService {
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(Uuid::now_v7);
        SessionService::new(
            Arc::new(store),
            Auditor::new(Arc::new(audit), clock.clone(), Arc::new(ids)),
            cache,
            clock,
            Arc::new(session_ids),
            SESSION_NAMESPACE,
        )
    }

    fn outage() -> RepositoryError {
        RepositoryError::Unexpected(anyhow::anyhow!("connection lost"))
    }

    /// An audit log that expects exactly one `action` entry with `outcome` about `id`.
    fn audit_expecting(action: &'static str, outcome: AuditOutcome, id: SessionId) -> MockAuditLog {
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(move |entry| {
                entry.action == action
                    && entry.outcome == outcome
                    && entry.resource_id == Some(id.to_string())
            })
            .times(1)
            .returning(|_| Ok(()));
        audit
    }

    #[tokio::test]
    async fn a_session_is_read_from_the_store_once_then_from_the_cache() {
        let id = SessionId::from_uuid(Uuid::from_u128(1));
        let mut store = MockSessionStore::new();
        store.expect_get().with(always(), eq(id)).times(1).returning(move |_, id| Ok(Some(session(id, "t"))));
        let service = service(store, 0);
        assert_eq!(service.get(&ctx(), id).await.unwrap(), session(id, "t"));
        assert_eq!(service.get(&ctx(), id).await.unwrap(), session(id, "t"), "served from the cache");
    }

    #[tokio::test]
    async fn sessions_of_one_tenant_are_cached_apart() {
        let (first, second) =
            (SessionId::from_uuid(Uuid::from_u128(1)), SessionId::from_uuid(Uuid::from_u128(2)));
        let mut store = MockSessionStore::new();
        store
            .expect_get()
            .times(2)
            .returning(move |_, id| Ok(Some(session(id, if id == first { "first" } else { "second" }))));
        let service = service(store, 0);
        for (id, title) in [(first, "first"), (second, "second"), (first, "first"), (second, "second")] {
            let read = service.get(&ctx(), id).await.unwrap();
            assert_eq!((read.id, read.title.unwrap().as_str()), (id, title));
        }
    }

    #[test]
    fn debug_output_shows_the_cache_policy() {
        let service = service(MockSessionStore::new(), 0);
        let debug = format!("{service:?}");
        assert!(debug.starts_with("SessionService") && debug.contains(r#"name: "session""#), "{debug}");
    }

    #[tokio::test]
    async fn an_unknown_session_is_not_found_and_not_cached() {
        let id = SessionId::from_uuid(Uuid::from_u128(2));
        let mut store = MockSessionStore::new();
        store.expect_get().times(2).returning(|_, _| Ok(None));
        let service = service(store, 0);
        assert!(matches!(service.get(&ctx(), id).await, Err(RecordError::NotFound)));
        assert!(matches!(service.get(&ctx(), id).await, Err(RecordError::NotFound)), "asked again");
    }

    #[tokio::test]
    async fn an_update_drops_the_cached_copy_so_the_next_read_sees_it() {
        let id = SessionId::from_uuid(Uuid::from_u128(3));
        let mut store = MockSessionStore::new();
        let mut reads = 0;
        store.expect_get().times(2).returning(move |_, id| {
            reads += 1;
            Ok(Some(session(id, if reads == 1 { "old" } else { "new" })))
        });
        store.expect_update().times(1).returning(|_, id, _, _| Ok(Some(session(id, "new"))));
        let service = service(store, 1);
        assert_eq!(service.get(&ctx(), id).await.unwrap().title.unwrap().as_str(), "old");
        let update = SessionUpdate { title: Some(Some(SessionTitle::parse("new").unwrap())), metadata: None };
        service.update(&ctx(), id, &update).await.unwrap();
        assert_eq!(service.get(&ctx(), id).await.unwrap().title.unwrap().as_str(), "new");
    }

    #[tokio::test]
    async fn updating_an_unknown_session_is_not_found_and_audited_as_denied() {
        let mut store = MockSessionStore::new();
        store.expect_update().times(1).returning(|_, _, _, _| Ok(None));
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(|entry| entry.action == "session.update" && entry.outcome == AuditOutcome::Denied)
            .times(1)
            .returning(|_| Ok(()));
        let service = service_with(store, audit, MockIdGenerator::new());
        let id = SessionId::from_uuid(Uuid::from_u128(4));
        let result = service.update(&ctx(), id, &SessionUpdate::default()).await;
        assert!(matches!(result, Err(RecordError::NotFound)));
    }

    #[tokio::test]
    async fn a_created_session_belongs_to_the_caller_and_is_audited() {
        let mut store = MockSessionStore::new();
        store
            .expect_create()
            .withf(|caller, session| {
                caller.tenant == session.tenant_id && session.user_id.as_str() == "alice"
            })
            .times(1)
            .returning(|_, _| Ok(()));
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(|entry| entry.action == "session.create" && entry.outcome == AuditOutcome::Success)
            .times(1)
            .returning(|_| Ok(()));
        let mut session_ids = MockIdGenerator::new();
        session_ids.expect_new_id().times(1).returning(|| Uuid::from_u128(5));
        let service = service_with(store, audit, session_ids);
        let created = service.create(&ctx(), None, Metadata::default()).await.unwrap();
        assert_eq!(created.id, SessionId::from_uuid(Uuid::from_u128(5)));
        assert_eq!(created.tenant_id, TenantId::from_uuid(TENANT));
        // Written through: the next read needs no store (the mock has no `get`).
        assert_eq!(service.get(&ctx(), created.id).await.unwrap(), created);
    }

    fn ctx_as(user: &str, role: Role) -> RequestContext {
        let mut ctx = ctx();
        ctx.principal.user_id = UserId::parse(user).unwrap();
        ctx.principal.role = role;
        ctx
    }

    #[tokio::test]
    async fn another_users_cached_session_is_not_found_while_admins_and_services_read_it() {
        let id = SessionId::from_uuid(Uuid::from_u128(7));
        let mut store = MockSessionStore::new();
        // Alice's read loads and caches it; every later read is served from the cache.
        store.expect_get().times(1).returning(move |_, id| Ok(Some(session(id, "alice's"))));
        let service = service(store, 0);
        assert_eq!(service.get(&ctx(), id).await.unwrap(), session(id, "alice's"));

        let bob = service.get(&ctx_as("bob", Role::Authenticated), id).await;
        assert!(matches!(bob, Err(RecordError::NotFound)), "{bob:?}");
        for role in [Role::Admin, Role::Service] {
            assert_eq!(service.get(&ctx_as("root", role), id).await.unwrap(), session(id, "alice's"));
        }
    }

    #[tokio::test]
    async fn agents_have_no_access_to_sessions_and_their_writes_are_audited_as_denied() {
        let mut store = MockSessionStore::new();
        store.expect_create().never();
        store.expect_get().never();
        store.expect_list().never();
        store.expect_update().never();
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(|entry| {
                matches!(entry.action.as_str(), "session.create" | "session.update")
                    && entry.outcome == AuditOutcome::Denied
            })
            .times(2)
            .returning(|_| Ok(()));
        let service = service_with(store, audit, MockIdGenerator::new());
        let agent = ctx_as("agent-1", Role::Agent);
        let id = SessionId::from_uuid(Uuid::from_u128(8));
        let created = service.create(&agent, None, Metadata::default()).await;
        assert!(matches!(created, Err(RecordError::Forbidden(_))), "{created:?}");
        assert!(matches!(service.get(&agent, id).await, Err(RecordError::Forbidden(_))));
        assert!(matches!(service.list(&agent, PageRequest::first(5)).await, Err(RecordError::Forbidden(_))));
        let updated = service.update(&agent, id, &SessionUpdate::default()).await;
        assert!(matches!(updated, Err(RecordError::Forbidden(_))), "{updated:?}");
    }

    #[tokio::test]
    async fn a_session_that_cannot_be_stored_is_unexpected_audited_as_an_error_and_not_cached() {
        let failures: [fn() -> RepositoryError; 2] =
            [outage, || RepositoryError::Conflict(ConflictKind::DuplicateId)];
        for failure in failures {
            let id = SessionId::from_uuid(Uuid::from_u128(11));
            let mut store = MockSessionStore::new();
            store.expect_create().times(1).returning(move |_, _| Err(failure()));
            let mut session_ids = MockIdGenerator::new();
            session_ids.expect_new_id().times(1).returning(move || id.as_uuid());
            let cache = Arc::new(MapCache::default());
            let clock = Arc::new(TestClock::at(1_800_000_000_000));
            let audit = audit_expecting("session.create", AuditOutcome::Error, id);
            let service = service_over(store, audit, session_ids, cache.clone(), clock);
            let created = service.create(&ctx(), None, Metadata::default()).await;
            assert!(matches!(created, Err(RecordError::Unexpected(_))), "{created:?}");
            assert!(cache.0.lock().unwrap().is_empty(), "nothing written through");
        }
    }

    #[tokio::test]
    async fn a_created_session_is_returned_and_written_through_even_when_its_audit_entry_cannot_be_written() {
        let mut store = MockSessionStore::new();
        store.expect_create().times(1).returning(|_, _| Ok(()));
        store.expect_get().never();
        let mut audit = MockAuditLog::new();
        audit.expect_record().times(1).returning(|_| Err(outage()));
        let mut session_ids = MockIdGenerator::new();
        session_ids.expect_new_id().times(1).returning(|| Uuid::from_u128(12));
        let service = service_with(store, audit, session_ids);
        let created = service.create(&ctx(), None, Metadata::default()).await.unwrap();
        assert_eq!(service.get(&ctx(), created.id).await.unwrap(), created, "from the cache");
    }

    #[tokio::test]
    async fn a_store_outage_while_reading_a_session_is_unexpected_not_not_found_and_not_cached() {
        let id = SessionId::from_uuid(Uuid::from_u128(13));
        let mut store = MockSessionStore::new();
        store.expect_get().with(always(), eq(id)).times(2).returning(|_, _| Err(outage()));
        let cache = Arc::new(MapCache::default());
        let clock = Arc::new(TestClock::at(1_800_000_000_000));
        let service = service_over(store, MockAuditLog::new(), MockIdGenerator::new(), cache.clone(), clock);
        for attempt in ["first", "asked again"] {
            let read = service.get(&ctx(), id).await;
            assert!(matches!(read, Err(RecordError::Unexpected(_))), "{attempt}: {read:?}");
        }
        assert!(cache.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_store_outage_once_a_cached_session_expired_serves_the_previous_copy_within_its_grace() {
        let id = SessionId::from_uuid(Uuid::from_u128(14));
        let mut store = MockSessionStore::new();
        let mut reads = 0;
        store.expect_get().times(3).returning(move |_, id| {
            reads += 1;
            if reads == 1 { Ok(Some(session(id, "kept"))) } else { Err(outage()) }
        });
        let clock = Arc::new(TestClock::at(1_800_000_000_000));
        let service =
            service_over(store, MockAuditLog::new(), MockIdGenerator::new(), Arc::default(), clock.clone());
        service.get(&ctx(), id).await.unwrap();
        clock.advance(61_000);
        assert_eq!(service.get(&ctx(), id).await.unwrap(), session(id, "kept"), "stale, not an error");
        clock.advance(120_000);
        let read = service.get(&ctx(), id).await;
        assert!(matches!(read, Err(RecordError::Unexpected(_))), "past its grace: {read:?}");
    }

    #[tokio::test]
    async fn a_cached_session_that_does_not_read_back_is_dropped_and_the_stores_answer_decides() {
        type Answer = fn() -> Result<Option<Session>, RepositoryError>;
        let answers: [(Answer, &str); 2] = [(|| Err(outage()), "Unexpected"), (|| Ok(None), "NotFound")];
        for (answer, expected) in answers {
            let id = SessionId::from_uuid(Uuid::from_u128(15));
            let cache = Arc::new(MapCache::default());
            let clock = Arc::new(TestClock::at(1_800_000_000_000));
            let broken = CachedSession { metadata: "[1]".into(), ..CachedSession::from(&session(id, "t")) };
            CachedNamespace::new(cache.clone(), clock.clone(), SESSION_NAMESPACE)
                .set(TenantId::from_uuid(TENANT), &key(id), &broken)
                .await;
            assert_eq!(cache.0.lock().unwrap().len(), 1, "planted");
            let mut store = MockSessionStore::new();
            store.expect_get().with(always(), eq(id)).times(1).returning(move |_, _| answer());
            let service =
                service_over(store, MockAuditLog::new(), MockIdGenerator::new(), cache.clone(), clock);
            let read = service.get(&ctx(), id).await;
            let got = match read {
                Err(RecordError::Unexpected(_)) => "Unexpected",
                Err(RecordError::NotFound) => "NotFound",
                ref other => panic!("{other:?}"),
            };
            assert_eq!(got, expected);
            assert!(cache.0.lock().unwrap().is_empty(), "the broken entry is dropped");
        }
    }

    #[tokio::test]
    async fn a_store_outage_while_listing_sessions_is_unexpected_not_not_found() {
        let mut store = MockSessionStore::new();
        store.expect_list().times(1).returning(|_, _| Err(outage()));
        let listed = service(store, 0).list(&ctx(), PageRequest::first(5)).await;
        assert!(matches!(listed, Err(RecordError::Unexpected(_))), "{listed:?}");
    }

    #[tokio::test]
    async fn a_store_outage_while_updating_is_unexpected_and_audited_as_an_error_not_denied() {
        let id = SessionId::from_uuid(Uuid::from_u128(16));
        let mut store = MockSessionStore::new();
        store
            .expect_update()
            .with(always(), eq(id), always(), always())
            .times(1)
            .returning(|_, _, _, _| Err(outage()));
        let audit = audit_expecting("session.update", AuditOutcome::Error, id);
        let service = service_with(store, audit, MockIdGenerator::new());
        let updated = service.update(&ctx(), id, &SessionUpdate::default()).await;
        assert!(matches!(updated, Err(RecordError::Unexpected(_))), "{updated:?}");
    }

    #[tokio::test]
    async fn an_update_that_fails_unexpectedly_drops_the_cached_copy_since_the_write_may_have_landed() {
        let id = SessionId::from_uuid(Uuid::from_u128(17));
        let mut store = MockSessionStore::new();
        let mut reads = 0;
        store.expect_get().times(2).returning(move |_, id| {
            reads += 1;
            Ok(Some(session(id, if reads == 1 { "old" } else { "new" })))
        });
        store.expect_update().times(1).returning(|_, _, _, _| Err(outage()));
        let service = service(store, 1);
        assert_eq!(service.get(&ctx(), id).await.unwrap().title.unwrap().as_str(), "old");
        let update = SessionUpdate { title: Some(Some(SessionTitle::parse("new").unwrap())), metadata: None };
        let updated = service.update(&ctx(), id, &update).await;
        assert!(matches!(updated, Err(RecordError::Unexpected(_))), "{updated:?}");
        assert_eq!(
            service.get(&ctx(), id).await.unwrap().title.unwrap().as_str(),
            "new",
            "read from the store"
        );
    }

    #[test]
    fn cached_sessions_read_back_as_the_same_session() {
        let id = SessionId::from_uuid(Uuid::from_u128(6));
        let mut original = session(id, "title");
        let mut map = serde_json::Map::new();
        map.insert("k".into(), serde_json::json!({"n": [1, 2]}));
        original.metadata = Metadata::parse(map).unwrap();
        let cached = CachedSession::from(&original);
        assert_eq!(cached.to_session(original.tenant_id, id), Some(original));
        let broken = CachedSession { metadata: "[1]".into(), ..cached };
        assert_eq!(broken.to_session(TenantId::from_uuid(TENANT), id), None);
    }
}
