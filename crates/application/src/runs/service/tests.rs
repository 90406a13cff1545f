//! Unit tests of [`RunService`](super::RunService) with mocks of its ports.

use chrono::{DateTime, TimeZone, Utc};
use mockall::predicate::{always, eq};
use sba_domain::{Principal, Role, RunStatus, TenantId, UserId};
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::ports::{EventBusError, RunEnding, ServerAppendOutcome, ServerEvent};
use crate::ports::{
    MockAuditLog, MockClock, MockEventBus, MockEventLog, MockEventSequencer, MockIdGenerator, MockRunLedger,
    MockRunRepository, SeedOutcome,
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
    service_over(runs, ledger, audit, sequencer, bus_publishing(), log_holding_seq_4())
}

/// A bus that takes every publication.
fn bus_publishing() -> MockEventBus {
    let mut bus = MockEventBus::new();
    bus.expect_publish_all().returning(|_, _| Ok(()));
    bus
}

/// An event log whose last stored seq is 4, with no producer id.
fn log_holding_seq_4() -> MockEventLog {
    let mut log = MockEventLog::new();
    log.expect_last_seq().returning(|_, _| Ok(Some(4)));
    log.expect_producer_ids().returning(|_, _| Ok(Vec::new()));
    log
}

/// The service over every port's mock.
fn service_over(
    runs: MockRunRepository,
    ledger: MockRunLedger,
    audit: MockAuditLog,
    sequencer: MockEventSequencer,
    bus: MockEventBus,
    log: MockEventLog,
) -> RunService {
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
async fn create_fails_when_the_ledger_fails_and_neither_counts_nor_publishes_the_run() {
    let mut ledger = MockRunLedger::new();
    ledger.expect_create_run().returning(|_, _| Err(LedgerError::Unexpected(anyhow::anyhow!("disk full"))));
    let mut sequencer = MockEventSequencer::new();
    sequencer.expect_seed().never();
    let mut bus = MockEventBus::new();
    bus.expect_publish_all().never();
    let err = service_over(
        MockRunRepository::new(),
        ledger,
        MockAuditLog::new(),
        sequencer,
        bus,
        log_holding_seq_4(),
    )
    .create(&ctx(), request())
    .await;
    assert!(matches!(err, Err(RunServiceError::Unexpected(_))));
}

fn ledger_storing_runs() -> MockRunLedger {
    let mut ledger = MockRunLedger::new();
    ledger.expect_create_run().times(1).returning(|_, _| Ok(()));
    ledger
}

#[tokio::test]
async fn a_counter_the_sequencer_cannot_start_does_not_fail_the_creation() {
    // The first ingest seeds the counter from the database.
    for error in [
        SequencerError::Unavailable(anyhow::anyhow!("timeout")),
        SequencerError::Unexpected(anyhow::anyhow!("bad reply")),
    ] {
        let mut sequencer = MockEventSequencer::new();
        sequencer.expect_seed().times(1).return_once(move |_, _, _| Err(error));
        let mut bus = MockEventBus::new();
        bus.expect_publish_all().times(1).returning(|_, _| Ok(()));
        let run = service_over(
            MockRunRepository::new(),
            ledger_storing_runs(),
            MockAuditLog::new(),
            sequencer,
            bus,
            log_holding_seq_4(),
        )
        .create(&ctx(), request())
        .await
        .unwrap();
        assert_eq!(run.status(), RunStatus::Queued);
    }
}

#[tokio::test]
async fn a_failed_live_publication_does_not_fail_the_creation() {
    let mut bus = MockEventBus::new();
    bus.expect_publish_all().returning(|_, _| Err(EventBusError::Unavailable(anyhow::anyhow!("timeout"))));
    let run = service_over(
        MockRunRepository::new(),
        ledger_storing_runs(),
        MockAuditLog::new(),
        sequencer_accepting(),
        bus,
        log_holding_seq_4(),
    )
    .create(&ctx(), request())
    .await
    .unwrap();
    assert_eq!(run.status(), RunStatus::Queued);
}

#[tokio::test]
async fn a_store_outage_while_getting_a_run_is_unexpected_not_not_found() {
    let mut runs = MockRunRepository::new();
    runs.expect_get()
        .times(1)
        .returning(|_, _| Err(RepositoryError::Unexpected(anyhow::anyhow!("connection reset"))));
    let err = service(runs, MockRunLedger::new(), MockAuditLog::new())
        .get(&ctx(), RunId::from_uuid(Uuid::from_u128(7)))
        .await;
    assert!(matches!(err, Err(RunServiceError::Unexpected(_))), "{err:?}");
}

#[tokio::test]
async fn a_refused_attempt_whose_audit_entry_cannot_be_stored_is_unexpected() {
    let mut audit = MockAuditLog::new();
    audit
        .expect_record()
        .times(1)
        .returning(|_| Err(RepositoryError::Unexpected(anyhow::anyhow!("connection reset"))));
    let err = service(MockRunRepository::new(), MockRunLedger::new(), audit)
        .record_refused(&ctx(), "run.create", None)
        .await;
    assert!(matches!(err, Err(RunServiceError::Unexpected(_))), "{err:?}");
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
    let run =
        service_with(runs_holding_run_42(), MockRunLedger::new(), audit_of_a_cancel_by("user-1"), sequencer)
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

mod ending;
