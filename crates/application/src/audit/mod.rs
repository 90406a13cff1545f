//! The audit trail: the entries use cases write ([`Auditor`]) and tenant administrators
//! read ([`AuditQueries`]).

use std::sync::Arc;

use sba_domain::{AuditEntry, AuditEntryId, AuditOutcome, TenantId};

use crate::RequestContext;
use crate::authorization::{Action, authorize};
use crate::error::RestrictedReadError;
use crate::pagination::{Page, PageRequest};
use crate::ports::{AuditLog, Clock, IdGenerator};

/// Builds and writes audit entries: one per mutation attempt of a caller (success or not),
/// and the entries of changes the platform makes itself.
#[derive(Clone, Debug)]
pub struct Auditor {
    log: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

impl Auditor {
    pub fn new(log: Arc<dyn AuditLog>, clock: Arc<dyn Clock>, ids: Arc<dyn IdGenerator>) -> Self {
        Self { log, clock, ids }
    }

    /// Records an attempt whose outcome already happened in another store (sessions and
    /// knowledge live in Supabase, the audit log in the internal store). A failure to store
    /// the entry is logged with every field of the entry and counted
    /// (`sba_audit_write_failures_total`), never turned into the request's failure: the
    /// change cannot be undone, and failing the request would invite a retry that repeats it.
    pub async fn record_after(
        &self,
        ctx: &RequestContext,
        action: &str,
        resource_type: &str,
        resource_id: Option<String>,
        outcome: AuditOutcome,
    ) {
        let entry = self.entry(ctx, action, resource_type, resource_id, outcome);
        if let Err(error) = self.store(&entry).await {
            metrics::counter!("sba_audit_write_failures_total").increment(1);
            tracing::error!(
                error = format!("{error:#}"),
                audit_id = %entry.id,
                tenant_id = %entry.tenant_id,
                actor = %entry.actor,
                action = %entry.action,
                resource_type = %entry.resource_type,
                resource_id = entry.resource_id.as_deref().unwrap_or(""),
                outcome = %entry.outcome,
                ip = entry.ip.as_deref().unwrap_or(""),
                request_id = entry.request_id.as_deref().unwrap_or(""),
                client_request_id = entry.client_request_id.as_deref().unwrap_or(""),
                created_at = %entry.created_at,
                "an audit entry could not be stored; it is kept in this log line"
            );
        }
    }

    /// The entry of an attempt by the caller of `ctx`: its tenant, user, address and request
    /// id. For a caller whose entry must be written with the change itself (in the same
    /// transaction), which [`Self::record_after`] cannot do.
    pub fn entry(
        &self,
        ctx: &RequestContext,
        action: &str,
        resource_type: &str,
        resource_id: Option<String>,
        outcome: AuditOutcome,
    ) -> AuditEntry {
        AuditEntry {
            ip: ctx.ip.clone(),
            request_id: Some(ctx.request_id.clone()),
            client_request_id: ctx.client_request_id.clone(),
            ..self.system_entry(
                ctx.principal.tenant_id,
                ctx.principal.user_id.as_str(),
                action,
                resource_type,
                resource_id,
                outcome,
            )
        }
    }

    /// The entry of a change the platform made in `tenant_id` by itself, with no request
    /// behind it: `actor` names the process (such as `system:run-expiry`).
    pub fn system_entry(
        &self,
        tenant_id: TenantId,
        actor: &str,
        action: &str,
        resource_type: &str,
        resource_id: Option<String>,
        outcome: AuditOutcome,
    ) -> AuditEntry {
        AuditEntry {
            id: AuditEntryId::from_uuid(self.ids.new_id()),
            tenant_id,
            actor: actor.to_owned(),
            action: action.to_owned(),
            resource_type: resource_type.to_owned(),
            resource_id,
            outcome,
            ip: None,
            request_id: None,
            client_request_id: None,
            created_at: self.clock.now(),
        }
    }

    /// Stores an entry made by [`Self::entry`] or [`Self::system_entry`] on its own.
    ///
    /// # Errors
    /// When the entry cannot be stored.
    pub async fn store(&self, entry: &AuditEntry) -> anyhow::Result<()> {
        self.log.record(entry).await.map_err(|error| {
            anyhow::Error::new(error).context(format!("recording audit entry {}", entry.action))
        })
    }
}

/// Reads of the audit trail of the caller's tenant.
#[derive(Clone, Debug)]
pub struct AuditQueries {
    audit: Arc<dyn AuditLog>,
}

impl AuditQueries {
    pub fn new(audit: Arc<dyn AuditLog>) -> Self {
        Self { audit }
    }

    /// The caller's tenant's audit entries, newest first.
    ///
    /// # Errors
    /// `Forbidden` unless the caller is a tenant admin; `Unexpected` on storage failure.
    pub async fn list(
        &self,
        ctx: &RequestContext,
        page: PageRequest,
    ) -> Result<Page<AuditEntry>, RestrictedReadError> {
        authorize(&ctx.principal, Action::ReadAuditLog)?;
        self.audit.list(ctx.principal.tenant_id, page).await.map_err(|e| {
            RestrictedReadError::Unexpected(anyhow::Error::new(e).context("reading the audit log"))
        })
    }
}

#[cfg(test)]
mod tests {
    use sba_domain::{Principal, Role, TenantId, UserId};
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockAuditLog, MockIdGenerator, RepositoryError};
    use crate::testing::{TestClock, logs_of};

    fn ctx(role: Role) -> RequestContext {
        RequestContext {
            principal: Principal {
                tenant_id: TenantId::from_uuid(Uuid::from_u128(1)),
                user_id: UserId::parse("u").unwrap(),
                role,
            },
            ip: None,
            request_id: "r".into(),
            client_request_id: None,
            token: None,
        }
    }

    #[tokio::test]
    async fn only_admins_read_the_audit_log_of_their_own_tenant() {
        for role in [Role::Authenticated, Role::Agent, Role::Service] {
            let mut audit = MockAuditLog::new();
            audit.expect_list().never();
            let result = AuditQueries::new(Arc::new(audit)).list(&ctx(role), PageRequest::first(5)).await;
            assert!(matches!(result, Err(RestrictedReadError::Forbidden(_))), "{role}");
        }
        let mut audit = MockAuditLog::new();
        audit
            .expect_list()
            .withf(|tenant, _| *tenant == TenantId::from_uuid(Uuid::from_u128(1)))
            .times(1)
            .returning(|_, _| Ok(Page { items: vec![], next: None }));
        let page =
            AuditQueries::new(Arc::new(audit)).list(&ctx(Role::Admin), PageRequest::first(5)).await.unwrap();
        assert!(page.items.is_empty());
    }
    #[tokio::test]
    async fn an_entry_keeps_the_clients_request_id_beside_the_servers_own() {
        let mut log = MockAuditLog::new();
        log.expect_record()
            .withf(|entry| {
                entry.request_id.as_deref() == Some("server-1")
                    && entry.client_request_id.as_deref() == Some("client-7")
            })
            .times(1)
            .returning(|_| Ok(()));
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(Uuid::now_v7);
        let auditor = Auditor::new(Arc::new(log), Arc::new(TestClock::at(0)), Arc::new(ids));
        let ctx = RequestContext {
            request_id: "server-1".into(),
            client_request_id: Some("client-7".into()),
            ..ctx(Role::Authenticated)
        };
        auditor.record_after(&ctx, "run.cancel", "run", None, AuditOutcome::Success).await;
        let system = auditor.system_entry(
            ctx.principal.tenant_id,
            "system:x",
            "run.expire",
            "run",
            None,
            AuditOutcome::Success,
        );
        assert_eq!((system.request_id, system.client_request_id), (None, None));
    }

    fn outage() -> RepositoryError {
        RepositoryError::Unexpected(anyhow::anyhow!("connection lost"))
    }

    fn auditor_over(log: MockAuditLog) -> Auditor {
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(|| Uuid::from_u128(0xe));
        Auditor::new(Arc::new(log), Arc::new(TestClock::at(0)), Arc::new(ids))
    }

    /// The log lines written while `run` runs (on this thread).
    #[tokio::test]
    async fn an_entry_that_cannot_be_stored_after_the_change_is_logged_whole_and_counted_not_raised() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _local = metrics::set_default_local_recorder(&recorder);
        let mut log = MockAuditLog::new();
        log.expect_record().times(1).returning(|_| Err(outage()));
        let auditor = auditor_over(log);
        let ctx = RequestContext { ip: Some("203.0.113.9".into()), ..ctx(Role::Authenticated) };
        let logs = logs_of(auditor.record_after(
            &ctx,
            "session.update",
            "session",
            Some("s-1".into()),
            AuditOutcome::Success,
        ))
        .await;
        for field in [
            "an audit entry could not be stored",
            "connection lost",
            "recording audit entry session.update",
            &Uuid::from_u128(0xe).to_string(),
            &Uuid::from_u128(1).to_string(),
            "session.update",
            "resource_id=\"s-1\"",
            "outcome=success",
            "203.0.113.9",
            "request_id=\"r\"",
        ] {
            assert!(logs.contains(field), "{field} is missing from {logs}");
        }
        let failures: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == "sba_audit_write_failures_total")
            .map(|(.., value)| value)
            .collect();
        assert_eq!(failures, [DebugValue::Counter(1)]);
    }

    #[tokio::test]
    async fn storing_an_entry_on_its_own_reports_the_log_failure_with_its_action() {
        let mut log = MockAuditLog::new();
        log.expect_record().times(1).returning(|_| Err(outage()));
        let auditor = auditor_over(log);
        let entry = auditor.entry(&ctx(Role::Admin), "run.cancel", "run", None, AuditOutcome::Success);
        let error = auditor.store(&entry).await.unwrap_err();
        assert_eq!(error.to_string(), "recording audit entry run.cancel");
        assert!(
            matches!(error.downcast_ref::<RepositoryError>(), Some(RepositoryError::Unexpected(_))),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_audit_log_that_cannot_be_read_is_unexpected_for_an_admin() {
        let mut audit = MockAuditLog::new();
        audit.expect_list().times(1).returning(|_, _| Err(outage()));
        let read = AuditQueries::new(Arc::new(audit)).list(&ctx(Role::Admin), PageRequest::first(5)).await;
        assert!(matches!(read, Err(RestrictedReadError::Unexpected(_))), "{read:?}");
    }
}
