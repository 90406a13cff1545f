//! [`RunService`]: starting, reading and cancelling runs, with an audit entry per mutation.

use std::sync::Arc;

use sba_domain::runs::NewRun;
use sba_domain::{
    AgentName, AgentRun, AuditEntry, AuditEntryId, AuditOutcome, InvalidTransition, Metadata, RunId,
    SessionId,
};
use serde_json::Value;

use crate::RequestContext;
use crate::ports::{AuditLog, Clock, IdGenerator, RepositoryError, RunRepository};

/// How many times a cancel re-reads a run whose status changed under it before giving up.
const CANCEL_ATTEMPTS: usize = 3;

/// The audit actor of changes made by the platform itself rather than by a caller.
pub const SYSTEM_ACTOR: &str = "system:run-expiry";

/// A request to start a run, already parsed into domain values.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRun {
    pub agent: AgentName,
    pub input: Value,
    pub session_id: Option<SessionId>,
    pub metadata: Metadata,
}

/// What can go wrong in a run use case.
#[derive(Debug, thiserror::Error)]
pub enum RunServiceError {
    /// No such run for the caller's tenant (including runs of other tenants).
    #[error("run not found")]
    NotFound,
    /// The run's state machine refuses the change (for example cancelling a completed run).
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// The run kept changing concurrently; the caller may retry.
    #[error("the run changed concurrently, try again")]
    Contended,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<RepositoryError> for RunServiceError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::NotFound => Self::NotFound,
            RepositoryError::Conflict(what) => {
                Self::Unexpected(anyhow::anyhow!("unexpected conflict: {what}"))
            }
            RepositoryError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}

/// Starts, reads and cancels runs for the caller's tenant.
#[derive(Clone)]
pub struct RunService {
    runs: Arc<dyn RunRepository>,
    audit: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

impl std::fmt::Debug for RunService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunService").finish_non_exhaustive()
    }
}

impl RunService {
    pub fn new(
        runs: Arc<dyn RunRepository>,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        Self { runs, audit, clock, ids }
    }

    /// Creates a `queued` run owned by the caller and its tenant.
    ///
    /// # Errors
    /// `Unexpected` when the run or its audit entry cannot be stored.
    pub async fn create(
        &self,
        ctx: &RequestContext,
        request: CreateRun,
    ) -> Result<AgentRun, RunServiceError> {
        let now = self.clock.now();
        let run = AgentRun::new(
            RunId::from_uuid(self.ids.new_id()),
            NewRun {
                tenant_id: ctx.principal.tenant_id,
                user_id: ctx.principal.user_id.clone(),
                agent: request.agent,
                input: request.input,
                session_id: request.session_id,
                metadata: request.metadata,
            },
            now,
        );
        self.runs.insert(&run).await?;
        self.audit(ctx, "run.create", Some(run.id), AuditOutcome::Success).await?;
        Ok(run)
    }

    /// The run `id` of the caller's tenant.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn get(&self, ctx: &RequestContext, id: RunId) -> Result<AgentRun, RunServiceError> {
        self.runs.get(ctx.principal.tenant_id, id).await?.ok_or(RunServiceError::NotFound)
    }

    /// Cancels the run `id`; the attempt is audited whether or not it is allowed.
    ///
    /// # Errors
    /// `NotFound` as for [`Self::get`]; `InvalidTransition` when the run has already ended;
    /// `Contended` when its status kept changing during [`CANCEL_ATTEMPTS`] tries.
    pub async fn cancel(&self, ctx: &RequestContext, id: RunId) -> Result<AgentRun, RunServiceError> {
        for _ in 0..CANCEL_ATTEMPTS {
            let mut run = self.get(ctx, id).await?;
            let before = run.status();
            if let Err(refused) = run.cancel(self.clock.now()) {
                self.audit(ctx, "run.cancel", Some(id), AuditOutcome::Denied).await?;
                return Err(refused.into());
            }
            match self.runs.update_lifecycle(&run, before).await {
                Ok(()) => {
                    self.audit(ctx, "run.cancel", Some(id), AuditOutcome::Success).await?;
                    return Ok(run);
                }
                Err(RepositoryError::Conflict(_)) => {
                    tracing::debug!(run_id = %id, "run changed during cancel, re-reading it");
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(RunServiceError::Contended)
    }

    /// Expires every run that has not ended within `max_age` of its creation, up to `batch`
    /// runs per call, and returns how many it expired. A run that changes concurrently is
    /// left to its new owner (and retried by the next sweep if still overdue).
    ///
    /// # Errors
    /// `Unexpected` when the store fails; runs expired before the failure stay expired.
    pub async fn expire_overdue(
        &self,
        max_age: chrono::Duration,
        batch: u64,
    ) -> Result<usize, RunServiceError> {
        let now = self.clock.now();
        let mut expired = 0;
        for mut run in self.runs.list_overdue(now - max_age, batch).await? {
            let before = run.status();
            run.transition_to(sba_domain::RunStatus::Expired, now)?;
            match self.runs.update_lifecycle(&run, before).await {
                Ok(()) => {
                    let mut entry = self.entry(run.tenant_id, SYSTEM_ACTOR, "run.expire", Some(run.id));
                    entry.outcome = AuditOutcome::Success;
                    self.record(entry).await?;
                    expired += 1;
                }
                Err(RepositoryError::Conflict(_) | RepositoryError::NotFound) => {
                    tracing::debug!(run_id = %run.id, "run changed during expiry, skipped");
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok(expired)
    }

    async fn audit(
        &self,
        ctx: &RequestContext,
        action: &str,
        run: Option<RunId>,
        outcome: AuditOutcome,
    ) -> Result<(), RunServiceError> {
        let mut entry = self.entry(ctx.principal.tenant_id, ctx.principal.user_id.as_str(), action, run);
        entry.outcome = outcome;
        entry.ip.clone_from(&ctx.ip);
        entry.request_id = Some(ctx.request_id.clone());
        self.record(entry).await
    }

    fn entry(
        &self,
        tenant_id: sba_domain::TenantId,
        actor: &str,
        action: &str,
        run: Option<RunId>,
    ) -> AuditEntry {
        AuditEntry {
            id: AuditEntryId::from_uuid(self.ids.new_id()),
            tenant_id,
            actor: actor.to_owned(),
            action: action.to_owned(),
            resource_type: "run".to_owned(),
            resource_id: run.map(|id| id.to_string()),
            outcome: AuditOutcome::Success,
            ip: None,
            request_id: None,
            created_at: self.clock.now(),
        }
    }

    async fn record(&self, entry: AuditEntry) -> Result<(), RunServiceError> {
        let action = entry.action.clone();
        self.audit.record(&entry).await.map_err(|error| {
            RunServiceError::Unexpected(
                anyhow::Error::new(error).context(format!("recording audit entry {action}")),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use mockall::predicate::{always, eq};
    use sba_domain::{Principal, Role, RunStatus, TenantId, UserId};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockAuditLog, MockClock, MockIdGenerator, MockRunRepository};

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap()
    }

    fn ctx() -> RequestContext {
        RequestContext {
            principal: Principal {
                tenant_id: TenantId::from_uuid(Uuid::from_u128(1)),
                user_id: UserId::parse("user-1").unwrap(),
                role: Role::Authenticated,
            },
            ip: Some("203.0.113.7".into()),
            request_id: "req-1".into(),
        }
    }

    fn service(runs: MockRunRepository, audit: MockAuditLog) -> RunService {
        let mut clock = MockClock::new();
        clock.expect_now().returning(now);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(Uuid::now_v7);
        RunService::new(Arc::new(runs), Arc::new(audit), Arc::new(clock), Arc::new(ids))
    }

    fn stored_run(status: RunStatus) -> AgentRun {
        let mut run = AgentRun::new(
            RunId::from_uuid(Uuid::from_u128(42)),
            NewRun {
                tenant_id: ctx().principal.tenant_id,
                user_id: ctx().principal.user_id,
                agent: AgentName::parse("bot").unwrap(),
                input: json!({}),
                session_id: None,
                metadata: Metadata::default(),
            },
            now(),
        );
        if status != RunStatus::Queued {
            run.transition_to(RunStatus::InProgress, now()).unwrap();
        }
        if status != RunStatus::InProgress && status != RunStatus::Queued {
            run.transition_to(status, now()).unwrap();
        }
        run
    }

    fn expect_audit(audit: &mut MockAuditLog, action: &'static str, outcome: AuditOutcome) {
        audit
            .expect_record()
            .withf(move |e| {
                e.action == action && e.outcome == outcome && e.request_id.as_deref() == Some("req-1")
            })
            .times(1)
            .returning(|_| Ok(()));
    }

    #[tokio::test]
    async fn create_stores_a_queued_run_of_the_callers_tenant_and_audits_it() {
        let mut runs = MockRunRepository::new();
        runs.expect_insert()
            .withf(|run| {
                run.status() == RunStatus::Queued
                    && run.tenant_id == ctx().principal.tenant_id
                    && run.user_id.as_str() == "user-1"
            })
            .times(1)
            .returning(|_| Ok(()));
        let mut audit = MockAuditLog::new();
        expect_audit(&mut audit, "run.create", AuditOutcome::Success);

        let request = CreateRun {
            agent: AgentName::parse("bot").unwrap(),
            input: json!({"q": 1}),
            session_id: None,
            metadata: Metadata::default(),
        };
        let run = service(runs, audit).create(&ctx(), request).await.unwrap();
        assert_eq!(run.input, json!({"q": 1}));
        assert_eq!(run.created_at, now());
    }

    #[tokio::test]
    async fn create_fails_when_the_audit_entry_cannot_be_written() {
        let mut runs = MockRunRepository::new();
        runs.expect_insert().returning(|_| Ok(()));
        let mut audit = MockAuditLog::new();
        audit.expect_record().returning(|_| Err(RepositoryError::Unexpected(anyhow::anyhow!("disk full"))));
        let request = CreateRun {
            agent: AgentName::parse("bot").unwrap(),
            input: json!(null),
            session_id: None,
            metadata: Metadata::default(),
        };
        let err = service(runs, audit).create(&ctx(), request).await.unwrap_err();
        assert!(matches!(err, RunServiceError::Unexpected(_)));
    }

    #[tokio::test]
    async fn get_of_a_missing_or_foreign_run_is_not_found() {
        let mut runs = MockRunRepository::new();
        runs.expect_get().with(eq(ctx().principal.tenant_id), always()).times(1).returning(|_, _| Ok(None));
        let err = service(runs, MockAuditLog::new())
            .get(&ctx(), RunId::from_uuid(Uuid::from_u128(7)))
            .await
            .unwrap_err();
        assert!(matches!(err, RunServiceError::NotFound));
    }

    #[tokio::test]
    async fn cancel_moves_a_queued_run_to_cancelled_with_a_compare_and_set_on_queued() {
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(|_, _| Ok(Some(stored_run(RunStatus::Queued))));
        runs.expect_update_lifecycle()
            .withf(|run, expected| run.status() == RunStatus::Cancelled && *expected == RunStatus::Queued)
            .times(1)
            .returning(|_, _| Ok(()));
        let mut audit = MockAuditLog::new();
        expect_audit(&mut audit, "run.cancel", AuditOutcome::Success);

        let run = service(runs, audit).cancel(&ctx(), RunId::from_uuid(Uuid::from_u128(42))).await.unwrap();
        assert_eq!(run.status(), RunStatus::Cancelled);
        assert_eq!(run.cancelled_at, Some(now()));
    }

    #[tokio::test]
    async fn cancel_of_a_completed_run_is_an_invalid_transition_and_is_audited_as_denied() {
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(|_, _| Ok(Some(stored_run(RunStatus::Completed))));
        runs.expect_update_lifecycle().never();
        let mut audit = MockAuditLog::new();
        expect_audit(&mut audit, "run.cancel", AuditOutcome::Denied);

        let err =
            service(runs, audit).cancel(&ctx(), RunId::from_uuid(Uuid::from_u128(42))).await.unwrap_err();
        assert!(matches!(
            err,
            RunServiceError::InvalidTransition(InvalidTransition { from: RunStatus::Completed, .. })
        ));
    }

    #[tokio::test]
    async fn cancel_rereads_the_run_when_its_status_changed_concurrently() {
        let mut runs = MockRunRepository::new();
        let mut reads = 0;
        runs.expect_get().times(2).returning(move |_, _| {
            reads += 1;
            let status = if reads == 1 { RunStatus::Queued } else { RunStatus::InProgress };
            Ok(Some(stored_run(status)))
        });
        let mut writes = 0;
        runs.expect_update_lifecycle().times(2).returning(move |_, expected| {
            writes += 1;
            if writes == 1 {
                assert_eq!(expected, RunStatus::Queued);
                Err(RepositoryError::Conflict("status changed".into()))
            } else {
                assert_eq!(expected, RunStatus::InProgress);
                Ok(())
            }
        });
        let mut audit = MockAuditLog::new();
        expect_audit(&mut audit, "run.cancel", AuditOutcome::Success);

        let run = service(runs, audit).cancel(&ctx(), RunId::from_uuid(Uuid::from_u128(42))).await.unwrap();
        assert_eq!(run.status(), RunStatus::Cancelled);
    }

    #[tokio::test]
    async fn expire_overdue_expires_listed_runs_skips_contended_ones_and_audits_as_system() {
        let mut runs = MockRunRepository::new();
        runs.expect_list_overdue()
            .withf(|before, limit| *before == now() - chrono::Duration::hours(1) && *limit == 10)
            .returning(|_, _| Ok(vec![stored_run(RunStatus::Queued), stored_run(RunStatus::InProgress)]));
        let mut writes = 0;
        runs.expect_update_lifecycle().times(2).returning(move |run, _| {
            assert_eq!(run.status(), RunStatus::Expired);
            writes += 1;
            if writes == 1 { Ok(()) } else { Err(RepositoryError::Conflict("changed".into())) }
        });
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(|e| e.actor == SYSTEM_ACTOR && e.action == "run.expire" && e.request_id.is_none())
            .times(1)
            .returning(|_| Ok(()));

        let expired = service(runs, audit).expire_overdue(chrono::Duration::hours(1), 10).await.unwrap();
        assert_eq!(expired, 1);
    }

    #[tokio::test]
    async fn cancel_gives_up_as_contended_after_repeated_conflicts() {
        let mut runs = MockRunRepository::new();
        runs.expect_get().times(CANCEL_ATTEMPTS).returning(|_, _| Ok(Some(stored_run(RunStatus::Queued))));
        runs.expect_update_lifecycle()
            .times(CANCEL_ATTEMPTS)
            .returning(|_, _| Err(RepositoryError::Conflict("status changed".into())));
        let err = service(runs, MockAuditLog::new())
            .cancel(&ctx(), RunId::from_uuid(Uuid::from_u128(42)))
            .await
            .unwrap_err();
        assert!(matches!(err, RunServiceError::Contended));
    }
}
