//! The sea-orm adapters against real databases: the private PostgreSQL started by
//! `scripts/test.sh`, and SQLite files. Each test gets its own fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails by panicking")]

use chrono::{SubsecRound as _, Utc};
use sba_application::pagination::{Cursor, PageRequest};
use sba_application::ports::{
    HealthRecord, LedgerError, RepositoryError, Reservation, RunEnding, RunFilter, SkippedEvent,
    StoredResponse, UsageGrouping, UsageRange,
};
use sba_domain::events::{EventData, EventKind, RunEvent};
use sba_domain::runs::NewRun;
use sba_domain::runs::progress::ApplyError;
use sba_domain::steps::{StepStatus, ToolCallStatus};
use sba_domain::{
    AgentName, AgentRun, AuditEntry, AuditEntryId, AuditOutcome, Metadata, RunId, RunStatus, SessionId,
    TenantId, UserId,
};
use sba_infrastructure::internal_store::InternalStore;

use serde_json::json;
use uuid::Uuid;

sba_infrastructure::on_both_internal_stores!(
    created_run_reads_back_identically_with_its_created_event,
    run_of_another_tenant_is_invisible_everywhere,
    creating_a_duplicate_run_fails_and_writes_nothing,
    a_full_batch_creates_steps_tool_calls_usage_and_completes_the_run,
    reapplied_events_are_skipped_as_duplicates,
    an_illegal_transition_is_stored_and_skipped_and_the_rest_applied,
    a_delta_for_an_unknown_step_is_stored_once_and_skipped,
    work_reported_after_the_run_ended_is_stored_and_skipped,
    a_batch_mixing_good_and_contradicting_events_applies_the_good_ones,
    a_gap_in_seq_rejects_the_whole_batch,
    cancel_ends_open_steps_and_appends_run_cancelled_at_the_next_seq,
    ending_an_ended_run_is_an_invalid_transition_and_writes_nothing,
    steps_and_events_page_by_seq_without_gaps_or_duplicates,
    audit_entries_are_stored,
    audit_entries_keep_the_client_request_id_beside_the_server_one,
    migrations_are_reversible_and_report_status,
    overdue_runs_are_listed_across_tenants_oldest_first_without_ended_ones,
    runs_list_newest_first_filtered_and_paged_stably_under_inserts,
    audit_entries_list_newest_first_per_tenant,
    health_history_lists_newest_first_and_keeps_causes,
    idempotency_keys_reserve_once_complete_release_and_expire,
);

fn new_run(tenant: TenantId) -> AgentRun {
    let metadata = Metadata::parse(json!({"channel": "web", "n": 3}).as_object().cloned().unwrap()).unwrap();
    AgentRun::new(
        RunId::from_uuid(Uuid::now_v7()),
        NewRun {
            tenant_id: tenant,
            user_id: UserId::parse("user-1").unwrap(),
            agent: AgentName::parse("support-bot").unwrap(),
            input: json!({"question": "¿qué tal?", "list": [1, 2.5, null]}),
            session_id: Some(SessionId::from_uuid(Uuid::now_v7())),
            metadata,
        },
        Utc::now().trunc_subsecs(6),
    )
}

fn tenant() -> TenantId {
    TenantId::from_uuid(Uuid::now_v7())
}

fn audit_for(run: &AgentRun, action: &str) -> AuditEntry {
    AuditEntry {
        id: AuditEntryId::from_uuid(Uuid::now_v7()),
        tenant_id: run.tenant_id,
        actor: "user-1".into(),
        action: action.into(),
        resource_type: "run".into(),
        resource_id: Some(run.id.to_string()),
        outcome: AuditOutcome::Success,
        ip: Some("2001:db8::1".into()),
        request_id: Some("req-1".into()),
        client_request_id: None,
        created_at: Utc::now().trunc_subsecs(6),
    }
}

async fn create(store: &InternalStore, run: &AgentRun) {
    store.run_ledger().create_run(run, &audit_for(run, "run.create")).await.unwrap();
}

fn ev(run: &AgentRun, seq: u64, kind: EventKind, data: serde_json::Value) -> RunEvent {
    RunEvent {
        run_id: run.id,
        tenant_id: run.tenant_id,
        seq,
        producer_id: Some(format!("evt-{seq}")),
        data: EventData::parse(kind, data).unwrap(),
        created_at: Utc::now().trunc_subsecs(6),
    }
}

/// seq 2..: a tool-calls step with one call, a message step, usage, completion.
fn full_batch(run: &AgentRun) -> Vec<RunEvent> {
    vec![
        ev(run, 2, EventKind::RunStarted, json!({})),
        ev(run, 3, EventKind::StepCreated, json!({"step_id": "s1", "type": "tool_calls"})),
        ev(
            run,
            4,
            EventKind::ToolCallStarted,
            json!({"tool_call_id": "t1", "step_id": "s1", "name": "search", "arguments": {"q": "rust"}}),
        ),
        ev(
            run,
            5,
            EventKind::ToolCallCompleted,
            json!({"tool_call_id": "t1", "output": {"hits": 3}, "status": "completed"}),
        ),
        ev(run, 6, EventKind::StepCompleted, json!({"step_id": "s1"})),
        ev(run, 7, EventKind::StepCreated, json!({"step_id": "s2", "type": "message_creation"})),
        ev(run, 8, EventKind::StepDelta, json!({"step_id": "s2", "text": "Hello"})),
        ev(run, 9, EventKind::StepCompleted, json!({"step_id": "s2"})),
        ev(
            run,
            10,
            EventKind::UsageReported,
            json!({"model": "gpt-x", "input_tokens": 120, "output_tokens": 30, "cost_micros": 4500}),
        ),
        ev(run, 11, EventKind::RunCompleted, json!({"output": "Hello"})),
    ]
}

async fn event_seqs(store: &InternalStore, run: &AgentRun) -> Vec<u64> {
    let page = store.event_log().list_after(run.tenant_id, run.id, 0, 100).await.unwrap();
    page.items.iter().map(|e| e.seq).collect()
}

async fn step_count(store: &InternalStore, run: &AgentRun) -> usize {
    store.step_repository().list(run.tenant_id, run.id, PageRequest::first(100)).await.unwrap().items.len()
}

/// `(model, input tokens)` recorded for the run's tenant around now.
async fn usage_by_model(store: &InternalStore, run: &AgentRun) -> Vec<(String, u64)> {
    let now = Utc::now();
    let range = UsageRange::new(now - chrono::Duration::hours(1), now + chrono::Duration::hours(1)).unwrap();
    let buckets = store.usage_ledger().summary(run.tenant_id, range, UsageGrouping::Model).await.unwrap();
    buckets.into_iter().map(|b| (b.key, b.input_tokens)).collect()
}

fn skipped(seq: u64, kind: EventKind, reason: &str) -> SkippedEvent {
    SkippedEvent { seq, kind, reason: reason.into() }
}

fn usage(run: &AgentRun, seq: u64, model: &str, input_tokens: u64) -> RunEvent {
    ev(
        run,
        seq,
        EventKind::UsageReported,
        json!({"model": model, "input_tokens": input_tokens, "output_tokens": 1, "cost_micros": 1}),
    )
}

async fn created_run_reads_back_identically_with_its_created_event(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    assert_eq!(store.run_repository().get(run.tenant_id, run.id).await.unwrap(), Some(run.clone()));
    let events = store.event_log().list_after(run.tenant_id, run.id, 0, 10).await.unwrap();
    assert_eq!(events.items.len(), 1);
    assert_eq!(events.items[0].seq, 1);
    assert_eq!(events.items[0].kind(), EventKind::RunCreated);
    assert_eq!(events.next, None);
}

async fn run_of_another_tenant_is_invisible_everywhere(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    store.run_ledger().apply_events(run.tenant_id, run.id, full_batch(&run)).await.unwrap();
    let stranger = tenant();
    assert_eq!(store.run_repository().get(stranger, run.id).await.unwrap(), None);
    assert!(store.event_log().list_after(stranger, run.id, 0, 100).await.unwrap().items.is_empty());
    assert_eq!(store.event_log().last_seq(stranger, run.id).await.unwrap(), None);
    assert_eq!(store.event_log().last_seq(run.tenant_id, run.id).await.unwrap(), Some(11));
    assert!(
        store
            .step_repository()
            .list(stranger, run.id, PageRequest::first(100))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        store
            .tool_call_repository()
            .list(stranger, run.id, PageRequest::first(100))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let mut foreign_audit = audit_for(&run, "run.cancel");
    foreign_audit.tenant_id = stranger;
    let err =
        store.run_ledger().end_run(stranger, run.id, RunEnding::Cancel, foreign_audit).await.unwrap_err();
    assert!(matches!(err, LedgerError::NotFound), "{err:?}");
    let err = store.run_ledger().apply_events(stranger, run.id, vec![]).await.unwrap_err();
    assert!(matches!(err, LedgerError::NotFound), "{err:?}");
}

async fn creating_a_duplicate_run_fails_and_writes_nothing(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    let err = store.run_ledger().create_run(&run, &audit_for(&run, "run.create")).await.unwrap_err();
    assert!(matches!(err, LedgerError::Unexpected(_)), "{err:?}");
    assert_eq!(event_seqs(&store, &run).await, [1]);
}

async fn a_full_batch_creates_steps_tool_calls_usage_and_completes_the_run(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    let outcome = store.run_ledger().apply_events(run.tenant_id, run.id, full_batch(&run)).await.unwrap();
    assert_eq!((outcome.applied, outcome.duplicates, outcome.run_status), (10, 0, RunStatus::Completed));
    assert_eq!(outcome.skipped, []);

    let stored = store.run_repository().get(run.tenant_id, run.id).await.unwrap().unwrap();
    assert_eq!(stored.status(), RunStatus::Completed);
    assert_eq!(stored.output, Some(json!("Hello")));
    assert!(stored.started_at.is_some() && stored.completed_at.is_some());

    let steps =
        store.step_repository().list(run.tenant_id, run.id, PageRequest::first(100)).await.unwrap().items;
    let summary: Vec<_> = steps.iter().map(|s| (s.step_id.as_str().to_owned(), s.status, s.seq)).collect();
    assert_eq!(
        summary,
        [("s1".to_owned(), StepStatus::Completed, 3), ("s2".to_owned(), StepStatus::Completed, 7)]
    );
    let calls = store
        .tool_call_repository()
        .list(run.tenant_id, run.id, PageRequest::first(100))
        .await
        .unwrap()
        .items;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].status, ToolCallStatus::Completed);
    assert_eq!(calls[0].arguments, json!({"q": "rust"}));
    assert_eq!(calls[0].output, Some(json!({"hits": 3})));
    assert!(calls[0].completed_at.is_some());
    assert_eq!(event_seqs(&store, &run).await, (1..=11).collect::<Vec<_>>());
}

async fn reapplied_events_are_skipped_as_duplicates(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    let batch = full_batch(&run);
    store.run_ledger().apply_events(run.tenant_id, run.id, batch[..5].to_vec()).await.unwrap();
    let outcome = store.run_ledger().apply_events(run.tenant_id, run.id, batch.clone()).await.unwrap();
    assert_eq!((outcome.applied, outcome.duplicates), (5, 5));
    let again = store.run_ledger().apply_events(run.tenant_id, run.id, batch).await.unwrap();
    assert_eq!((again.applied, again.duplicates, again.run_status), (0, 10, RunStatus::Completed));
    assert_eq!(event_seqs(&store, &run).await, (1..=11).collect::<Vec<_>>());
    assert_eq!(step_count(&store, &run).await, 2);
}

async fn an_illegal_transition_is_stored_and_skipped_and_the_rest_applied(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    let batch = vec![
        ev(&run, 2, EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
        usage(&run, 3, "m", 1),
        ev(&run, 4, EventKind::RunCompleted, json!({"output": 1})),
        ev(&run, 5, EventKind::RunStarted, json!({})),
    ];
    let outcome = store.run_ledger().apply_events(run.tenant_id, run.id, batch).await.unwrap();
    assert_eq!((outcome.applied, outcome.run_status), (4, RunStatus::Completed));
    assert_eq!(
        outcome.skipped,
        [skipped(5, EventKind::RunStarted, "a run cannot go from completed to in_progress")]
    );
    assert_eq!(event_seqs(&store, &run).await, [1, 2, 3, 4, 5], "the refused event is stored too");
    assert_eq!(step_count(&store, &run).await, 1);
    let stored = store.run_repository().get(run.tenant_id, run.id).await.unwrap().unwrap();
    assert_eq!((stored.status(), stored.output), (RunStatus::Completed, Some(json!(1))));
}

async fn a_delta_for_an_unknown_step_is_stored_once_and_skipped(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    let batch = vec![ev(&run, 2, EventKind::StepDelta, json!({"step_id": "nope", "text": "lost?"}))];
    let outcome = store.run_ledger().apply_events(run.tenant_id, run.id, batch.clone()).await.unwrap();
    assert_eq!((outcome.applied, outcome.duplicates, outcome.run_status), (1, 0, RunStatus::Queued));
    assert_eq!(outcome.skipped, [skipped(2, EventKind::StepDelta, "step `nope` does not exist")]);

    let events = store.event_log().list_after(run.tenant_id, run.id, 1, 10).await.unwrap().items;
    assert_eq!(events, batch, "agent_events holds the event as sent");
    assert_eq!(step_count(&store, &run).await, 0, "no step row was made up");
    assert_eq!(
        store.run_repository().get(run.tenant_id, run.id).await.unwrap(),
        Some(run.clone()),
        "the skipped event did not start the run"
    );

    let again = store.run_ledger().apply_events(run.tenant_id, run.id, batch).await.unwrap();
    assert_eq!(
        (again.applied, again.duplicates, again.skipped),
        (0, 1, vec![]),
        "a redelivery is a duplicate"
    );
    assert_eq!(event_seqs(&store, &run).await, [1, 2]);
}

async fn work_reported_after_the_run_ended_is_stored_and_skipped(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    let ended = store
        .run_ledger()
        .end_run(run.tenant_id, run.id, RunEnding::Cancel, audit_for(&run, "run.cancel"))
        .await
        .unwrap();
    let batch = vec![
        ev(&run, 3, EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
        usage(&run, 4, "m", 10),
        ev(&run, 5, EventKind::RunCompleted, json!({"output": "late"})),
    ];
    let outcome = store.run_ledger().apply_events(run.tenant_id, run.id, batch).await.unwrap();
    assert_eq!((outcome.applied, outcome.run_status), (3, RunStatus::Cancelled));
    assert_eq!(
        outcome.skipped,
        [
            skipped(3, EventKind::StepCreated, "a run cannot go from cancelled to in_progress"),
            skipped(4, EventKind::UsageReported, "a run cannot go from cancelled to in_progress"),
            skipped(5, EventKind::RunCompleted, "a run cannot go from cancelled to completed"),
        ]
    );
    assert_eq!(event_seqs(&store, &run).await, [1, 2, 3, 4, 5]);
    assert_eq!(step_count(&store, &run).await, 0);
    assert_eq!(usage_by_model(&store, &run).await, [], "no usage was recorded on the ended run");
    assert_eq!(
        store.run_repository().get(run.tenant_id, run.id).await.unwrap(),
        Some(ended),
        "the run is as it ended"
    );
}

async fn a_batch_mixing_good_and_contradicting_events_applies_the_good_ones(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    let completed = |seq, call: &str, status: &str| {
        ev(
            &run,
            seq,
            EventKind::ToolCallCompleted,
            json!({"tool_call_id": call, "output": seq, "status": status}),
        )
    };
    let batch = vec![
        ev(&run, 2, EventKind::StepCreated, json!({"step_id": "s1", "type": "tool_calls"})),
        completed(3, "t9", "completed"),
        ev(
            &run,
            4,
            EventKind::ToolCallStarted,
            json!({"tool_call_id": "t1", "step_id": "s1", "name": "search"}),
        ),
        ev(&run, 5, EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
        completed(6, "t1", "completed"),
        completed(7, "t1", "failed"),
        ev(&run, 8, EventKind::StepCompleted, json!({"step_id": "s1"})),
        ev(&run, 9, EventKind::StepDelta, json!({"step_id": "s1", "text": "late"})),
        usage(&run, 10, "gpt-x", 42),
        ev(&run, 11, EventKind::RunStarted, json!({})),
        ev(&run, 12, EventKind::RunCompleted, json!({"output": "ok"})),
    ];
    let outcome = store.run_ledger().apply_events(run.tenant_id, run.id, batch).await.unwrap();
    assert_eq!((outcome.applied, outcome.run_status), (11, RunStatus::Completed));
    assert_eq!(
        outcome.skipped,
        [
            skipped(3, EventKind::ToolCallCompleted, "tool call `t9` was never started"),
            skipped(5, EventKind::StepCreated, "step `s1` already exists"),
            skipped(7, EventKind::ToolCallCompleted, "tool call `t1` has already completed"),
            skipped(9, EventKind::StepDelta, "step `s1` is already completed"),
            skipped(11, EventKind::RunStarted, "a run cannot go from in_progress to in_progress"),
        ]
    );
    assert_eq!(event_seqs(&store, &run).await, (1..=12).collect::<Vec<_>>());

    let steps =
        store.step_repository().list(run.tenant_id, run.id, PageRequest::first(10)).await.unwrap().items;
    let steps: Vec<_> =
        steps.iter().map(|s| (s.step_id.as_str().to_owned(), s.step_type.as_str(), s.status)).collect();
    assert_eq!(steps, [("s1".to_owned(), "tool_calls", StepStatus::Completed)]);
    let calls =
        store.tool_call_repository().list(run.tenant_id, run.id, PageRequest::first(10)).await.unwrap().items;
    let calls: Vec<_> =
        calls.iter().map(|c| (c.tool_call_id.as_str().to_owned(), c.status, c.output.clone())).collect();
    assert_eq!(
        calls,
        [("t1".to_owned(), ToolCallStatus::Completed, Some(json!(6)))],
        "the second completion changed nothing"
    );
    assert_eq!(usage_by_model(&store, &run).await, [("gpt-x".to_owned(), 42)]);
    let stored = store.run_repository().get(run.tenant_id, run.id).await.unwrap().unwrap();
    assert_eq!((stored.status(), stored.output), (RunStatus::Completed, Some(json!("ok"))));
}

async fn a_gap_in_seq_rejects_the_whole_batch(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    let batch = vec![
        ev(&run, 2, EventKind::RunStarted, json!({})),
        ev(&run, 3, EventKind::StepDelta, json!({"step_id": "nope", "text": "x"})),
        ev(&run, 5, EventKind::RunCompleted, json!({})),
    ];
    let err = store.run_ledger().apply_events(run.tenant_id, run.id, batch).await.unwrap_err();
    assert!(matches!(err, LedgerError::Rejected(ApplyError::Gap { expected: 4, got: 5, .. })), "{err:?}");
    assert_eq!(event_seqs(&store, &run).await, [1], "nothing of the batch was stored");
    assert_eq!(
        store.run_repository().get(run.tenant_id, run.id).await.unwrap().unwrap().status(),
        RunStatus::Queued
    );
}

async fn cancel_ends_open_steps_and_appends_run_cancelled_at_the_next_seq(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    let batch =
        vec![ev(&run, 2, EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"}))];
    store.run_ledger().apply_events(run.tenant_id, run.id, batch).await.unwrap();
    let cancelled = store
        .run_ledger()
        .end_run(run.tenant_id, run.id, RunEnding::Cancel, audit_for(&run, "run.cancel"))
        .await
        .unwrap();
    assert_eq!(cancelled.status(), RunStatus::Cancelled);
    assert_eq!(store.run_repository().get(run.tenant_id, run.id).await.unwrap(), Some(cancelled));
    let events = store.event_log().list_after(run.tenant_id, run.id, 2, 10).await.unwrap().items;
    assert_eq!(events.iter().map(|e| (e.seq, e.kind())).collect::<Vec<_>>(), [(3, EventKind::RunCancelled)]);
    let steps =
        store.step_repository().list(run.tenant_id, run.id, PageRequest::first(10)).await.unwrap().items;
    assert_eq!(steps[0].status, StepStatus::Cancelled);
}

async fn ending_an_ended_run_is_an_invalid_transition_and_writes_nothing(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    let ledger = store.run_ledger();
    ledger.end_run(run.tenant_id, run.id, RunEnding::Cancel, audit_for(&run, "run.cancel")).await.unwrap();
    let complete = RunEnding::Complete { output: json!(1), usage: None };
    let err =
        ledger.end_run(run.tenant_id, run.id, complete, audit_for(&run, "run.complete")).await.unwrap_err();
    assert!(matches!(err, LedgerError::InvalidTransition(_)), "{err:?}");
    assert_eq!(event_seqs(&store, &run).await, [1, 2]);
}

async fn steps_and_events_page_by_seq_without_gaps_or_duplicates(store: InternalStore) {
    let run = new_run(tenant());
    create(&store, &run).await;
    let batch: Vec<_> = (0..7_u64)
        .map(|i| {
            ev(
                &run,
                i + 2,
                EventKind::StepCreated,
                json!({"step_id": format!("s{i}"), "type": "message_creation"}),
            )
        })
        .collect();
    store.run_ledger().apply_events(run.tenant_id, run.id, batch).await.unwrap();

    let mut seen = Vec::new();
    let mut page = PageRequest::first(3);
    loop {
        let result = store.step_repository().list(run.tenant_id, run.id, page).await.unwrap();
        seen.extend(result.items.iter().map(|s| s.step_id.as_str().to_owned()));
        match result.next {
            Some(cursor) => page = PageRequest { limit: 3, after: Some(cursor) },
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("s{i}")).collect::<Vec<_>>());

    let first = store.event_log().list_after(run.tenant_id, run.id, 0, 5).await.unwrap();
    assert_eq!(first.next, Some(Cursor::Seq(5)));
    let rest = store.event_log().list_after(run.tenant_id, run.id, 5, 5).await.unwrap();
    assert_eq!(rest.items.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8]);
    assert_eq!(rest.next, None);
}

async fn audit_entries_are_stored(store: InternalStore) {
    let run = new_run(tenant());
    let entry = audit_for(&run, "run.cancel");
    let audit = store.audit_log();
    audit.record(&entry).await.unwrap();
    let again = audit.record(&entry).await.unwrap_err();
    assert!(matches!(again, RepositoryError::Conflict(_)), "an entry id is written once: {again:?}");
}

async fn audit_entries_keep_the_client_request_id_beside_the_server_one(store: InternalStore) {
    let run = new_run(tenant());
    let entry = AuditEntry { client_request_id: Some("client-7".into()), ..audit_for(&run, "run.cancel") };
    let audit = store.audit_log();
    audit.record(&entry).await.unwrap();
    let without =
        AuditEntry { id: AuditEntryId::from_uuid(Uuid::now_v7()), client_request_id: None, ..entry.clone() };
    audit.record(&without).await.unwrap();
    let page = audit.list(run.tenant_id, PageRequest::first(10)).await.unwrap();
    let mut stored: Vec<_> =
        page.items.iter().map(|e| (e.request_id.clone(), e.client_request_id.clone())).collect();
    stored.sort();
    assert_eq!(
        stored,
        [(Some("req-1".to_owned()), None), (Some("req-1".to_owned()), Some("client-7".to_owned()))]
    );
}

async fn migrations_are_reversible_and_report_status(store: InternalStore) {
    let applied = store.migration_status().await.unwrap();
    assert!(applied.len() >= 2 && applied.iter().all(|m| m.applied), "{applied:?}");

    store.migrate_down(u32::try_from(applied.len()).unwrap()).await.unwrap();
    let reverted = store.migration_status().await.unwrap();
    assert!(reverted.iter().all(|m| !m.applied), "{reverted:?}");
    let err = store.run_repository().get(tenant(), RunId::from_uuid(Uuid::now_v7())).await.unwrap_err();
    assert!(matches!(err, RepositoryError::Unexpected(_)), "tables are gone after down: {err:?}");

    store.migrate_up().await.unwrap();
    let run = new_run(tenant());
    create(&store, &run).await;
    store.run_ledger().apply_events(run.tenant_id, run.id, full_batch(&run)).await.unwrap();
    assert!(store.migration_status().await.unwrap().iter().all(|m| m.applied));
}

async fn overdue_runs_are_listed_across_tenants_oldest_first_without_ended_ones(store: InternalStore) {
    let base = Utc::now().trunc_subsecs(6) - chrono::Duration::hours(2);
    let mut created = Vec::new();
    for minutes in [30, 10, 20, 90] {
        let mut run = new_run(tenant());
        run.created_at = base + chrono::Duration::minutes(minutes);
        create(&store, &run).await;
        created.push(run);
    }
    // An ended run is never overdue, however old.
    let ended = &created[1];
    store
        .run_ledger()
        .end_run(ended.tenant_id, ended.id, RunEnding::Cancel, audit_for(ended, "run.cancel"))
        .await
        .unwrap();

    let cutoff = base + chrono::Duration::minutes(60);
    let runs = store.run_repository();
    let overdue = runs.list_overdue(cutoff, 10).await.unwrap();
    let ids: Vec<_> = overdue.iter().map(|r| r.id).collect();
    assert_eq!(ids, [created[2].id, created[0].id]);
    assert_eq!(runs.list_overdue(cutoff, 1).await.unwrap().len(), 1, "the limit is honoured");
}

async fn runs_list_newest_first_filtered_and_paged_stably_under_inserts(store: InternalStore) {
    let owner = tenant();
    let base = Utc::now().trunc_subsecs(6) - chrono::Duration::hours(1);
    let session = SessionId::from_uuid(Uuid::now_v7());
    let mut created = Vec::new();
    for i in 0..7_i64 {
        let mut run = new_run(owner);
        // Two runs share each instant, so the id must break ties.
        run.created_at = base + chrono::Duration::seconds(i / 2);
        run.agent = AgentName::parse(if i % 2 == 0 { "even" } else { "odd" }).unwrap();
        run.session_id = (i < 3).then_some(session);
        create(&store, &run).await;
        created.push(run);
    }
    create(&store, &new_run(tenant())).await;
    let cancelled = &created[6];
    store
        .run_ledger()
        .end_run(owner, cancelled.id, RunEnding::Cancel, audit_for(cancelled, "run.cancel"))
        .await
        .unwrap();

    let runs = store.run_repository();
    let mut expected: Vec<_> = created.iter().map(|r| (r.created_at, r.id)).collect();
    expected.sort_by(|a, b| b.cmp(a));
    let expected: Vec<RunId> = expected.into_iter().map(|(_, id)| id).collect();

    let mut seen = Vec::new();
    let mut page = PageRequest::first(3);
    let mut pages = 0;
    loop {
        let result = runs.list(owner, RunFilter::default(), page).await.unwrap();
        seen.extend(result.items.iter().map(|r| r.id));
        pages += 1;
        if pages == 1 {
            // A run created while the client pages sorts before the cursor: it never
            // shifts later pages.
            create(&store, &new_run(owner)).await;
        }
        match result.next {
            Some(cursor) => page = PageRequest { limit: 3, after: Some(cursor) },
            None => break,
        }
    }
    assert_eq!(seen, expected, "every run once, newest first, no gaps");
    assert_eq!(pages, 3);

    let by_agent = RunFilter { agent: Some(AgentName::parse("odd").unwrap()), ..RunFilter::default() };
    assert_eq!(runs.list(owner, by_agent, PageRequest::first(100)).await.unwrap().items.len(), 3);
    let by_status = RunFilter { status: Some(RunStatus::Cancelled), ..RunFilter::default() };
    let cancelled_only = runs.list(owner, by_status, PageRequest::first(100)).await.unwrap().items;
    assert_eq!(cancelled_only.iter().map(|r| r.id).collect::<Vec<_>>(), [cancelled.id]);
    let by_session = RunFilter { session_id: Some(session), ..RunFilter::default() };
    assert_eq!(runs.list(owner, by_session, PageRequest::first(100)).await.unwrap().items.len(), 3);
}

async fn audit_entries_list_newest_first_per_tenant(store: InternalStore) {
    let run = new_run(tenant());
    let audit = store.audit_log();
    let base = Utc::now().trunc_subsecs(6);
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut entry = audit_for(&run, "run.cancel");
        entry.created_at = base + chrono::Duration::seconds(i);
        audit.record(&entry).await.unwrap();
        ids.push(entry.id);
    }
    let mut other = audit_for(&run, "run.cancel");
    other.tenant_id = tenant();
    audit.record(&other).await.unwrap();

    let first = audit.list(run.tenant_id, PageRequest::first(2)).await.unwrap();
    let rest = audit.list(run.tenant_id, PageRequest { limit: 10, after: first.next }).await.unwrap();
    let listed: Vec<_> = first.items.iter().chain(&rest.items).map(|e| e.id).collect();
    ids.reverse();
    assert_eq!(listed, ids);
    assert_eq!(rest.next, None);
    assert_eq!(first.items[0].ip.as_deref(), Some("2001:db8::1"));
}

async fn health_history_lists_newest_first_and_keeps_causes(store: InternalStore) {
    let log = store.health_log();
    let base = Utc::now().trunc_subsecs(6);
    let records: Vec<_> = (0..3_i64)
        .map(|i| HealthRecord {
            id: Uuid::now_v7(),
            component: if i == 1 { "redis".into() } else { "database".into() },
            up: i != 1,
            latency_ms: u64::try_from(i).unwrap() * 10,
            detail: (i == 1).then(|| "connection refused".to_owned()),
            checked_at: base + chrono::Duration::seconds(i),
        })
        .collect();
    log.record(&records).await.unwrap();
    let first = log.list(PageRequest::first(2)).await.unwrap();
    let rest = log.list(PageRequest { limit: 2, after: first.next }).await.unwrap();
    let listed: Vec<_> = first.items.into_iter().chain(rest.items).collect();
    let mut expected = records;
    expected.reverse();
    assert_eq!(listed, expected);
}

async fn idempotency_keys_reserve_once_complete_release_and_expire(store: InternalStore) {
    let keys = store.idempotency_store();
    let owner = tenant();
    let user = UserId::parse("alice").unwrap();
    let now = Utc::now().trunc_subsecs(6);
    let later = now + chrono::Duration::hours(24);
    assert_eq!(keys.reserve(owner, &user, "k", "h1", now, later).await.unwrap(), Reservation::Reserved);
    assert_eq!(
        keys.reserve(owner, &user, "k", "h2", now, later).await.unwrap(),
        Reservation::InProgress { request_hash: "h1".into() }
    );
    // Another tenant, or another user, has its own keys.
    assert_eq!(keys.reserve(tenant(), &user, "k", "h1", now, later).await.unwrap(), Reservation::Reserved);
    let bob = UserId::parse("bob").unwrap();
    assert_eq!(keys.reserve(owner, &bob, "k", "h1", now, later).await.unwrap(), Reservation::Reserved);

    let response = StoredResponse { status: 201, body: json!({"id": "r1"}) };
    keys.complete(owner, &user, "k", &response).await.unwrap();
    assert_eq!(
        keys.reserve(owner, &user, "k", "h1", now, later).await.unwrap(),
        Reservation::Completed { request_hash: "h1".into(), response: response.clone() }
    );
    let again = keys.complete(owner, &user, "k", &response).await.unwrap_err();
    assert!(matches!(again, RepositoryError::NotFound), "a completed key is not completed twice: {again:?}");

    keys.release(owner, &bob, "k").await.unwrap();
    assert_eq!(keys.reserve(owner, &bob, "k", "h9", now, later).await.unwrap(), Reservation::Reserved);

    // Once expired, a key is free again and is purged.
    let after = later + chrono::Duration::seconds(1);
    assert_eq!(
        keys.reserve(owner, &user, "k", "h3", after, after + chrono::Duration::hours(1)).await.unwrap(),
        Reservation::Reserved
    );
    assert_eq!(keys.purge_expired(after).await.unwrap(), 2, "the other tenant's and bob's keys expired");
}
