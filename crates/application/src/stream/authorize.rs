//! Who may subscribe to which stream channel ([`StreamAuthorizer`]), per the permission
//! matrix of `docs/security.md`, and the bus channel a subscription listens on
//! ([`bus_channel`]).
//!
//! - `run:<id>`: reading runs (every role), for a run of the caller's tenant. An unknown run
//!   and another tenant's run are refused alike, with the same message, so that run ids
//!   cannot be probed.
//! - `session:<id>`: the caller's own session, or any of the tenant's for admins and
//!   services; agents have none. The session is looked up as `GET /v1/sessions/{id}` looks
//!   it up ([`SessionService::get`]); one the caller may not reach is refused exactly like a
//!   missing one.
//! - `tenant`: tenant administrators only.

use sba_domain::TenantId;

use super::protocol::StreamChannel;
use crate::RequestContext;
use crate::authorization::{Action, authorize};
use crate::error::RecordError;
use crate::ports::EventChannel;
use crate::runs::RunAccess;
use crate::sessions::SessionService;

/// The refusal of a `run:` channel whose run the caller cannot see (unknown, or another
/// tenant's).
const RUN_NOT_VISIBLE: &str = "the run does not exist";

/// The refusal of a `session:` channel whose session the caller cannot reach (unknown,
/// another tenant's, or another user's); the permission matrix's own words for it.
const SESSION_NOT_VISIBLE: &str = "the session does not exist";

/// Why a subscription was not allowed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The caller may not subscribe to the channel (the gateway answers `forbidden` with
    /// this reason, which never tells a missing record from another's).
    #[error("{0}")]
    Forbidden(&'static str),
    /// A store the decision needs did not answer (the gateway answers `unavailable`).
    #[error("cannot decide the subscription")]
    Unavailable(#[source] anyhow::Error),
}

/// Decides subscriptions for the callers of one node.
#[derive(Debug, Clone)]
pub struct StreamAuthorizer {
    runs: RunAccess,
    sessions: SessionService,
}

impl StreamAuthorizer {
    pub const fn new(runs: RunAccess, sessions: SessionService) -> Self {
        Self { runs, sessions }
    }

    /// Whether the caller of `ctx` may subscribe to `channel`, and if so the bus channel to
    /// listen on.
    ///
    /// # Errors
    /// [`SubscribeError::Forbidden`] when it may not; [`SubscribeError::Unavailable`] when
    /// the run or session store cannot be read.
    pub async fn authorize(
        &self,
        ctx: &RequestContext,
        channel: StreamChannel,
    ) -> Result<EventChannel, SubscribeError> {
        let principal = &ctx.principal;
        match channel {
            StreamChannel::Run(run) => {
                authorize(principal, Action::ReadRuns)
                    .map_err(|denied| SubscribeError::Forbidden(denied.reason()))?;
                let visible = self.runs.visible(principal.tenant_id, run).await.map_err(|error| {
                    SubscribeError::Unavailable(anyhow::Error::new(error).context("run access"))
                })?;
                if !visible {
                    return Err(SubscribeError::Forbidden(RUN_NOT_VISIBLE));
                }
            }
            StreamChannel::Session(session) => match self.sessions.get(ctx, session).await {
                Ok(_) => {}
                Err(RecordError::NotFound) => return Err(SubscribeError::Forbidden(SESSION_NOT_VISIBLE)),
                Err(RecordError::Forbidden(denied)) => {
                    return Err(SubscribeError::Forbidden(denied.reason()));
                }
                Err(RecordError::Unexpected(error)) => return Err(SubscribeError::Unavailable(error)),
            },
            StreamChannel::Tenant => {
                authorize(principal, Action::SubscribeTenant)
                    .map_err(|denied| SubscribeError::Forbidden(denied.reason()))?;
            }
        }
        Ok(bus_channel(channel, principal.tenant_id))
    }
}

/// The bus channel carrying `channel`'s events for a caller of `tenant`.
pub const fn bus_channel(channel: StreamChannel, tenant: TenantId) -> EventChannel {
    match channel {
        StreamChannel::Run(run) => EventChannel::Run(run),
        StreamChannel::Session(session) => EventChannel::Session(session),
        StreamChannel::Tenant => EventChannel::Tenant(tenant),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::DateTime;
    use sba_domain::{Metadata, Principal, Role, RunId, Session, SessionId, UserId};
    use uuid::Uuid;

    use super::*;
    use crate::audit::Auditor;
    use crate::ports::{
        ConflictKind, MockAuditLog, MockIdGenerator, MockRunRepository, MockSessionStore, RepositoryError,
    };
    use crate::sessions::SESSION_NAMESPACE;
    use crate::testing::{MapCache, TestClock};

    const TENANT: TenantId = TenantId::from_uuid(Uuid::from_u128(1));
    const OTHER_TENANT: TenantId = TenantId::from_uuid(Uuid::from_u128(2));
    const RUN: RunId = RunId::from_uuid(Uuid::from_u128(0xa));
    const ALICES: SessionId = SessionId::from_uuid(Uuid::from_u128(0x5));
    const ROLES: [Role; 4] = [Role::Authenticated, Role::Admin, Role::Agent, Role::Service];

    fn ctx(tenant: TenantId, user: &str, role: Role) -> RequestContext {
        RequestContext {
            principal: Principal { tenant_id: tenant, user_id: UserId::parse(user).unwrap(), role },
            ip: None,
            request_id: "ws-1".into(),
            client_request_id: None,
            token: None,
        }
    }

    fn run_of(tenant: TenantId) -> sba_domain::AgentRun {
        let new = sba_domain::NewRun {
            tenant_id: tenant,
            user_id: UserId::parse("alice").unwrap(),
            agent: sba_domain::AgentName::parse("bot").unwrap(),
            input: serde_json::Value::Null,
            session_id: None,
            metadata: Metadata::default(),
        };
        sba_domain::AgentRun::new(RUN, new, DateTime::UNIX_EPOCH)
    }

    /// RUN exists in TENANT only; ALICES is alice's session of TENANT, and the store scopes
    /// sessions as the adapters do (the caller's own unless it sees the whole tenant).
    fn authorizer() -> StreamAuthorizer {
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(|tenant, id| Ok((tenant == TENANT && id == RUN).then(|| run_of(tenant))));
        let mut store = MockSessionStore::new();
        store.expect_get().returning(|caller, id| {
            let owner = UserId::parse("alice").unwrap();
            let reachable = caller.tenant == TENANT
                && id == ALICES
                && (caller.sees_whole_tenant() || caller.user == owner);
            Ok(reachable.then(|| Session {
                id,
                tenant_id: TENANT,
                user_id: owner,
                title: None,
                metadata: Metadata::default(),
                created_at: DateTime::UNIX_EPOCH,
                updated_at: DateTime::UNIX_EPOCH,
            }))
        });
        with_stores(runs, store)
    }

    fn with_stores(runs: MockRunRepository, sessions: MockSessionStore) -> StreamAuthorizer {
        let clock = Arc::new(TestClock::at(0));
        // Nothing here is a mutation: no audit entry is written.
        let mut audit = MockAuditLog::new();
        audit.expect_record().never();
        let auditor = Auditor::new(Arc::new(audit), clock.clone(), Arc::new(MockIdGenerator::new()));
        // A cache per store, so that no test is answered from another's cached session.
        let access = RunAccess::new(Arc::new(runs), Arc::new(MapCache::default()), clock.clone());
        let sessions = SessionService::new(
            Arc::new(sessions),
            auditor,
            Arc::new(MapCache::default()),
            clock,
            Arc::new(MockIdGenerator::new()),
            SESSION_NAMESPACE,
        );
        StreamAuthorizer::new(access, sessions)
    }

    fn forbidden_reason(result: Result<EventChannel, SubscribeError>) -> &'static str {
        match result {
            Err(SubscribeError::Forbidden(reason)) => reason,
            other => panic!("expected forbidden, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_role_may_follow_a_run_of_its_tenant() {
        let authorizer = authorizer();
        for role in ROLES {
            let channel =
                authorizer.authorize(&ctx(TENANT, "bob", role), StreamChannel::Run(RUN)).await.unwrap();
            assert_eq!(channel, EventChannel::Run(RUN), "{role}");
        }
    }

    #[tokio::test]
    async fn an_unknown_run_and_another_tenants_run_are_refused_alike() {
        let authorizer = authorizer();
        let unknown = RunId::from_uuid(Uuid::from_u128(0xdead));
        let missing =
            authorizer.authorize(&ctx(TENANT, "bob", Role::Admin), StreamChannel::Run(unknown)).await;
        let foreign =
            authorizer.authorize(&ctx(OTHER_TENANT, "bob", Role::Admin), StreamChannel::Run(RUN)).await;
        assert_eq!(forbidden_reason(missing), forbidden_reason(foreign));
    }

    #[tokio::test]
    async fn a_session_is_for_its_owner_and_the_tenants_admins_and_services() {
        let authorizer = authorizer();
        for (user, role) in
            [("alice", Role::Authenticated), ("root", Role::Admin), ("backend", Role::Service)]
        {
            let channel =
                authorizer.authorize(&ctx(TENANT, user, role), StreamChannel::Session(ALICES)).await.unwrap();
            assert_eq!(channel, EventChannel::Session(ALICES), "{user}");
        }
    }

    #[tokio::test]
    async fn another_users_session_is_refused_like_a_missing_one() {
        let authorizer = authorizer();
        let missing = SessionId::from_uuid(Uuid::from_u128(0xdead));
        let cases = [
            ("another user's", ctx(TENANT, "bob", Role::Authenticated), ALICES),
            ("unknown", ctx(TENANT, "alice", Role::Authenticated), missing),
            ("another tenant's", ctx(OTHER_TENANT, "alice", Role::Admin), ALICES),
        ];
        for (case, caller, session) in cases {
            let refused = authorizer.authorize(&caller, StreamChannel::Session(session)).await;
            assert_eq!(forbidden_reason(refused), SESSION_NOT_VISIBLE, "{case}");
        }
    }

    #[tokio::test]
    async fn another_users_session_is_refused_after_its_owner_cached_it() {
        let authorizer = authorizer();
        let alice = ctx(TENANT, "alice", Role::Authenticated);
        authorizer.authorize(&alice, StreamChannel::Session(ALICES)).await.unwrap();
        let bob = ctx(TENANT, "bob", Role::Authenticated);
        let refused = authorizer.authorize(&bob, StreamChannel::Session(ALICES)).await;
        assert_eq!(forbidden_reason(refused), SESSION_NOT_VISIBLE);
    }

    #[tokio::test]
    async fn agents_are_refused_every_session_without_a_lookup() {
        let mut store = MockSessionStore::new();
        store.expect_get().never();
        let authorizer = with_stores(MockRunRepository::new(), store);
        let refused =
            authorizer.authorize(&ctx(TENANT, "agent-1", Role::Agent), StreamChannel::Session(ALICES)).await;
        assert_eq!(forbidden_reason(refused), "agents have no access to sessions");
    }

    #[tokio::test]
    async fn only_admins_may_follow_the_whole_tenant() {
        let authorizer = authorizer();
        for role in ROLES {
            let result = authorizer.authorize(&ctx(TENANT, "u", role), StreamChannel::Tenant).await;
            if role == Role::Admin {
                assert_eq!(result.unwrap(), EventChannel::Tenant(TENANT));
            } else {
                assert!(forbidden_reason(result).contains("administrators"), "{role}");
            }
        }
    }

    #[tokio::test]
    async fn a_store_that_does_not_answer_leaves_the_subscription_undecided() {
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(|_, _| Err(RepositoryError::Unexpected(anyhow::anyhow!("timeout"))));
        let mut sessions = MockSessionStore::new();
        sessions.expect_get().returning(|_, _| Err(RepositoryError::Unexpected(anyhow::anyhow!("timeout"))));
        let authorizer = with_stores(runs, sessions);
        let caller = ctx(TENANT, "alice", Role::Authenticated);
        for channel in [StreamChannel::Run(RUN), StreamChannel::Session(ALICES)] {
            let result = authorizer.authorize(&caller, channel).await;
            assert!(matches!(result, Err(SubscribeError::Unavailable(_))), "{channel}: {result:?}");
        }
    }

    #[tokio::test]
    async fn a_session_store_error_is_refused_as_missing_only_when_it_says_not_found() {
        let answers: [(fn() -> RepositoryError, bool); 3] = [
            (|| RepositoryError::NotFound, true),
            (|| RepositoryError::Conflict(ConflictKind::ConcurrentChange), false),
            (|| RepositoryError::Unexpected(anyhow::anyhow!("timeout")), false),
        ];
        for (error, refused_as_missing) in answers {
            let case = format!("{:?}", error());
            let mut sessions = MockSessionStore::new();
            sessions.expect_get().times(1).returning(move |_, _| Err(error()));
            let authorizer = with_stores(MockRunRepository::new(), sessions);
            let result = authorizer
                .authorize(&ctx(TENANT, "alice", Role::Authenticated), StreamChannel::Session(ALICES))
                .await;
            if refused_as_missing {
                assert_eq!(forbidden_reason(result), SESSION_NOT_VISIBLE, "{case}");
            } else {
                assert!(matches!(result, Err(SubscribeError::Unavailable(_))), "{case}: {result:?}");
            }
        }
    }

    #[tokio::test]
    async fn an_outage_is_not_remembered_and_the_next_subscribe_asks_the_store_again() {
        let mut runs = MockRunRepository::new();
        let mut run_calls = 0;
        runs.expect_get().times(2).returning(move |tenant, _| {
            run_calls += 1;
            if run_calls == 1 {
                Err(RepositoryError::Unexpected(anyhow::anyhow!("timeout")))
            } else {
                Ok(Some(run_of(tenant)))
            }
        });
        let mut sessions = MockSessionStore::new();
        let mut session_calls = 0;
        sessions.expect_get().times(2).returning(move |_, id| {
            session_calls += 1;
            if session_calls == 1 {
                return Err(RepositoryError::Unexpected(anyhow::anyhow!("timeout")));
            }
            Ok(Some(Session {
                id,
                tenant_id: TENANT,
                user_id: UserId::parse("alice").unwrap(),
                title: None,
                metadata: Metadata::default(),
                created_at: DateTime::UNIX_EPOCH,
                updated_at: DateTime::UNIX_EPOCH,
            }))
        });
        let authorizer = with_stores(runs, sessions);
        let alice = ctx(TENANT, "alice", Role::Authenticated);
        for (channel, bus) in [
            (StreamChannel::Run(RUN), EventChannel::Run(RUN)),
            (StreamChannel::Session(ALICES), EventChannel::Session(ALICES)),
        ] {
            let first = authorizer.authorize(&alice, channel).await;
            assert!(matches!(first, Err(SubscribeError::Unavailable(_))), "{channel}: {first:?}");
            assert_eq!(authorizer.authorize(&alice, channel).await.unwrap(), bus, "{channel}");
        }
    }

    #[test]
    fn the_tenant_channel_is_the_callers_own_tenants() {
        let session = SessionId::from_uuid(Uuid::from_u128(3));
        assert_eq!(bus_channel(StreamChannel::Run(RUN), TENANT), EventChannel::Run(RUN));
        assert_eq!(bus_channel(StreamChannel::Session(session), TENANT), EventChannel::Session(session));
        assert_eq!(bus_channel(StreamChannel::Tenant, OTHER_TENANT), EventChannel::Tenant(OTHER_TENANT));
    }
}
