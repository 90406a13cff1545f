//! `UsageLedger::summary` against real databases: the same recorded usage gives the same
//! buckets, to the unit, on PostgreSQL and on SQLite. Each test gets its own fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails by panicking")]

use chrono::{DateTime, Utc};
use sba_application::ports::{RunEnding, UsageBucket, UsageGrouping, UsageRange};
use sba_domain::events::{EventData, EventKind, RunEvent};
use sba_domain::runs::NewRun;
use sba_domain::usage::Usage;
use sba_domain::{
    AgentName, AgentRun, AuditEntry, AuditEntryId, AuditOutcome, Metadata, RunId, TenantId, UserId,
};
use sba_infrastructure::internal_store::InternalStore;

use serde_json::json;
use uuid::Uuid;

sba_infrastructure::on_both_internal_stores!(
    usage_is_summed_per_utc_day_within_the_half_open_range,
    usage_is_summed_per_model_with_keys_in_byte_order,
    usage_is_summed_per_agent_counting_distinct_runs,
    usage_of_another_tenant_never_appears,
    an_empty_or_reversed_range_has_no_buckets,
    bounds_finer_than_a_microsecond_are_truncated,
);

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

/// `[2026-03-01, 2026-03-04)`: three UTC days.
fn march_1_to_4() -> UsageRange {
    UsageRange { from: at("2026-03-01T00:00:00Z"), to: at("2026-03-04T00:00:00Z") }
}

fn bucket(key: &str, input_tokens: u64, output_tokens: u64, cost_micros: u64, runs: u64) -> UsageBucket {
    UsageBucket { key: key.to_owned(), input_tokens, output_tokens, cost_micros, runs }
}

fn no_buckets() -> Vec<UsageBucket> {
    Vec::new()
}

fn audit(run: &AgentRun, action: &str, created_at: DateTime<Utc>) -> AuditEntry {
    AuditEntry {
        id: AuditEntryId::from_uuid(Uuid::now_v7()),
        tenant_id: run.tenant_id,
        actor: "user-1".into(),
        action: action.into(),
        resource_type: "run".into(),
        resource_id: Some(run.id.to_string()),
        outcome: AuditOutcome::Success,
        ip: None,
        request_id: None,
        client_request_id: None,
        created_at,
    }
}

async fn create_run(store: &InternalStore, tenant: TenantId, agent: &str) -> AgentRun {
    let run = AgentRun::new(
        RunId::from_uuid(Uuid::now_v7()),
        NewRun {
            tenant_id: tenant,
            user_id: UserId::parse("user-1").unwrap(),
            agent: AgentName::parse(agent).unwrap(),
            input: json!({"question": "usage"}),
            session_id: None,
            metadata: Metadata::default(),
        },
        at("2026-02-28T12:00:00Z"),
    );
    store.run_ledger().create_run(&run, &audit(&run, "run.create", run.created_at)).await.unwrap();
    run
}

/// Reports `(model, input, output, cost, when)` as `usage.reported` events at seq 2, 3, ….
async fn report(store: &InternalStore, run: &AgentRun, usage: &[(&str, u64, u64, u64, &str)]) {
    let events = (2..)
        .zip(usage)
        .map(|(seq, &(model, input_tokens, output_tokens, cost_micros, when))| RunEvent {
            run_id: run.id,
            tenant_id: run.tenant_id,
            seq,
            producer_id: None,
            data: EventData::parse(
                EventKind::UsageReported,
                json!({
                    "model": model,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cost_micros": cost_micros,
                }),
            )
            .unwrap(),
            created_at: at(when),
        })
        .collect();
    let outcome = store.run_ledger().apply_events(run.tenant_id, run.id, events).await.unwrap();
    assert_eq!(outcome.skipped, [], "every usage event is recorded");
}

/// The tenants of [`record_usage`]: `ours` has the usage the expectations describe, `theirs`
/// has usage in the same range that must never show in `ours`.
struct Tenants {
    ours: TenantId,
    theirs: TenantId,
}

/// Usage of two agents, three runs and three models around `[2026-03-01, 2026-03-04)`, plus
/// another tenant's usage in the same range.
///
/// | run | agent       | model    | input         | output | cost  | at                             |
/// |-----|-------------|----------|---------------|--------|-------|--------------------------------|
/// | 1   | support-bot | gpt-4o   | 100           | 10     | 1000  | 03-01 00:00:00 (= `from`)      |
/// | 1   | support-bot | claude-3 | 200           | 20     | 3000  | 03-01 12:30:00.5               |
/// | 1   | support-bot | gpt-4o   | 50            | 5      | 500   | 03-02 23:59:59.999999          |
/// | 2   | support-bot | gpt-4o   | 7             | 1      | 70    | 02-28 23:59:59.999999 (before) |
/// | 2   | support-bot | gpt-4o   | 300           | 30     | 4000  | 03-02 08:00:00                 |
/// | 3   | billing-bot | Llama-3  | 5_000_000_000 | 100    | 0     | 03-03 10:00:00                 |
/// | 3   | billing-bot | claude-3 | 10            | 2      | 150   | 03-04 00:00:00 (= `to`)        |
/// | 1   | support-bot | gpt-4o   | 40            | 4      | 400   | 03-03 18:00:00 (`end_run`)     |
async fn record_usage(store: &InternalStore) -> Tenants {
    let tenants =
        Tenants { ours: TenantId::from_uuid(Uuid::now_v7()), theirs: TenantId::from_uuid(Uuid::now_v7()) };

    let run1 = create_run(store, tenants.ours, "support-bot").await;
    report(
        store,
        &run1,
        &[
            ("gpt-4o", 100, 10, 1000, "2026-03-01T00:00:00Z"),
            ("claude-3", 200, 20, 3000, "2026-03-01T12:30:00.5Z"),
            ("gpt-4o", 50, 5, 500, "2026-03-02T23:59:59.999999Z"),
        ],
    )
    .await;
    let run2 = create_run(store, tenants.ours, "support-bot").await;
    report(
        store,
        &run2,
        &[
            ("gpt-4o", 7, 1, 70, "2026-02-28T23:59:59.999999Z"),
            ("gpt-4o", 300, 30, 4000, "2026-03-02T08:00:00Z"),
        ],
    )
    .await;
    let run3 = create_run(store, tenants.ours, "billing-bot").await;
    report(
        store,
        &run3,
        &[
            ("Llama-3", 5_000_000_000, 100, 0, "2026-03-03T10:00:00Z"),
            ("claude-3", 10, 2, 150, "2026-03-04T00:00:00Z"),
        ],
    )
    .await;
    // Usage given when a run ends is recorded by `end_run`, at the time of its audit entry.
    let ended_at = at("2026-03-03T18:00:00Z");
    let ending = RunEnding::Complete {
        output: json!("done"),
        usage: Some(Usage { model: "gpt-4o".into(), input_tokens: 40, output_tokens: 4, cost_micros: 400 }),
    };
    store
        .run_ledger()
        .end_run(run1.tenant_id, run1.id, ending, audit(&run1, "run.complete", ended_at))
        .await
        .unwrap();

    let foreign = create_run(store, tenants.theirs, "support-bot").await;
    report(store, &foreign, &[("gpt-4o", 999_999, 999, 99_999, "2026-03-01T09:00:00Z")]).await;
    tenants
}

async fn summary(
    store: &InternalStore,
    tenant: TenantId,
    range: UsageRange,
    group_by: UsageGrouping,
) -> Vec<UsageBucket> {
    store.usage_ledger().summary(tenant, range, group_by).await.unwrap()
}

/// What [`record_usage`] gives `ours` per day over [`march_1_to_4`].
fn per_day() -> Vec<UsageBucket> {
    vec![
        bucket("2026-03-01", 300, 30, 4000, 1),
        bucket("2026-03-02", 350, 35, 4500, 2),
        bucket("2026-03-03", 5_000_000_040, 104, 400, 2),
    ]
}

async fn usage_is_summed_per_utc_day_within_the_half_open_range(store: InternalStore) {
    let tenants = record_usage(&store).await;
    assert_eq!(summary(&store, tenants.ours, march_1_to_4(), UsageGrouping::Day).await, per_day());
}

async fn usage_is_summed_per_model_with_keys_in_byte_order(store: InternalStore) {
    let tenants = record_usage(&store).await;
    assert_eq!(
        summary(&store, tenants.ours, march_1_to_4(), UsageGrouping::Model).await,
        [
            bucket("Llama-3", 5_000_000_000, 100, 0, 1),
            bucket("claude-3", 200, 20, 3000, 1),
            bucket("gpt-4o", 490, 49, 5900, 2),
        ]
    );
}

async fn usage_is_summed_per_agent_counting_distinct_runs(store: InternalStore) {
    let tenants = record_usage(&store).await;
    assert_eq!(
        summary(&store, tenants.ours, march_1_to_4(), UsageGrouping::Agent).await,
        [bucket("billing-bot", 5_000_000_000, 100, 0, 1), bucket("support-bot", 690, 69, 8900, 2)]
    );
}

async fn usage_of_another_tenant_never_appears(store: InternalStore) {
    let tenants = record_usage(&store).await;
    let theirs = |key: &str| vec![bucket(key, 999_999, 999, 99_999, 1)];
    let expected = [
        (UsageGrouping::Day, theirs("2026-03-01")),
        (UsageGrouping::Model, theirs("gpt-4o")),
        (UsageGrouping::Agent, theirs("support-bot")),
    ];
    for (group_by, buckets) in expected {
        assert_eq!(summary(&store, tenants.theirs, march_1_to_4(), group_by).await, buckets, "{group_by:?}");
    }
    let stranger = TenantId::from_uuid(Uuid::now_v7());
    for group_by in UsageGrouping::ALL {
        assert_eq!(summary(&store, stranger, march_1_to_4(), group_by).await, no_buckets(), "{group_by:?}");
    }
}

async fn an_empty_or_reversed_range_has_no_buckets(store: InternalStore) {
    let tenants = record_usage(&store).await;
    let instant = at("2026-03-02T08:00:00Z");
    let ranges = [
        UsageRange { from: instant, to: instant },
        UsageRange { from: at("2026-03-04T00:00:00Z"), to: at("2026-03-01T00:00:00Z") },
        UsageRange { from: at("2025-01-01T00:00:00Z"), to: at("2026-02-28T00:00:00Z") },
    ];
    for range in ranges {
        for group_by in UsageGrouping::ALL {
            assert_eq!(
                summary(&store, tenants.ours, range, group_by).await,
                no_buckets(),
                "{range:?} {group_by:?}"
            );
        }
    }
}

async fn bounds_finer_than_a_microsecond_are_truncated(store: InternalStore) {
    let tenants = record_usage(&store).await;
    // Truncated, `from` is 03-01 00:00:00 (a record there counts) and `to` is 03-04 00:00:00
    // (a record there does not), exactly as on a range without the extra digits.
    let range =
        UsageRange { from: at("2026-03-01T00:00:00.000000900Z"), to: at("2026-03-04T00:00:00.000000500Z") };
    assert_eq!(summary(&store, tenants.ours, range, UsageGrouping::Day).await, per_day());
}
