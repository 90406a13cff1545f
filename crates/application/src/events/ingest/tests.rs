//! Unit tests of [`IngestService`](super::IngestService) with mocks of its ports.

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
        let pipeline = EventPipeline::new(Arc::new(self.sequencer), Arc::new(self.bus), Arc::new(self.log));
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
    assert!(matches!(service.ingest(&ctx(Role::Agent), RUN, vec![]).await, Err(IngestError::BatchSize(0))));
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
    let receipt = ports.build().ingest(&ctx(Role::Service), RUN, vec![delta("a"), delta("b")]).await.unwrap();
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
        .ingest(&ctx(Role::Agent), RUN, vec![delta("a"), raw("w", "run.requires_action", json!({})), done])
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

fn outage() -> RepositoryError {
    RepositoryError::Unexpected(anyhow::anyhow!("connection reset"))
}

impl Ports {
    /// The run is stored in `status` and its counter was lost: the first append asks for a
    /// seed, the event log holds seq 17 with no producer id.
    fn with_lost_counter(status: RunStatus) -> Self {
        let mut ports = Self::with_run(status);
        ports.sequencer.expect_append().times(1).returning(|_| Ok(AppendOutcome::NeedsSeed));
        ports.log.expect_last_seq().returning(|_, _| Ok(Some(17)));
        ports.log.expect_producer_ids().returning(|_, _| Ok(Vec::new()));
        ports
    }

    /// Nothing may be published or audited.
    fn quiet(mut self) -> Self {
        self.bus.expect_publish_all().never();
        self.audit.expect_record().never();
        self
    }
}

#[tokio::test]
async fn a_store_outage_while_looking_up_the_run_is_unexpected_not_not_found() {
    let mut ports = Ports::with_run(RunStatus::Queued).quiet();
    ports.runs = MockRunRepository::new();
    ports.runs.expect_get().times(1).returning(|_, _| Err(outage()));
    ports.sequencer.expect_append().never();
    let refused = ports.build().ingest(&ctx(Role::Agent), RUN, vec![started("a")]).await;
    assert!(matches!(refused, Err(IngestError::Unexpected(_))), "{refused:?}");
}

#[tokio::test]
async fn a_sequencer_failure_while_appending_is_unexpected_and_nothing_is_published_or_audited() {
    let mut ports = Ports::with_run(RunStatus::Queued).quiet();
    ports
        .sequencer
        .expect_append()
        .times(1)
        .returning(|_| Err(SequencerError::Unexpected(anyhow::anyhow!("bad reply"))));
    let refused = ports.build().ingest(&ctx(Role::Agent), RUN, vec![started("a")]).await;
    assert!(matches!(refused, Err(IngestError::Unexpected(_))), "{refused:?}");
}

#[tokio::test]
async fn a_status_the_sequencer_cannot_confirm_fails_the_batch_as_unavailable() {
    // Stored as queued, where `run.completed` is refused: the sequencer is asked, and is down.
    let mut ports = Ports::with_run(RunStatus::Queued).quiet();
    ports
        .sequencer
        .expect_run_status()
        .times(1)
        .returning(|_| Err(SequencerError::Unavailable(anyhow::anyhow!("timeout"))));
    ports.sequencer.expect_append().never();
    let done = raw("z", "run.completed", json!({"output": "ok"}));
    let refused = ports.build().ingest(&ctx(Role::Agent), RUN, vec![done]).await;
    assert!(matches!(refused, Err(IngestError::Unavailable(_))), "{refused:?}");
}

#[tokio::test]
async fn a_status_confirmed_without_a_counter_seeds_it_from_the_database_first() {
    let (mut ports, _) = Ports::with_run(RunStatus::Queued).publishing();
    let mut calls = mockall::Sequence::new();
    ports.sequencer.expect_run_status().times(1).in_sequence(&mut calls).returning(|_| Ok(None));
    ports.log.expect_last_seq().returning(|_, _| Ok(Some(3)));
    ports.log.expect_producer_ids().returning(|_, _| Ok(Vec::new()));
    ports.sequencer.expect_restore_ids().times(1).in_sequence(&mut calls).returning(|_, _| Ok(()));
    ports
        .sequencer
        .expect_seed()
        .withf(|_, seq, _| *seq == 3)
        .times(1)
        .in_sequence(&mut calls)
        .returning(|_, _, _| Ok(SeedOutcome::Kept { seq: 5 }));
    ports
        .sequencer
        .expect_run_status()
        .times(1)
        .in_sequence(&mut calls)
        .returning(|_| Ok(Some(RunStatus::InProgress)));
    ports
        .sequencer
        .expect_append()
        .withf(|r| r.status_change.map(|c| c.expected) == Some(RunStatus::InProgress))
        .times(1)
        .in_sequence(&mut calls)
        .returning(|_| Ok(appended(&[("z", 6, false)], RunStatus::Completed)));
    ports.audit.expect_record().returning(|_| Ok(()));
    let done = raw("z", "run.completed", json!({"output": "ok"}));
    let receipt = ports.build().ingest(&ctx(Role::Agent), RUN, vec![done]).await.unwrap();
    assert_eq!(receipt.run_status, RunStatus::Completed);
}

#[tokio::test]
async fn a_lost_counter_of_a_run_the_store_no_longer_gives_is_not_found_or_unexpected() {
    for (gone, expect_not_found) in [(Ok(None), true), (Err(outage()), false)] {
        let mut ports = Ports::with_lost_counter(RunStatus::InProgress).quiet();
        // Found for the run's facts; then gone (or unreadable) when the counter is seeded.
        ports.runs = MockRunRepository::new();
        let mut calls = mockall::Sequence::new();
        ports
            .runs
            .expect_get()
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_, _| Ok(Some(stored(RunStatus::InProgress))));
        ports.runs.expect_get().times(1).in_sequence(&mut calls).return_once(move |_, _| gone);
        ports.sequencer.expect_seed().never();
        let refused = ports.build().ingest(&ctx(Role::Agent), RUN, vec![delta("a")]).await;
        match refused {
            Err(IngestError::NotFound) => assert!(expect_not_found),
            Err(IngestError::Unexpected(_)) => assert!(!expect_not_found),
            other => panic!("expected NotFound or Unexpected, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_lost_counter_whose_stored_seq_cannot_be_read_fails_the_batch_as_unexpected() {
    let mut ports = Ports::with_run(RunStatus::InProgress).quiet();
    ports.sequencer.expect_append().times(1).returning(|_| Ok(AppendOutcome::NeedsSeed));
    ports.log.expect_last_seq().times(1).returning(|_, _| Err(outage()));
    ports.sequencer.expect_restore_ids().never();
    ports.sequencer.expect_seed().never();
    let refused = ports.build().ingest(&ctx(Role::Agent), RUN, vec![delta("a")]).await;
    assert!(matches!(refused, Err(IngestError::Unexpected(_))), "{refused:?}");
}

#[tokio::test]
async fn a_lost_counter_the_event_store_cannot_seed_fails_the_batch_as_unavailable() {
    let mut ports = Ports::with_lost_counter(RunStatus::InProgress).quiet();
    ports.sequencer.expect_restore_ids().returning(|_, _| Ok(()));
    ports
        .sequencer
        .expect_seed()
        .times(1)
        .returning(|_, _, _| Err(SequencerError::Unavailable(anyhow::anyhow!("timeout"))));
    ports.sequencer.expect_run_status().never();
    let refused = ports.build().ingest(&ctx(Role::Agent), RUN, vec![delta("a")]).await;
    assert!(matches!(refused, Err(IngestError::Unavailable(_))), "{refused:?}");
}

#[tokio::test]
async fn a_sequencer_without_a_counter_after_seeding_fails_the_batch_as_unexpected() {
    let mut ports = Ports::with_lost_counter(RunStatus::InProgress).quiet();
    ports.sequencer.expect_restore_ids().returning(|_, _| Ok(()));
    ports.sequencer.expect_seed().times(1).returning(|_, seq, _| Ok(SeedOutcome::Seeded { seq }));
    ports.sequencer.expect_run_status().times(1).returning(|_| Ok(None));
    let refused = ports.build().ingest(&ctx(Role::Agent), RUN, vec![delta("a")]).await;
    assert!(matches!(refused, Err(IngestError::Unexpected(_))), "{refused:?}");
}

#[tokio::test]
async fn a_status_that_keeps_moving_fails_the_batch_as_unexpected_after_four_attempts() {
    let mut ports = Ports::with_run(RunStatus::InProgress).quiet();
    ports
        .sequencer
        .expect_append()
        .times(MAX_ATTEMPTS)
        .returning(|_| Ok(AppendOutcome::Conflict(RunStatus::InProgress)));
    let refused = ports.build().ingest(&ctx(Role::Agent), RUN, vec![delta("a")]).await;
    assert!(matches!(refused, Err(IngestError::Unexpected(_))), "{refused:?}");
}

#[tokio::test]
async fn an_accepted_batch_whose_live_publication_fails_is_still_accepted() {
    let mut ports = Ports::with_run(RunStatus::InProgress);
    ports.sequencer.expect_append().returning(|_| Ok(appended(&[("a", 7, false)], RunStatus::InProgress)));
    ports
        .bus
        .expect_publish_all()
        .returning(|_, _| Err(crate::ports::EventBusError::Unavailable(anyhow::anyhow!("timeout"))));
    let receipt = ports.build().ingest(&ctx(Role::Agent), RUN, vec![delta("a")]).await.unwrap();
    assert_eq!(receipt.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [7]);
}

#[tokio::test]
async fn an_accepted_status_change_whose_audit_entry_cannot_be_stored_is_still_accepted() {
    let (mut ports, published) = Ports::with_run(RunStatus::Queued).publishing();
    ports.sequencer.expect_append().returning(|_| Ok(appended(&[("a", 2, false)], RunStatus::InProgress)));
    ports.audit.expect_record().withf(|e| e.action == "run.start").times(1).returning(|_| Err(outage()));
    let receipt = ports.build().ingest(&ctx(Role::Agent), RUN, vec![started("a")]).await.unwrap();
    assert_eq!(receipt.run_status, RunStatus::InProgress);
    assert_eq!(*published.lock().unwrap(), [2]);
}

#[tokio::test]
async fn a_batch_of_exactly_the_maximum_number_of_events_is_taken() {
    let (mut ports, published) = Ports::with_run(RunStatus::InProgress).publishing();
    ports.sequencer.expect_append().times(1).returning(|request| {
        let events = request
            .events
            .iter()
            .zip(2..)
            .map(|(event, seq)| AppendedEvent {
                producer_id: event.producer_id.clone(),
                seq,
                duplicate: false,
            })
            .collect();
        Ok(AppendOutcome::Appended { events, run_status: RunStatus::InProgress })
    });
    let batch = (0..MAX_BATCH_EVENTS).map(|i| delta(&format!("e{i}"))).collect();
    let receipt = ports.build().ingest(&ctx(Role::Agent), RUN, batch).await.unwrap();
    assert_eq!(receipt.events.len(), MAX_BATCH_EVENTS);
    assert_eq!(published.lock().unwrap().len(), MAX_BATCH_EVENTS);
}

#[tokio::test]
async fn a_batch_resent_after_its_run_ended_gets_its_seqs_back_as_duplicates_without_a_status_round_trip() {
    // The run was cancelled after the batch was accepted; the agent missed the answer.
    let (mut ports, published) = Ports::with_run(RunStatus::Cancelled).publishing();
    ports.sequencer.expect_run_status().never();
    ports
        .sequencer
        .expect_append()
        .withf(|r| {
            r.status_change
                == Some(StatusChange { expected: RunStatus::Cancelled, new: RunStatus::Cancelled })
        })
        .times(1)
        .returning(|_| Ok(appended(&[("a", 5, true)], RunStatus::Cancelled)));
    ports.audit.expect_record().never();
    let receipt = ports.build().ingest(&ctx(Role::Agent), RUN, vec![delta("a")]).await.unwrap();
    assert_eq!(receipt.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
    assert_eq!((receipt.duplicates, receipt.run_status), (1, RunStatus::Cancelled));
    assert!(published.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_status_a_batch_leaves_is_the_next_batchs_starting_point_without_asking_the_sequencer() {
    let (mut ports, _) = Ports::with_run(RunStatus::Queued).publishing();
    ports.sequencer.expect_run_status().never();
    let mut calls = mockall::Sequence::new();
    ports
        .sequencer
        .expect_append()
        .withf(|r| {
            r.status_change == Some(StatusChange { expected: RunStatus::Queued, new: RunStatus::InProgress })
        })
        .times(1)
        .in_sequence(&mut calls)
        .returning(|_| Ok(appended(&[("a", 2, false)], RunStatus::InProgress)));
    ports
        .sequencer
        .expect_append()
        .withf(|r| {
            r.status_change
                == Some(StatusChange { expected: RunStatus::InProgress, new: RunStatus::InProgress })
        })
        .times(1)
        .in_sequence(&mut calls)
        .returning(|_| Ok(appended(&[("b", 3, false)], RunStatus::InProgress)));
    ports.audit.expect_record().times(1).returning(|_| Ok(()));
    let service = ports.build();
    service.ingest(&ctx(Role::Agent), RUN, vec![started("a")]).await.unwrap();
    let receipt = service.ingest(&ctx(Role::Agent), RUN, vec![delta("b")]).await.unwrap();
    assert_eq!(receipt.events[0].seq, 3);
}

#[tokio::test]
async fn accepted_events_and_duplicates_are_counted_apart() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (mut ports, _) = Ports::with_run(RunStatus::InProgress).publishing();
    ports.sequencer.expect_append().returning(|_| {
        Ok(appended(&[("a", 2, true), ("b", 3, true), ("c", 4, false)], RunStatus::InProgress))
    });
    ports.build().ingest(&ctx(Role::Agent), RUN, vec![delta("a"), delta("b"), delta("c")]).await.unwrap();
    // One snapshot: taking it resets the counters.
    let counters: Vec<(String, DebugValue)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
        .filter(|(name, _)| name.starts_with("sba_events_"))
        .collect();
    assert!(
        counters.contains(&("sba_events_accepted_total".to_owned(), DebugValue::Counter(1))),
        "{counters:?}"
    );
    assert!(
        counters.contains(&("sba_events_duplicates_total".to_owned(), DebugValue::Counter(2))),
        "{counters:?}"
    );
}

#[test]
fn debug_output_shows_how_many_runs_are_known() {
    let debug = format!("{:?}", Ports::with_run(RunStatus::Queued).build());
    assert!(debug.starts_with("IngestService") && debug.contains("runs_known: 0"), "{debug}");
}
