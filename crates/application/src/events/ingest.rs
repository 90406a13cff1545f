//! [`IngestService`]: an agent reports what its run does (`POST /v1/runs/{id}/events`,
//! ADR 0017). The batch is validated as a whole, given its seqs by the [`EventSequencer`]
//! (atomically, across every node), published live on the [`EventBus`], and audited when it
//! changes the run's status. Persistence is the worker's (or, without Redis, the
//! sequencer's own, synchronously).

use std::sync::Arc;
use std::time::Duration;

use sba_domain::events::{BatchRejection, IncomingEvent, RunEvent, status_after};
use sba_domain::{AuditOutcome, RunId, RunStatus, SessionId, TenantId};

use crate::RequestContext;
use crate::audit::Auditor;
use crate::authorization::{Action, Denied, authorize};
use crate::events::{EventPipeline, SeedError, span_int};

use super::batch::{RawEvent, parse_batch};
use crate::ports::{
    AppendOutcome, AppendRequest, AppendedEvent, Clock, RepositoryError, RunRepository, SequencerError,
    StatusChange,
};

/// The most events one batch may hold (ARCHITECTURE.md §7).
pub const MAX_BATCH_EVENTS: usize = 500;

/// How often one batch is re-decided when the run's status moved under it (another node
/// appended in between); each retry starts from the status the sequencer answered.
const MAX_ATTEMPTS: usize = 4;

/// What the service remembers of a run between batches: who it belongs to, its session
/// (for the live channels) and the status it was last seen in (a hint: the sequencer
/// decides, and a wrong hint costs one more round trip).
#[derive(Debug, Clone, Copy)]
struct RunFacts {
    tenant: TenantId,
    session: Option<SessionId>,
    status: RunStatus,
}

/// The answer to an accepted batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReceipt {
    /// Every event of the batch, in batch order, with its seq (a duplicate's original one).
    pub events: Vec<AppendedEvent>,
    /// How many of them had been accepted before and were not stored again.
    pub duplicates: usize,
    /// The run's status after the batch.
    pub run_status: RunStatus,
}

/// Why a batch was refused. Whatever the reason, nothing of it was stored and none of its
/// ids is remembered.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No such run for the caller's tenant (including another tenant's run).
    #[error("run not found")]
    NotFound,
    #[error(transparent)]
    Forbidden(#[from] Denied),
    /// The batch is empty or holds more than [`MAX_BATCH_EVENTS`] events.
    #[error("a batch holds 1 to {MAX_BATCH_EVENTS} events, this one {0}")]
    BatchSize(usize),
    /// One event is invalid; the rejection names its index.
    #[error(transparent)]
    Invalid(#[from] BatchRejection),
    /// The run has ended (in this status); agents stop on this answer.
    #[error("the run has ended ({0})")]
    RunTerminal(RunStatus),
    /// The event store cannot be reached; the batch may have been recorded (retry it: its
    /// ids are then answered as duplicates).
    #[error("the event store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<SequencerError> for IngestError {
    fn from(error: SequencerError) -> Self {
        match error {
            SequencerError::Unavailable(source) => Self::Unavailable(source),
            SequencerError::Unexpected(source) => Self::Unexpected(source),
        }
    }
}

impl From<SeedError> for IngestError {
    fn from(error: SeedError) -> Self {
        match error {
            SeedError::Sequencer(error) => error.into(),
            SeedError::Store(error) => error.into(),
        }
    }
}

impl From<RepositoryError> for IngestError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::NotFound => Self::NotFound,
            other => Self::Unexpected(anyhow::Error::new(other)),
        }
    }
}

/// Takes agents' event batches.
#[derive(Clone)]
pub struct IngestService {
    pipeline: EventPipeline,
    runs: Arc<dyn RunRepository>,
    auditor: Auditor,
    clock: Arc<dyn Clock>,
    facts: moka::sync::Cache<RunId, RunFacts, ahash::RandomState>,
}

impl std::fmt::Debug for IngestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestService").field("runs_known", &self.facts.entry_count()).finish_non_exhaustive()
    }
}

/// Runs whose facts are kept in memory (about 100 bytes each), least recently used first out.
const FACTS_CAPACITY: u64 = 100_000;

impl IngestService {
    pub fn new(
        pipeline: EventPipeline,
        runs: Arc<dyn RunRepository>,
        auditor: Auditor,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let facts = moka::sync::Cache::builder()
            .max_capacity(FACTS_CAPACITY)
            .time_to_idle(Duration::from_mins(10))
            .build_with_hasher(ahash::RandomState::new());
        Self { pipeline, runs, auditor, clock, facts }
    }

    /// Whether the caller may report events at all (agents and services), before its batch
    /// is read.
    ///
    /// # Errors
    /// `Forbidden` for every other role.
    pub fn admit(&self, ctx: &RequestContext) -> Result<(), IngestError> {
        Ok(authorize(&ctx.principal, Action::IngestEvents)?)
    }

    /// Validates `batch` as a whole and appends it to run `run`: new ids get the next seqs
    /// in batch order, ids seen before their original seq.
    ///
    /// # Errors
    /// `Forbidden` for callers other than agents and services; `NotFound` for a run the
    /// caller's tenant does not have; `BatchSize` and `Invalid` for a batch refused as a
    /// whole; `RunTerminal` when the run has ended; `Unavailable` when the event store cannot
    /// be reached.
    #[tracing::instrument(
        name = "ingest events",
        skip_all,
        fields(
            run = %run,
            events = span_int(batch.len()),
            first_seq = tracing::field::Empty,
            last_seq = tracing::field::Empty,
            duplicates = tracing::field::Empty,
        )
    )]
    pub async fn ingest(
        &self,
        ctx: &RequestContext,
        run: RunId,
        batch: Vec<RawEvent>,
    ) -> Result<IngestReceipt, IngestError> {
        authorize(&ctx.principal, Action::IngestEvents)?;
        if batch.is_empty() || batch.len() > MAX_BATCH_EVENTS {
            return Err(IngestError::BatchSize(batch.len()));
        }
        let events = parse_batch(batch)?;
        let tenant = ctx.principal.tenant_id;
        let facts = self.facts(tenant, run).await?;
        let created_at = self.clock.now();
        let mut status = facts.status;
        // Whether `status` came from the sequencer (and so is the truth) or is a hint.
        let mut confirmed = false;
        for _ in 0..MAX_ATTEMPTS {
            let new = match status_after(status, &events) {
                Ok(new) => new,
                // On an ended run the sequencer answers: duplicates of an accepted batch, or
                // "terminal". A batch it refuses on a confirmed status is invalid.
                Err(_) if status.is_terminal() => status,
                Err(rejection) if confirmed => return Err(rejection.into()),
                Err(_) => {
                    status = self.confirmed_status(tenant, run).await?;
                    confirmed = true;
                    continue;
                }
            };
            let request = AppendRequest {
                tenant,
                run,
                events: events.clone(),
                created_at,
                status_change: Some(StatusChange { expected: status, new }),
            };
            match self.pipeline.sequencer.append(request).await? {
                AppendOutcome::Appended { events: appended, run_status } => {
                    self.remember(run, facts, run_status);
                    self.after_append(ctx, &facts, run, &events, &appended, status, run_status, created_at)
                        .await;
                    let duplicates = appended.iter().filter(|e| e.duplicate).count();
                    let span = tracing::Span::current();
                    span.record("duplicates", span_int(duplicates));
                    if let (Some(first), Some(last)) =
                        (appended.iter().map(|e| e.seq).min(), appended.iter().map(|e| e.seq).max())
                    {
                        span.record("first_seq", span_int(first)).record("last_seq", span_int(last));
                    }
                    return Ok(IngestReceipt { events: appended, duplicates, run_status });
                }
                AppendOutcome::Terminal(ended) => {
                    self.remember(run, facts, ended);
                    return Err(IngestError::RunTerminal(ended));
                }
                AppendOutcome::Conflict(actual) => {
                    status = actual;
                    confirmed = true;
                }
                AppendOutcome::NeedsSeed => {
                    status = self.seed(tenant, run).await?;
                    confirmed = true;
                }
            }
        }
        Err(IngestError::Unexpected(anyhow::anyhow!(
            "the run's status kept changing during {MAX_ATTEMPTS} attempts to append one batch"
        )))
    }

    /// Who the run belongs to, from memory or from the store; another tenant's run is not
    /// found.
    async fn facts(&self, tenant: TenantId, run: RunId) -> Result<RunFacts, IngestError> {
        if let Some(facts) = self.facts.get(&run) {
            return if facts.tenant == tenant { Ok(facts) } else { Err(IngestError::NotFound) };
        }
        let stored = self.runs.get(tenant, run).await?.ok_or(IngestError::NotFound)?;
        let facts = RunFacts { tenant, session: stored.session_id, status: stored.status() };
        self.facts.insert(run, facts);
        Ok(facts)
    }

    fn remember(&self, run: RunId, facts: RunFacts, status: RunStatus) {
        self.facts.insert(run, RunFacts { status, ..facts });
    }

    /// The status the sequencer holds, seeding a lost counter first.
    async fn confirmed_status(&self, tenant: TenantId, run: RunId) -> Result<RunStatus, IngestError> {
        match self.pipeline.sequencer.run_status(run).await? {
            Some(status) => Ok(status),
            None => self.seed(tenant, run).await,
        }
    }

    /// Rebuilds a lost counter from what the database holds, and answers the status the
    /// sequencer then holds.
    async fn seed(&self, tenant: TenantId, run: RunId) -> Result<RunStatus, IngestError> {
        let stored = self.runs.get(tenant, run).await?.ok_or(IngestError::NotFound)?;
        self.pipeline.seed(tenant, run, stored.status()).await?;
        self.pipeline.sequencer.run_status(run).await?.ok_or_else(|| {
            IngestError::Unexpected(anyhow::anyhow!("the sequencer holds no counter after seeding"))
        })
    }

    /// Publishes the new events live and audits a status change. Neither may fail the batch:
    /// it is accepted already. A lost publication is recovered by subscribers from the run's
    /// history; a lost audit entry is logged.
    #[allow(clippy::too_many_arguments, reason = "the one place that needs all of the batch's outcome")]
    async fn after_append(
        &self,
        ctx: &RequestContext,
        facts: &RunFacts,
        run: RunId,
        events: &[IncomingEvent],
        appended: &[AppendedEvent],
        before: RunStatus,
        after: RunStatus,
        created_at: chrono::DateTime<chrono::Utc>,
    ) {
        let new_events: Vec<RunEvent> = events
            .iter()
            .zip(appended)
            .filter(|(_, outcome)| !outcome.duplicate)
            .map(|(event, outcome)| RunEvent {
                run_id: run,
                tenant_id: facts.tenant,
                seq: outcome.seq,
                producer_id: Some(outcome.producer_id.to_string()),
                data: event.data.clone(),
                created_at,
            })
            .collect();
        self.pipeline.publish(&new_events, facts.session).await;
        metrics::counter!("sba_events_accepted_total").increment(new_events.len() as u64);
        metrics::counter!("sba_events_duplicates_total")
            .increment((appended.len() - new_events.len()) as u64);
        if before != after && !new_events.is_empty() {
            let entry = self.auditor.entry(
                ctx,
                status_action(after),
                "run",
                Some(run.to_string()),
                AuditOutcome::Success,
            );
            if let Err(error) = self.auditor.store(&entry).await {
                tracing::error!(run_id = %run, error = format!("{error:#}"), "the audit entry of a run's status change was not stored");
            }
        }
    }
}

/// The audit action of a batch that moves its run to `status`.
const fn status_action(status: RunStatus) -> &'static str {
    match status {
        RunStatus::InProgress => "run.start",
        RunStatus::RequiresAction => "run.require_action",
        RunStatus::Completed => "run.complete",
        RunStatus::Failed => "run.fail",
        RunStatus::Queued | RunStatus::Cancelled | RunStatus::Expired => "run.status",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use std::sync::Mutex;

    use sba_domain::runs::NewRun;
    use sba_domain::{AgentName, AgentRun, Metadata, Principal, Role, UserId};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::ports::{
        MockAuditLog, MockEventBus, MockEventLog, MockEventSequencer, MockIdGenerator, MockRunRepository,
        SeedOutcome,
    };
    use crate::testing::TestClock;

    const TENANT: TenantId = TenantId::from_uuid(Uuid::from_u128(1));
    const RUN: RunId = RunId::from_uuid(Uuid::from_u128(42));

    fn ctx(role: Role) -> RequestContext {
        RequestContext {
            principal: Principal { tenant_id: TENANT, user_id: UserId::parse("agent-1").unwrap(), role },
            ip: None,
            request_id: "req-1".into(),
            client_request_id: None,
            token: None,
        }
    }

    fn stored(status: RunStatus) -> AgentRun {
        let mut run = AgentRun::new(
            RUN,
            NewRun {
                tenant_id: TENANT,
                user_id: UserId::parse("u").unwrap(),
                agent: AgentName::parse("bot").unwrap(),
                input: json!(null),
                session_id: None,
                metadata: Metadata::default(),
            },
            chrono::Utc::now(),
        );
        if status != RunStatus::Queued {
            run.transition_to(status, chrono::Utc::now()).unwrap();
        }
        run
    }

    fn raw(id: &str, kind: &str, data: Value) -> RawEvent {
        RawEvent { id: id.into(), kind: kind.into(), data }
    }

    fn started(id: &str) -> RawEvent {
        raw(id, "run.started", json!({}))
    }

    fn delta(id: &str) -> RawEvent {
        raw(id, "step.delta", json!({"step_id": "s1", "text": "hi"}))
    }

    fn appended(ids: &[(&str, u64, bool)], run_status: RunStatus) -> AppendOutcome {
        AppendOutcome::Appended {
            events: ids
                .iter()
                .map(|&(id, seq, duplicate)| AppendedEvent {
                    producer_id: sba_domain::events::ProducerId::parse(id).unwrap(),
                    seq,
                    duplicate,
                })
                .collect(),
            run_status,
        }
    }

    /// The mocks of one test; `build` makes the service.
    struct Ports {
        sequencer: MockEventSequencer,
        bus: MockEventBus,
        log: MockEventLog,
        runs: MockRunRepository,
        audit: MockAuditLog,
    }

    impl Ports {
        /// The run is stored in `status`; nothing else is expected.
        fn with_run(status: RunStatus) -> Self {
            let mut runs = MockRunRepository::new();
            runs.expect_get().returning(move |tenant, _| Ok((tenant == TENANT).then(|| stored(status))));
            Self {
                sequencer: MockEventSequencer::new(),
                bus: MockEventBus::new(),
                log: MockEventLog::new(),
                runs,
                audit: MockAuditLog::new(),
            }
        }

        /// Records the seqs published live.
        fn publishing(mut self) -> (Self, Arc<Mutex<Vec<u64>>>) {
            let published = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&published);
            self.bus.expect_publish_all().returning(move |events, _| {
                seen.lock().unwrap().extend(events.iter().map(|e| e.seq));
                Ok(())
            });
            (self, published)
        }

        fn build(self) -> IngestService {
            let mut ids = MockIdGenerator::new();
            ids.expect_new_id().returning(Uuid::now_v7);
            let clock: Arc<dyn Clock> = Arc::new(TestClock::at(0));
            let auditor = Auditor::new(Arc::new(self.audit), Arc::clone(&clock), Arc::new(ids));
            let pipeline =
                EventPipeline::new(Arc::new(self.sequencer), Arc::new(self.bus), Arc::new(self.log));
            IngestService::new(pipeline, Arc::new(self.runs), auditor, clock)
        }
    }

    #[tokio::test]
    async fn only_agents_and_services_may_report_events() {
        for role in [Role::Authenticated, Role::Admin] {
            let service = Ports::with_run(RunStatus::Queued).build();
            assert!(matches!(service.admit(&ctx(role)), Err(IngestError::Forbidden(_))));
            let refused = service.ingest(&ctx(role), RUN, vec![started("a")]).await;
            assert!(matches!(refused, Err(IngestError::Forbidden(_))), "{role:?}");
        }
        for role in [Role::Agent, Role::Service] {
            assert!(Ports::with_run(RunStatus::Queued).build().admit(&ctx(role)).is_ok());
        }
    }

    #[tokio::test]
    async fn an_empty_or_oversized_batch_is_refused_before_anything_is_asked() {
        let service = Ports::with_run(RunStatus::Queued).build();
        assert!(matches!(
            service.ingest(&ctx(Role::Agent), RUN, vec![]).await,
            Err(IngestError::BatchSize(0))
        ));
        let too_many = (0..=MAX_BATCH_EVENTS).map(|i| delta(&format!("e{i}"))).collect();
        assert!(matches!(
            service.ingest(&ctx(Role::Agent), RUN, too_many).await,
            Err(IngestError::BatchSize(501))
        ));
    }

    #[tokio::test]
    async fn one_invalid_event_refuses_the_batch_naming_its_index_and_nothing_is_appended() {
        let mut ports = Ports::with_run(RunStatus::InProgress);
        ports.sequencer.expect_append().never();
        let batch = vec![delta("a"), delta("b"), raw("c", "step.delta", json!({"text": 3})), delta("d")];
        match ports.build().ingest(&ctx(Role::Agent), RUN, batch).await {
            Err(IngestError::Invalid(rejection)) => assert_eq!(rejection.index, 2),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn another_tenants_run_is_not_found() {
        let mut ports = Ports::with_run(RunStatus::Queued);
        ports.sequencer.expect_append().never();
        let mut other = ctx(Role::Agent);
        other.principal.tenant_id = TenantId::from_uuid(Uuid::from_u128(2));
        let service = ports.build();
        assert!(matches!(service.ingest(&other, RUN, vec![started("a")]).await, Err(IngestError::NotFound)));
        // Also when the run's facts are remembered from its own tenant's batch.
        assert!(matches!(service.ingest(&other, RUN, vec![started("a")]).await, Err(IngestError::NotFound)));
    }

    #[tokio::test]
    async fn an_accepted_batch_is_answered_with_its_seqs_published_in_order_and_its_status_change_audited() {
        let (mut ports, published) = Ports::with_run(RunStatus::Queued).publishing();
        ports
            .sequencer
            .expect_append()
            .withf(|request| {
                request.status_change
                    == Some(StatusChange { expected: RunStatus::Queued, new: RunStatus::InProgress })
                    && request.events.len() == 3
                    && request.tenant == TENANT
            })
            .times(1)
            .returning(|_| {
                Ok(appended(&[("a", 2, false), ("b", 3, false), ("c", 4, false)], RunStatus::InProgress))
            });
        ports
            .audit
            .expect_record()
            .withf(|entry| entry.action == "run.start" && entry.resource_id == Some(RUN.to_string()))
            .times(1)
            .returning(|_| Ok(()));
        let batch = vec![
            started("a"),
            raw("b", "step.created", json!({"step_id": "s1", "type": "message_creation"})),
            delta("c"),
        ];
        let receipt = ports.build().ingest(&ctx(Role::Agent), RUN, batch).await.unwrap();
        assert_eq!(receipt.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!((receipt.duplicates, receipt.run_status), (0, RunStatus::InProgress));
        assert_eq!(*published.lock().unwrap(), [2, 3, 4]);
    }

    #[tokio::test]
    async fn duplicates_keep_their_seqs_are_not_published_again_and_audit_nothing() {
        let (mut ports, published) = Ports::with_run(RunStatus::InProgress).publishing();
        ports
            .sequencer
            .expect_append()
            .returning(|_| Ok(appended(&[("a", 2, true), ("b", 7, false)], RunStatus::InProgress)));
        ports.audit.expect_record().never();
        let receipt =
            ports.build().ingest(&ctx(Role::Service), RUN, vec![delta("a"), delta("b")]).await.unwrap();
        assert_eq!(receipt.duplicates, 1);
        assert_eq!(*published.lock().unwrap(), [7]);
    }

    #[tokio::test]
    async fn a_status_that_moved_on_another_node_is_retried_from_the_sequencers_answer() {
        let (mut ports, _) = Ports::with_run(RunStatus::Queued).publishing();
        let mut calls = mockall::Sequence::new();
        ports
            .sequencer
            .expect_append()
            .withf(|r| r.status_change.map(|c| c.expected) == Some(RunStatus::Queued))
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_| Ok(AppendOutcome::Conflict(RunStatus::RequiresAction)));
        ports
            .sequencer
            .expect_append()
            .withf(|r| {
                r.status_change
                    == Some(StatusChange { expected: RunStatus::RequiresAction, new: RunStatus::InProgress })
            })
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_| Ok(appended(&[("a", 9, false)], RunStatus::InProgress)));
        ports.audit.expect_record().times(1).returning(|_| Ok(()));
        let receipt = ports.build().ingest(&ctx(Role::Agent), RUN, vec![started("a")]).await.unwrap();
        assert_eq!(receipt.run_status, RunStatus::InProgress);
    }

    #[tokio::test]
    async fn an_ended_run_answers_terminal_with_its_status_and_publishes_nothing() {
        let mut ports = Ports::with_run(RunStatus::InProgress);
        ports.sequencer.expect_append().returning(|_| Ok(AppendOutcome::Terminal(RunStatus::Cancelled)));
        ports.bus.expect_publish_all().never();
        let refused = ports.build().ingest(&ctx(Role::Agent), RUN, vec![delta("a")]).await;
        assert!(matches!(refused, Err(IngestError::RunTerminal(RunStatus::Cancelled))));
    }

    #[tokio::test]
    async fn a_batch_refused_on_a_stale_status_asks_the_sequencer_before_answering() {
        // The database still says queued; the sequencer knows the run is in progress, where
        // `run.completed` is allowed.
        let (mut ports, _) = Ports::with_run(RunStatus::Queued).publishing();
        ports.sequencer.expect_run_status().times(1).returning(|_| Ok(Some(RunStatus::InProgress)));
        ports
            .sequencer
            .expect_append()
            .withf(|r| {
                r.status_change
                    == Some(StatusChange { expected: RunStatus::InProgress, new: RunStatus::Completed })
            })
            .returning(|_| Ok(appended(&[("z", 5, false)], RunStatus::Completed)));
        ports.audit.expect_record().withf(|e| e.action == "run.complete").returning(|_| Ok(()));
        let done = raw("z", "run.completed", json!({"output": "ok"}));
        let receipt = ports.build().ingest(&ctx(Role::Agent), RUN, vec![done]).await.unwrap();
        assert_eq!(receipt.run_status, RunStatus::Completed);
    }

    #[tokio::test]
    async fn a_batch_the_confirmed_status_refuses_is_invalid() {
        let mut ports = Ports::with_run(RunStatus::Queued);
        ports.sequencer.expect_run_status().returning(|_| Ok(Some(RunStatus::Queued)));
        ports.sequencer.expect_append().never();
        let done = raw("z", "run.completed", json!({"output": "ok"}));
        match ports
            .build()
            .ingest(
                &ctx(Role::Agent),
                RUN,
                vec![delta("a"), raw("w", "run.requires_action", json!({})), done],
            )
            .await
        {
            Err(IngestError::Invalid(rejection)) => assert_eq!(rejection.index, 2),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_lost_counter_is_seeded_from_the_database_then_the_batch_appended() {
        let (mut ports, _) = Ports::with_run(RunStatus::InProgress).publishing();
        let mut calls = mockall::Sequence::new();
        ports
            .sequencer
            .expect_append()
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_| Ok(AppendOutcome::NeedsSeed));
        ports.log.expect_last_seq().returning(|_, _| Ok(Some(17)));
        ports
            .log
            .expect_producer_ids()
            .returning(|_, _| Ok(vec![(sba_domain::events::ProducerId::parse("old").unwrap(), 17)]));
        ports
            .sequencer
            .expect_restore_ids()
            .withf(|run, ids| *run == RUN && ids.len() == 1 && ids[0].1 == 17)
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_, _| Ok(()));
        ports
            .sequencer
            .expect_seed()
            .withf(|run, seq, status| *run == RUN && *seq == 17 && *status == RunStatus::InProgress)
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_, _, _| Ok(SeedOutcome::Seeded { seq: 17 }));
        ports.sequencer.expect_run_status().returning(|_| Ok(Some(RunStatus::InProgress)));
        ports
            .sequencer
            .expect_append()
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_| Ok(appended(&[("a", 18, false)], RunStatus::InProgress)));
        let receipt = ports.build().ingest(&ctx(Role::Agent), RUN, vec![delta("a")]).await.unwrap();
        assert_eq!(receipt.events[0].seq, 18);
    }

    #[tokio::test]
    async fn an_unreachable_event_store_is_unavailable() {
        let mut ports = Ports::with_run(RunStatus::InProgress);
        ports
            .sequencer
            .expect_append()
            .returning(|_| Err(SequencerError::Unavailable(anyhow::anyhow!("connection refused"))));
        let refused = ports.build().ingest(&ctx(Role::Agent), RUN, vec![delta("a")]).await;
        assert!(matches!(refused, Err(IngestError::Unavailable(_))));
    }
}
