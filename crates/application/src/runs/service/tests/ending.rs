//! How [`RunService`](super::RunService)'s cancel and expiry answer their ports' failures.

use super::*;

const RUN_42: RunId = RunId::from_uuid(Uuid::from_u128(42));

fn outage() -> RepositoryError {
    RepositoryError::Unexpected(anyhow::anyhow!("connection reset"))
}

fn audit_never() -> MockAuditLog {
    let mut audit = MockAuditLog::new();
    audit.expect_record().never();
    audit
}

/// A sequencer that answers `NeedsSeed` to the first cancel, and `after_seed` to a second.
fn sequencer_needing_a_seed(after_seed: Option<ServerAppendOutcome>) -> MockEventSequencer {
    let mut sequencer = MockEventSequencer::new();
    let mut calls = mockall::Sequence::new();
    sequencer
        .expect_append_server_event()
        .times(1)
        .in_sequence(&mut calls)
        .returning(|_, _, _, _| Ok(ServerAppendOutcome::NeedsSeed));
    if let Some(outcome) = after_seed {
        sequencer
            .expect_append_server_event()
            .times(1)
            .in_sequence(&mut calls)
            .returning(move |_, _, _, _| Ok(outcome));
    }
    sequencer
}

#[tokio::test]
async fn a_store_outage_while_reading_the_run_to_cancel_is_unexpected_and_nothing_is_cancelled() {
    let mut runs = MockRunRepository::new();
    runs.expect_get().times(1).returning(|_, _| Err(outage()));
    let err = service_with(runs, MockRunLedger::new(), audit_never(), sequencer_never_cancelling())
        .cancel(&ctx(), RUN_42)
        .await;
    assert!(matches!(err, Err(RunServiceError::Unexpected(_))), "{err:?}");
}

#[tokio::test]
async fn a_refused_cancel_whose_denial_cannot_be_audited_is_unexpected_and_changes_nothing() {
    // Denied attempts are always on the audit trail: without the entry, the answer is an error.
    let mut audit = MockAuditLog::new();
    audit
        .expect_record()
        .withf(|e| e.action == "run.cancel" && e.outcome == AuditOutcome::Denied)
        .times(1)
        .returning(|_| Err(outage()));
    let err = service_with(runs_holding_run_42(), MockRunLedger::new(), audit, sequencer_never_cancelling())
        .cancel(&ctx_as("user-2", Role::Authenticated), RUN_42)
        .await;
    assert!(matches!(err, Err(RunServiceError::Unexpected(_))), "{err:?}");
}

#[tokio::test]
async fn a_sequencer_failure_while_cancelling_is_unexpected_and_not_audited() {
    let mut sequencer = MockEventSequencer::new();
    sequencer
        .expect_append_server_event()
        .times(1)
        .returning(|_, _, _, _| Err(SequencerError::Unexpected(anyhow::anyhow!("bad reply"))));
    let mut bus = MockEventBus::new();
    bus.expect_publish_all().never();
    let err = service_over(
        runs_holding_run_42(),
        MockRunLedger::new(),
        audit_never(),
        sequencer,
        bus,
        log_holding_seq_4(),
    )
    .cancel(&ctx(), RUN_42)
    .await;
    assert!(matches!(err, Err(RunServiceError::Unexpected(_))), "{err:?}");
}

#[tokio::test]
async fn a_cancel_whose_stored_seq_cannot_be_read_for_the_seed_is_unexpected_and_not_audited() {
    let mut sequencer = sequencer_needing_a_seed(None);
    sequencer.expect_restore_ids().never();
    sequencer.expect_seed().never();
    let mut log = MockEventLog::new();
    log.expect_last_seq().times(1).returning(|_, _| Err(outage()));
    let err = service_over(
        runs_holding_run_42(),
        MockRunLedger::new(),
        audit_never(),
        sequencer,
        bus_publishing(),
        log,
    )
    .cancel(&ctx(), RUN_42)
    .await;
    assert!(matches!(err, Err(RunServiceError::Unexpected(_))), "{err:?}");
}

#[tokio::test]
async fn a_cancel_whose_counter_the_event_store_cannot_seed_is_unavailable_and_not_audited() {
    let mut sequencer = sequencer_needing_a_seed(None);
    sequencer.expect_restore_ids().returning(|_, _| Ok(()));
    sequencer
        .expect_seed()
        .times(1)
        .returning(|_, _, _| Err(SequencerError::Unavailable(anyhow::anyhow!("timeout"))));
    let err = service_with(runs_holding_run_42(), MockRunLedger::new(), audit_never(), sequencer)
        .cancel(&ctx(), RUN_42)
        .await;
    assert!(matches!(err, Err(RunServiceError::Unavailable(_))), "{err:?}");
}

#[tokio::test]
async fn a_sequencer_that_still_needs_a_seed_after_seeding_fails_the_cancel_as_unexpected() {
    // Seeded once, never in a loop.
    let mut sequencer = sequencer_needing_a_seed(Some(ServerAppendOutcome::NeedsSeed));
    sequencer.expect_restore_ids().times(1).returning(|_, _| Ok(()));
    sequencer.expect_seed().times(1).returning(|_, seq, _| Ok(SeedOutcome::Seeded { seq }));
    let err = service_with(runs_holding_run_42(), MockRunLedger::new(), audit_never(), sequencer)
        .cancel(&ctx(), RUN_42)
        .await;
    assert!(matches!(err, Err(RunServiceError::Unexpected(_))), "{err:?}");
}

#[tokio::test]
async fn a_conflict_answered_to_a_cancel_is_unexpected_and_not_audited() {
    let mut sequencer = MockEventSequencer::new();
    sequencer
        .expect_append_server_event()
        .times(1)
        .returning(|_, _, _, _| Ok(ServerAppendOutcome::Conflict(RunStatus::InProgress)));
    let err = service_with(runs_holding_run_42(), MockRunLedger::new(), audit_never(), sequencer)
        .cancel(&ctx(), RUN_42)
        .await;
    assert!(matches!(err, Err(RunServiceError::Unexpected(_))), "{err:?}");
}

#[tokio::test]
async fn an_accepted_cancel_whose_audit_entry_cannot_be_stored_still_answers_the_cancelled_run() {
    // The sequence has ended the run: failing the request would only invite a retry.
    let mut audit = MockAuditLog::new();
    audit
        .expect_record()
        .withf(|e| e.action == "run.cancel" && e.outcome == AuditOutcome::Success)
        .times(1)
        .returning(|_| Err(outage()));
    let run = service_with(runs_holding_run_42(), MockRunLedger::new(), audit, sequencer_cancelling_once())
        .cancel(&ctx(), RUN_42)
        .await
        .unwrap();
    assert_eq!(run.status(), RunStatus::Cancelled);
}

#[tokio::test]
async fn an_accepted_cancel_that_cannot_be_published_live_still_answers_the_cancelled_run() {
    let mut bus = MockEventBus::new();
    bus.expect_publish_all().returning(|_, _| Err(EventBusError::Unavailable(anyhow::anyhow!("timeout"))));
    let run = service_over(
        runs_holding_run_42(),
        MockRunLedger::new(),
        audit_of_a_cancel_by("user-1"),
        sequencer_cancelling_once(),
        bus,
        log_holding_seq_4(),
    )
    .cancel(&ctx(), RUN_42)
    .await
    .unwrap();
    assert_eq!(run.status(), RunStatus::Cancelled);
}

/// A repository listing two overdue runs.
fn runs_with_two_overdue() -> MockRunRepository {
    let mut runs = MockRunRepository::new();
    runs.expect_list_overdue()
        .returning(|_, _| Ok(vec![stored_run(RunStatus::Queued), stored_run(RunStatus::InProgress)]));
    runs
}

/// A sequencer that ends `ended` runs' sequences as expired.
fn sequencer_expiring(ended: usize) -> MockEventSequencer {
    let mut sequencer = MockEventSequencer::new();
    sequencer
        .expect_append_server_event()
        .withf(|_, _, event, _| *event == ServerEvent::Expired)
        .times(ended)
        .returning(|_, _, _, _| Ok(ServerAppendOutcome::Appended { seq: 4, run_status: RunStatus::Expired }));
    sequencer
}

#[tokio::test]
async fn a_store_outage_listing_overdue_runs_is_unexpected_and_expires_nothing() {
    let mut runs = MockRunRepository::new();
    runs.expect_list_overdue().times(1).returning(|_, _| Err(outage()));
    let mut ledger = MockRunLedger::new();
    ledger.expect_end_run().never();
    let err = service_with(runs, ledger, MockAuditLog::new(), sequencer_expiring(0))
        .expire_overdue(chrono::Duration::hours(1), 10)
        .await;
    assert!(matches!(err, Err(RunServiceError::Unexpected(_))), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_event_store_stops_the_expiry_as_unavailable_after_the_runs_before_it() {
    let mut sequencer = MockEventSequencer::new();
    let mut calls = mockall::Sequence::new();
    sequencer
        .expect_append_server_event()
        .times(1)
        .in_sequence(&mut calls)
        .returning(|_, _, _, _| Ok(ServerAppendOutcome::Appended { seq: 4, run_status: RunStatus::Expired }));
    sequencer
        .expect_append_server_event()
        .times(1)
        .in_sequence(&mut calls)
        .returning(|_, _, _, _| Err(SequencerError::Unavailable(anyhow::anyhow!("timeout"))));
    let mut ledger = MockRunLedger::new();
    ledger.expect_end_run().times(1).returning(|_, _, _, _| Ok(stored_run(RunStatus::Expired)));
    let err = service_with(runs_with_two_overdue(), ledger, MockAuditLog::new(), sequencer)
        .expire_overdue(chrono::Duration::hours(1), 10)
        .await;
    assert!(matches!(err, Err(RunServiceError::Unavailable(_))), "{err:?}");
}

#[tokio::test]
async fn a_ledger_outage_while_expiring_stops_the_sweep_as_unexpected() {
    let mut ledger = MockRunLedger::new();
    ledger
        .expect_end_run()
        .times(1)
        .returning(|_, _, _, _| Err(LedgerError::Unexpected(anyhow::anyhow!("connection reset"))));
    let err = service_with(runs_with_two_overdue(), ledger, MockAuditLog::new(), sequencer_expiring(1))
        .expire_overdue(chrono::Duration::hours(1), 10)
        .await;
    assert!(matches!(err, Err(RunServiceError::Unexpected(_))), "{err:?}");
}

#[tokio::test]
async fn a_run_the_ledger_no_longer_finds_during_expiry_is_skipped_not_an_error() {
    let mut ledger = MockRunLedger::new();
    let mut answers = [Err(LedgerError::NotFound), Ok(stored_run(RunStatus::Expired))].into_iter();
    ledger.expect_end_run().times(2).returning(move |_, _, _, _| answers.next().unwrap());
    let expired = service_with(runs_with_two_overdue(), ledger, MockAuditLog::new(), sequencer_expiring(2))
        .expire_overdue(chrono::Duration::hours(1), 10)
        .await
        .unwrap();
    assert_eq!(expired, 1);
}

#[tokio::test]
async fn a_run_whose_expiry_the_ledger_failed_to_store_is_expired_by_the_next_sweep() {
    // Only the sweep ends a sequence as expired, and no queued event brings that to the
    // database: after a failed `end_run`, the ledger is the only way the row ever ends.
    let mut runs = MockRunRepository::new();
    runs.expect_list_overdue().times(2).returning(|_, _| Ok(vec![stored_run(RunStatus::InProgress)]));
    let mut sequencer = MockEventSequencer::new();
    let mut calls = mockall::Sequence::new();
    sequencer
        .expect_append_server_event()
        .times(1)
        .in_sequence(&mut calls)
        .returning(|_, _, _, _| Ok(ServerAppendOutcome::Appended { seq: 4, run_status: RunStatus::Expired }));
    sequencer
        .expect_append_server_event()
        .times(1)
        .in_sequence(&mut calls)
        .returning(|_, _, _, _| Ok(ServerAppendOutcome::Terminal(RunStatus::Expired)));
    let mut ledger = MockRunLedger::new();
    let mut answers = [
        Err(LedgerError::Unexpected(anyhow::anyhow!("connection reset"))),
        Ok(stored_run(RunStatus::Expired)),
    ]
    .into_iter();
    ledger
        .expect_end_run()
        .withf(|_, _, ending, audit| *ending == RunEnding::Expire && audit.actor == SYSTEM_ACTOR)
        .times(2)
        .returning(move |_, _, _, _| answers.next().unwrap());
    let service = service_with(runs, ledger, MockAuditLog::new(), sequencer);

    let first = service.expire_overdue(chrono::Duration::hours(1), 10).await;
    assert!(matches!(first, Err(RunServiceError::Unexpected(_))), "{first:?}");
    let second = service.expire_overdue(chrono::Duration::hours(1), 10).await.unwrap();
    assert_eq!(second, 1, "the next sweep stores the expiry the sequence holds");
}
