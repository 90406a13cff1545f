//! [`RunService`]: starting, reading, cancelling and expiring runs, with an audit entry per
//! mutation attempt.

use std::sync::Arc;

use sba_domain::events::{EventData, RunEvent};
use sba_domain::runs::NewRun;
use sba_domain::{
    AgentName, AgentRun, AuditEntry, AuditOutcome, InvalidTransition, Metadata, RunId, RunStatus, SessionId,
};
use serde_json::Value;

use crate::RequestContext;
use crate::audit::Auditor;
use crate::authorization::{Action, Denied, authorize};
use crate::events::{EventPipeline, SeedError};
use crate::ports::{
    AuditLog, Clock, IdGenerator, LedgerError, RepositoryError, RunEnding, RunLedger, RunRepository,
    SequencerError, ServerAppendOutcome, ServerEvent,
};

/// The audit actor of changes made by the platform itself rather than by a caller.
pub const SYSTEM_ACTOR: &str = "system:run-expiry";

/// The `resource_type` of a run's audit entries.
const RESOURCE_TYPE: &str = "run";

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
    /// The permission matrix refuses the caller this action (for example cancelling another
    /// user's run); nothing was changed.
    #[error(transparent)]
    Forbidden(#[from] Denied),
    /// The run's state machine refuses the change (for example cancelling a completed run).
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// The event store (Redis) cannot be reached; the change may have been recorded
    /// (retrying it is safe).
    #[error("the event store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<SequencerError> for RunServiceError {
    fn from(error: SequencerError) -> Self {
        match error {
            SequencerError::Unavailable(source) => Self::Unavailable(source),
            SequencerError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}

impl From<SeedError> for RunServiceError {
    fn from(error: SeedError) -> Self {
        match error {
            SeedError::Sequencer(error) => error.into(),
            SeedError::Store(error) => error.into(),
        }
    }
}

impl From<RepositoryError> for RunServiceError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::NotFound => Self::NotFound,
            RepositoryError::Conflict(kind) => {
                Self::Unexpected(anyhow::anyhow!("unexpected conflict: {kind}"))
            }
            RepositoryError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}

impl From<LedgerError> for RunServiceError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::NotFound => Self::NotFound,
            LedgerError::InvalidTransition(refused) => Self::InvalidTransition(refused),
            LedgerError::Rejected(rejected) => {
                Self::Unexpected(anyhow::anyhow!("unexpected rejection: {rejected}"))
            }
            LedgerError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}

/// Starts, reads, cancels and expires runs.
#[derive(Clone, Debug)]
pub struct RunService {
    runs: Arc<dyn RunRepository>,
    ledger: Arc<dyn RunLedger>,
    pipeline: EventPipeline,
    auditor: Auditor,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

impl RunService {
    pub fn new(
        runs: Arc<dyn RunRepository>,
        ledger: Arc<dyn RunLedger>,
        pipeline: EventPipeline,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        let auditor = Auditor::new(audit, Arc::clone(&clock), Arc::clone(&ids));
        Self { runs, ledger, pipeline, auditor, clock, ids }
    }

    /// Creates a `queued` run owned by the caller and its tenant, with its `run.created`
    /// event (seq 1) and audit entry, atomically; then starts the run's counter in the
    /// sequencer at 1 and publishes `run.created` live. Neither of those may fail the
    /// creation: a counter that could not be set is seeded from the database by the first
    /// ingest, and a lost publication is recovered by subscribers from the database.
    ///
    /// # Errors
    /// `Forbidden` when the caller's role may not start runs (not audited here: like every
    /// refused creation, the route audits it with [`Self::record_refused`]); `Unexpected`
    /// when the run cannot be stored (nothing is then stored).
    pub async fn create(
        &self,
        ctx: &RequestContext,
        request: CreateRun,
    ) -> Result<AgentRun, RunServiceError> {
        authorize(&ctx.principal, Action::CreateRun)?;
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
        let entry = self.caller_entry(ctx, "run.create", Some(run.id), AuditOutcome::Success);
        self.ledger.create_run(&run, &entry).await?;
        if let Err(error) = self.pipeline.sequencer.seed(run.id, 1, RunStatus::Queued).await {
            tracing::warn!(run_id = %run.id, error = format!("{error:#}"), "starting the run's event counter failed; the first ingest seeds it");
        }
        self.pipeline.publish(&[RunEvent::created(&run)], run.session_id).await;
        Ok(run)
    }

    /// The run `id` of the caller's tenant.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or belongs to another tenant.
    pub async fn get(&self, ctx: &RequestContext, id: RunId) -> Result<AgentRun, RunServiceError> {
        authorize(&ctx.principal, Action::ReadRuns)?;
        self.runs.get(ctx.principal.tenant_id, id).await?.ok_or(RunServiceError::NotFound)
    }

    /// Cancels the run `id`, when the permission matrix lets the caller cancel a run of its
    /// creator. A successful cancel writes `run.cancelled` into the run's sequence (from then
    /// on every ingest, on any node, answers that the run has ended), publishes it live and
    /// audits the cancel; the worker persists it in seq order, ending the run's open steps.
    /// The answer is the run as it will be once persisted. A refused cancel is audited as
    /// denied and leaves the run unchanged.
    ///
    /// # Errors
    /// `NotFound` as for [`Self::get`]; `Forbidden` when the caller may not cancel this run;
    /// `InvalidTransition` when the run has already ended; `Unavailable` when the event store
    /// cannot be reached.
    pub async fn cancel(&self, ctx: &RequestContext, id: RunId) -> Result<AgentRun, RunServiceError> {
        // The creator never changes, so reading it before the sequencer's atomic cancel leaves
        // no window in which the decision could become wrong.
        let Some(mut run) = self.runs.get(ctx.principal.tenant_id, id).await? else {
            return self.cancel_refused(ctx, id, RunServiceError::NotFound).await;
        };
        if let Err(refusal) = authorize(&ctx.principal, Action::CancelRun { creator: &run.user_id }) {
            return self.cancel_refused(ctx, id, refusal.into()).await;
        }
        let now = self.clock.now();
        let tenant = ctx.principal.tenant_id;
        let mut seeded = false;
        let seq = loop {
            match self.pipeline.sequencer.append_server_event(tenant, id, ServerEvent::Cancelled, now).await?
            {
                ServerAppendOutcome::Appended { seq, .. } => break seq,
                ServerAppendOutcome::Terminal(status) => {
                    let refused = InvalidTransition { from: status, to: RunStatus::Cancelled };
                    return self.cancel_refused(ctx, id, refused.into()).await;
                }
                ServerAppendOutcome::NeedsSeed if !seeded => {
                    self.pipeline.seed(tenant, id, run.status()).await?;
                    seeded = true;
                }
                other => {
                    return Err(RunServiceError::Unexpected(anyhow::anyhow!(
                        "the sequencer answered {other:?} to a cancel"
                    )));
                }
            }
        };
        let cancelled = RunEvent {
            run_id: id,
            tenant_id: tenant,
            seq,
            producer_id: None,
            data: EventData::RunCancelled,
            created_at: now,
        };
        self.pipeline.publish(std::slice::from_ref(&cancelled), run.session_id).await;
        if let Err(error) =
            self.record(self.caller_entry(ctx, "run.cancel", Some(id), AuditOutcome::Success)).await
        {
            tracing::error!(run_id = %id, error = format!("{error:#}"), "the audit entry of an accepted cancel was not stored");
        }
        // The stored row may lag behind the sequence (the worker persists in order); the
        // sequencer accepted the cancel, so the run is cancelled from a status that allows it.
        if run.cancel(now).is_err() {
            tracing::debug!(run_id = %id, "the stored run is behind its sequence; answering it as stored");
        }
        Ok(run)
    }

    /// Audits a refused cancel as denied, then answers `error`.
    async fn cancel_refused(
        &self,
        ctx: &RequestContext,
        id: RunId,
        error: RunServiceError,
    ) -> Result<AgentRun, RunServiceError> {
        self.record(self.caller_entry(ctx, "run.cancel", Some(id), AuditOutcome::Denied)).await?;
        Err(error)
    }

    /// Expires every run that has not ended within `max_age` of its creation, up to `batch`
    /// runs per call, and returns how many it expired. Each run is first ended in its
    /// sequence (`ServerEvent::Expired`: from then on every ingest answers that it has
    /// ended), then its row through the ledger with the system's audit entry. A run that
    /// ends concurrently is left as it ended.
    ///
    /// # Errors
    /// `Unexpected` when the store fails, `Unavailable` when the event store cannot be
    /// reached; runs expired before the failure stay expired.
    pub async fn expire_overdue(
        &self,
        max_age: chrono::Duration,
        batch: u64,
    ) -> Result<usize, RunServiceError> {
        let now = self.clock.now();
        let mut expired = 0;
        for run in self.runs.list_overdue(now - max_age, batch).await? {
            if !self.end_sequence(&run, now).await? {
                tracing::debug!(run_id = %run.id, "run ended before its expiry, skipped");
                continue;
            }
            let entry = self.auditor.system_entry(
                run.tenant_id,
                SYSTEM_ACTOR,
                "run.expire",
                RESOURCE_TYPE,
                Some(run.id.to_string()),
                AuditOutcome::Success,
            );
            match self.ledger.end_run(run.tenant_id, run.id, RunEnding::Expire, entry).await {
                Ok(_) => expired += 1,
                Err(LedgerError::InvalidTransition(_) | LedgerError::NotFound) => {
                    tracing::debug!(run_id = %run.id, "run ended during expiry, skipped");
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok(expired)
    }

    /// Ends the run's sequence as expired; `false` when it had ended already.
    async fn end_sequence(
        &self,
        run: &AgentRun,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, RunServiceError> {
        let mut seeded = false;
        loop {
            match self
                .pipeline
                .sequencer
                .append_server_event(run.tenant_id, run.id, ServerEvent::Expired, now)
                .await?
            {
                ServerAppendOutcome::Appended { .. } => return Ok(true),
                ServerAppendOutcome::Terminal(_) => return Ok(false),
                ServerAppendOutcome::NeedsSeed if !seeded => {
                    self.pipeline.seed(run.tenant_id, run.id, run.status()).await?;
                    seeded = true;
                }
                other => {
                    return Err(RunServiceError::Unexpected(anyhow::anyhow!(
                        "the sequencer answered {other:?} to an expiry"
                    )));
                }
            }
        }
    }

    /// Audits a mutation that was refused before it reached a use case (an invalid body, a
    /// reused idempotency key): the attempt is recorded as denied, with the run when one is
    /// named.
    ///
    /// # Errors
    /// `Unexpected` when the audit entry cannot be stored.
    pub async fn record_refused(
        &self,
        ctx: &RequestContext,
        action: &str,
        run: Option<RunId>,
    ) -> Result<(), RunServiceError> {
        self.record(self.caller_entry(ctx, action, run, AuditOutcome::Denied)).await
    }

    /// The entry of the caller's attempt at `action` on `run`.
    fn caller_entry(
        &self,
        ctx: &RequestContext,
        action: &str,
        run: Option<RunId>,
        outcome: AuditOutcome,
    ) -> AuditEntry {
        self.auditor.entry(ctx, action, RESOURCE_TYPE, run.map(|id| id.to_string()), outcome)
    }

    async fn record(&self, entry: AuditEntry) -> Result<(), RunServiceError> {
        Ok(self.auditor.store(&entry).await?)
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
    use crate::ports::{
        MockAuditLog, MockClock, MockEventBus, MockEventLog, MockEventSequencer, MockIdGenerator,
        MockRunLedger, MockRunRepository, SeedOutcome,
    };

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
            client_request_id: None,
            token: None,
        }
    }

    fn service(runs: MockRunRepository, ledger: MockRunLedger, audit: MockAuditLog) -> RunService {
        service_with(runs, ledger, audit, sequencer_accepting())
    }

    /// A sequencer that starts counters and accepts a cancel of any run at seq 5.
    fn sequencer_accepting() -> MockEventSequencer {
        let mut sequencer = MockEventSequencer::new();
        sequencer.expect_seed().returning(|_, seq, _| Ok(SeedOutcome::Seeded { seq }));
        sequencer.expect_restore_ids().returning(|_, _| Ok(()));
        sequencer.expect_append_server_event().returning(|_, _, _, _| {
            Ok(ServerAppendOutcome::Appended { seq: 5, run_status: RunStatus::Cancelled })
        });
        sequencer
    }

    fn service_with(
        runs: MockRunRepository,
        ledger: MockRunLedger,
        audit: MockAuditLog,
        sequencer: MockEventSequencer,
    ) -> RunService {
        let mut bus = MockEventBus::new();
        bus.expect_publish_all().returning(|_, _| Ok(()));
        let mut log = MockEventLog::new();
        log.expect_last_seq().returning(|_, _| Ok(Some(4)));
        log.expect_producer_ids().returning(|_, _| Ok(Vec::new()));
        let pipeline = EventPipeline::new(Arc::new(sequencer), Arc::new(bus), Arc::new(log));
        let mut clock = MockClock::new();
        clock.expect_now().returning(now);
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(Uuid::now_v7);
        RunService::new(
            Arc::new(runs),
            Arc::new(ledger),
            pipeline,
            Arc::new(audit),
            Arc::new(clock),
            Arc::new(ids),
        )
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
            run.transition_to(status, now()).unwrap();
        }
        run
    }

    fn request() -> CreateRun {
        CreateRun {
            agent: AgentName::parse("bot").unwrap(),
            input: json!({"q": 1}),
            session_id: None,
            metadata: Metadata::default(),
        }
    }

    #[tokio::test]
    async fn create_stores_a_queued_run_of_the_callers_tenant_with_its_audit_entry_at_once() {
        let mut ledger = MockRunLedger::new();
        ledger
            .expect_create_run()
            .withf(|run, audit| {
                run.status() == RunStatus::Queued
                    && run.tenant_id == ctx().principal.tenant_id
                    && run.user_id.as_str() == "user-1"
                    && audit.action == "run.create"
                    && audit.outcome == AuditOutcome::Success
                    && audit.resource_id == Some(run.id.to_string())
                    && audit.request_id.as_deref() == Some("req-1")
                    && audit.ip.as_deref() == Some("203.0.113.7")
            })
            .times(1)
            .returning(|_, _| Ok(()));
        let run = service(MockRunRepository::new(), ledger, MockAuditLog::new())
            .create(&ctx(), request())
            .await
            .unwrap();
        assert_eq!(run.input, json!({"q": 1}));
        assert_eq!(run.created_at, now());
    }

    #[tokio::test]
    async fn create_fails_when_the_ledger_fails() {
        let mut ledger = MockRunLedger::new();
        ledger
            .expect_create_run()
            .returning(|_, _| Err(LedgerError::Unexpected(anyhow::anyhow!("disk full"))));
        let err =
            service(MockRunRepository::new(), ledger, MockAuditLog::new()).create(&ctx(), request()).await;
        assert!(matches!(err, Err(RunServiceError::Unexpected(_))));
    }

    #[tokio::test]
    async fn get_of_a_missing_or_foreign_run_is_not_found() {
        let mut runs = MockRunRepository::new();
        runs.expect_get().with(eq(ctx().principal.tenant_id), always()).times(1).returning(|_, _| Ok(None));
        let err = service(runs, MockRunLedger::new(), MockAuditLog::new())
            .get(&ctx(), RunId::from_uuid(Uuid::from_u128(7)))
            .await
            .unwrap_err();
        assert!(matches!(err, RunServiceError::NotFound));
    }

    fn ctx_as(user: &str, role: Role) -> RequestContext {
        let mut ctx = ctx();
        ctx.principal.user_id = UserId::parse(user).unwrap();
        ctx.principal.role = role;
        ctx
    }

    /// A repository that holds the queued run 42 of `user-1` (the caller of [`ctx`]).
    fn runs_holding_run_42() -> MockRunRepository {
        let mut runs = MockRunRepository::new();
        runs.expect_get()
            .with(eq(ctx().principal.tenant_id), eq(RunId::from_uuid(Uuid::from_u128(42))))
            .returning(|_, _| Ok(Some(stored_run(RunStatus::Queued))));
        runs
    }

    /// An audit log expecting one successful cancel of run 42 by `actor`.
    fn audit_of_a_cancel_by(actor: &'static str) -> MockAuditLog {
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(move |e| {
                e.action == "run.cancel"
                    && e.actor == actor
                    && e.outcome == AuditOutcome::Success
                    && e.resource_id.as_deref() == Some(&*RunId::from_uuid(Uuid::from_u128(42)).to_string())
            })
            .times(1)
            .returning(|_| Ok(()));
        audit
    }

    /// A sequencer that expects exactly one cancel of run 42 in the caller's tenant.
    fn sequencer_cancelling_once() -> MockEventSequencer {
        let mut sequencer = MockEventSequencer::new();
        sequencer
            .expect_append_server_event()
            .withf(|tenant, run, event, _| {
                *tenant == ctx().principal.tenant_id
                    && *run == RunId::from_uuid(Uuid::from_u128(42))
                    && *event == ServerEvent::Cancelled
            })
            .times(1)
            .returning(|_, _, _, _| {
                Ok(ServerAppendOutcome::Appended { seq: 5, run_status: RunStatus::Cancelled })
            });
        sequencer
    }

    #[tokio::test]
    async fn cancel_writes_run_cancelled_into_the_sequence_and_answers_the_cancelled_run() {
        let mut ledger = MockRunLedger::new();
        ledger.expect_end_run().never();
        let run = service_with(
            runs_holding_run_42(),
            ledger,
            audit_of_a_cancel_by("user-1"),
            sequencer_cancelling_once(),
        )
        .cancel(&ctx(), RunId::from_uuid(Uuid::from_u128(42)))
        .await
        .unwrap();
        assert_eq!(run.status(), RunStatus::Cancelled);
        assert_eq!(run.cancelled_at, Some(now()));
    }

    #[tokio::test]
    async fn tenant_admins_and_services_cancel_another_users_run() {
        for (actor, role) in [("boss", Role::Admin), ("billing-service", Role::Service)] {
            let run = service_with(
                runs_holding_run_42(),
                MockRunLedger::new(),
                audit_of_a_cancel_by(actor),
                sequencer_cancelling_once(),
            )
            .cancel(&ctx_as(actor, role), RunId::from_uuid(Uuid::from_u128(42)))
            .await
            .unwrap();
            assert_eq!(run.status(), RunStatus::Cancelled, "{role}");
        }
    }

    /// An audit log expecting one denied cancel by `user`.
    fn audit_of_a_denied_cancel_by(user: &'static str) -> MockAuditLog {
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(move |e| e.action == "run.cancel" && e.actor == user && e.outcome == AuditOutcome::Denied)
            .times(1)
            .returning(|_| Ok(()));
        audit
    }

    fn sequencer_never_cancelling() -> MockEventSequencer {
        let mut sequencer = MockEventSequencer::new();
        sequencer.expect_append_server_event().never();
        sequencer
    }

    #[tokio::test]
    async fn cancelling_another_users_run_is_forbidden_audited_as_denied_and_changes_nothing() {
        for (user, role) in [("user-2", Role::Authenticated), ("user-1", Role::Agent)] {
            let err = service_with(
                runs_holding_run_42(),
                MockRunLedger::new(),
                audit_of_a_denied_cancel_by(user),
                sequencer_never_cancelling(),
            )
            .cancel(&ctx_as(user, role), RunId::from_uuid(Uuid::from_u128(42)))
            .await
            .unwrap_err();
            assert!(matches!(err, RunServiceError::Forbidden(_)), "{role}: {err:?}");
        }
    }

    #[tokio::test]
    async fn refused_cancels_are_audited_as_denied() {
        // An unknown run (or one of another tenant) is refused before the sequencer.
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(|_, _| Ok(None));
        let err = service_with(
            runs,
            MockRunLedger::new(),
            audit_of_a_denied_cancel_by("user-1"),
            sequencer_never_cancelling(),
        )
        .cancel(&ctx(), RunId::from_uuid(Uuid::from_u128(42)))
        .await;
        assert!(matches!(err, Err(RunServiceError::NotFound)), "{err:?}");

        // A run that ended meanwhile (on any node) is refused by the sequencer.
        let mut sequencer = MockEventSequencer::new();
        sequencer
            .expect_append_server_event()
            .returning(|_, _, _, _| Ok(ServerAppendOutcome::Terminal(RunStatus::Completed)));
        let err = service_with(
            runs_holding_run_42(),
            MockRunLedger::new(),
            audit_of_a_denied_cancel_by("user-1"),
            sequencer,
        )
        .cancel(&ctx(), RunId::from_uuid(Uuid::from_u128(42)))
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                RunServiceError::InvalidTransition(InvalidTransition { from: RunStatus::Completed, .. })
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_cancel_without_a_counter_seeds_it_from_the_database_then_cancels() {
        let mut sequencer = MockEventSequencer::new();
        let mut calls = mockall::Sequence::new();
        sequencer
            .expect_append_server_event()
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_, _, _, _| Ok(ServerAppendOutcome::NeedsSeed));
        sequencer.expect_restore_ids().times(1).in_sequence(&mut calls).returning(|_, _| Ok(()));
        sequencer
            .expect_seed()
            .withf(|_, seq, status| *seq == 4 && *status == RunStatus::Queued)
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_, _, _| Ok(SeedOutcome::Seeded { seq: 4 }));
        sequencer.expect_append_server_event().times(1).in_sequence(&mut calls).returning(|_, _, _, _| {
            Ok(ServerAppendOutcome::Appended { seq: 5, run_status: RunStatus::Cancelled })
        });
        let run = service_with(
            runs_holding_run_42(),
            MockRunLedger::new(),
            audit_of_a_cancel_by("user-1"),
            sequencer,
        )
        .cancel(&ctx(), RunId::from_uuid(Uuid::from_u128(42)))
        .await
        .unwrap();
        assert_eq!(run.status(), RunStatus::Cancelled);
    }

    #[tokio::test]
    async fn a_cancel_the_event_store_cannot_take_is_unavailable_and_not_audited_as_done() {
        let mut sequencer = MockEventSequencer::new();
        sequencer
            .expect_append_server_event()
            .returning(|_, _, _, _| Err(SequencerError::Unavailable(anyhow::anyhow!("timeout"))));
        let mut audit = MockAuditLog::new();
        audit.expect_record().never();
        let err = service_with(runs_holding_run_42(), MockRunLedger::new(), audit, sequencer)
            .cancel(&ctx(), RunId::from_uuid(Uuid::from_u128(42)))
            .await;
        assert!(matches!(err, Err(RunServiceError::Unavailable(_))), "{err:?}");
    }

    #[tokio::test]
    async fn agents_cannot_start_runs() {
        let mut ledger = MockRunLedger::new();
        ledger.expect_create_run().never();
        let err = service(MockRunRepository::new(), ledger, MockAuditLog::new())
            .create(&ctx_as("agent-7", Role::Agent), request())
            .await;
        assert!(matches!(err, Err(RunServiceError::Forbidden(_))), "{err:?}");
    }

    #[tokio::test]
    async fn expire_overdue_expires_listed_runs_skips_ones_that_ended_and_audits_as_system() {
        let mut runs = MockRunRepository::new();
        runs.expect_list_overdue()
            .withf(|before, limit| *before == now() - chrono::Duration::hours(1) && *limit == 10)
            .returning(|_, _| Ok(vec![stored_run(RunStatus::Queued), stored_run(RunStatus::InProgress)]));
        let mut ledger = MockRunLedger::new();
        let mut calls = 0;
        ledger
            .expect_end_run()
            .withf(|_, _, ending, audit| {
                *ending == RunEnding::Expire && audit.actor == SYSTEM_ACTOR && audit.request_id.is_none()
            })
            .times(2)
            .returning(move |_, _, _, _| {
                calls += 1;
                if calls == 1 {
                    Ok(stored_run(RunStatus::Expired))
                } else {
                    Err(LedgerError::InvalidTransition(InvalidTransition {
                        from: RunStatus::Completed,
                        to: RunStatus::Expired,
                    }))
                }
            });
        let expired = service(runs, ledger, MockAuditLog::new())
            .expire_overdue(chrono::Duration::hours(1), 10)
            .await
            .unwrap();
        assert_eq!(expired, 1);
    }

    #[tokio::test]
    async fn expiry_ends_the_sequence_first_and_skips_runs_whose_sequence_ended_already() {
        let mut runs = MockRunRepository::new();
        runs.expect_list_overdue().returning(|_, _| Ok(vec![stored_run(RunStatus::InProgress)]));
        let mut sequencer = MockEventSequencer::new();
        sequencer
            .expect_append_server_event()
            .withf(|_, _, event, _| *event == ServerEvent::Expired)
            .times(1)
            .returning(|_, _, _, _| Ok(ServerAppendOutcome::Terminal(RunStatus::Completed)));
        let mut ledger = MockRunLedger::new();
        ledger.expect_end_run().never();
        let expired = service_with(runs, ledger, MockAuditLog::new(), sequencer)
            .expire_overdue(chrono::Duration::hours(1), 10)
            .await
            .unwrap();
        assert_eq!(expired, 0, "a run completed on another node (not persisted yet) is not expired");
    }

    #[tokio::test]
    async fn refused_attempts_are_audited_as_denied_with_the_callers_request_facts() {
        let mut audit = MockAuditLog::new();
        audit
            .expect_record()
            .withf(|e| {
                e.action == "run.create"
                    && e.outcome == AuditOutcome::Denied
                    && e.resource_id.is_none()
                    && e.resource_type == "run"
                    && e.request_id.as_deref() == Some("req-1")
                    && e.ip.as_deref() == Some("203.0.113.7")
            })
            .times(1)
            .returning(|_| Ok(()));
        service(MockRunRepository::new(), MockRunLedger::new(), audit)
            .record_refused(&ctx(), "run.create", None)
            .await
            .unwrap();
    }
}
