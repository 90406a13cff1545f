//! The sea-orm adapters against real databases: the private PostgreSQL started by
//! `scripts/test.sh`, and SQLite files. Each test gets its own fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails by panicking")]

use chrono::{SubsecRound as _, Utc};
use sba_application::ports::RepositoryError;
use sba_domain::runs::NewRun;
use sba_domain::{
    AgentName, AgentRun, AuditEntry, AuditEntryId, AuditOutcome, Metadata, RunError, RunId, RunStatus,
    SessionId, TenantId, UserId,
};
use sba_infrastructure::postgres::InternalStore;
use sba_infrastructure::postgres::test_support::{fresh_postgres_store, fresh_sqlite_store};
use serde_json::json;
use uuid::Uuid;

/// Runs one async test body against PostgreSQL and against SQLite.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _) = super::fresh_postgres_store().await;
                    super::$name(store).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _) = super::fresh_sqlite_store().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

on_both_stores!(
    inserted_run_reads_back_identically,
    run_of_another_tenant_is_invisible,
    duplicate_run_id_is_a_conflict,
    lifecycle_update_is_a_compare_and_set_on_status,
    lifecycle_update_of_a_missing_run_is_not_found,
    audit_entries_are_stored,
    migrations_are_reversible_and_report_status,
    overdue_runs_are_listed_across_tenants_oldest_first_without_ended_ones,
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

async fn inserted_run_reads_back_identically(store: InternalStore) {
    let runs = store.run_repository();
    let run = new_run(tenant());
    runs.insert(&run).await.unwrap();
    assert_eq!(runs.get(run.tenant_id, run.id).await.unwrap(), Some(run));
}

async fn run_of_another_tenant_is_invisible(store: InternalStore) {
    let runs = store.run_repository();
    let run = new_run(tenant());
    runs.insert(&run).await.unwrap();
    assert_eq!(runs.get(tenant(), run.id).await.unwrap(), None);

    let mut foreign = run.clone();
    foreign.tenant_id = tenant();
    foreign.cancel(Utc::now()).unwrap();
    let err = runs.update_lifecycle(&foreign, RunStatus::Queued).await.unwrap_err();
    assert!(matches!(err, RepositoryError::NotFound), "{err:?}");
    assert_eq!(runs.get(run.tenant_id, run.id).await.unwrap().unwrap().status(), RunStatus::Queued);
}

async fn duplicate_run_id_is_a_conflict(store: InternalStore) {
    let runs = store.run_repository();
    let run = new_run(tenant());
    runs.insert(&run).await.unwrap();
    let err = runs.insert(&run).await.unwrap_err();
    assert!(matches!(err, RepositoryError::Conflict(_)), "{err:?}");
}

async fn lifecycle_update_is_a_compare_and_set_on_status(store: InternalStore) {
    let runs = store.run_repository();
    let mut run = new_run(tenant());
    runs.insert(&run).await.unwrap();
    let now = Utc::now().trunc_subsecs(6);
    run.transition_to(RunStatus::InProgress, now).unwrap();
    runs.update_lifecycle(&run, RunStatus::Queued).await.unwrap();

    // A second writer that still believes the run is queued loses.
    let mut stale = run.clone();
    stale.fail(RunError { code: "x".into(), message: "y".into() }, now).unwrap();
    let err = runs.update_lifecycle(&stale, RunStatus::Queued).await.unwrap_err();
    assert!(matches!(err, RepositoryError::Conflict(_)), "{err:?}");

    run.fail(RunError { code: "tool_timeout".into(), message: "search timed out".into() }, now).unwrap();
    runs.update_lifecycle(&run, RunStatus::InProgress).await.unwrap();
    let stored = runs.get(run.tenant_id, run.id).await.unwrap().unwrap();
    assert_eq!(stored, run);
    assert_eq!(stored.started_at, Some(now));
    assert_eq!(stored.last_error.unwrap().code, "tool_timeout");
}

async fn lifecycle_update_of_a_missing_run_is_not_found(store: InternalStore) {
    let mut run = new_run(tenant());
    run.cancel(Utc::now()).unwrap();
    let err = store.run_repository().update_lifecycle(&run, RunStatus::Queued).await.unwrap_err();
    assert!(matches!(err, RepositoryError::NotFound), "{err:?}");
}

async fn audit_entries_are_stored(store: InternalStore) {
    let entry = AuditEntry {
        id: AuditEntryId::from_uuid(Uuid::now_v7()),
        tenant_id: tenant(),
        actor: "user-1".into(),
        action: "run.cancel".into(),
        resource_type: "run".into(),
        resource_id: Some(Uuid::now_v7().to_string()),
        outcome: AuditOutcome::Denied,
        ip: Some("2001:db8::1".into()),
        request_id: Some("req-1".into()),
        created_at: Utc::now().trunc_subsecs(6),
    };
    let audit = store.audit_log();
    audit.record(&entry).await.unwrap();
    let again = audit.record(&entry).await.unwrap_err();
    assert!(matches!(again, RepositoryError::Conflict(_)), "an entry id is written once: {again:?}");
}

async fn migrations_are_reversible_and_report_status(store: InternalStore) {
    let applied = store.migration_status().await.unwrap();
    assert!(!applied.is_empty() && applied.iter().all(|m| m.applied), "{applied:?}");

    store.migrate_down(u32::try_from(applied.len()).unwrap()).await.unwrap();
    let reverted = store.migration_status().await.unwrap();
    assert!(reverted.iter().all(|m| !m.applied), "{reverted:?}");
    let err = store.run_repository().get(tenant(), RunId::from_uuid(Uuid::now_v7())).await.unwrap_err();
    assert!(matches!(err, RepositoryError::Unexpected(_)), "tables are gone after down: {err:?}");

    store.migrate_up().await.unwrap();
    let run = new_run(tenant());
    store.run_repository().insert(&run).await.unwrap();
    assert!(store.migration_status().await.unwrap().iter().all(|m| m.applied));
}

async fn overdue_runs_are_listed_across_tenants_oldest_first_without_ended_ones(store: InternalStore) {
    let runs = store.run_repository();
    let base = Utc::now().trunc_subsecs(6) - chrono::Duration::hours(2);
    let mut created = Vec::new();
    for minutes in [30, 10, 20, 90] {
        let mut run = new_run(tenant());
        run.created_at = base + chrono::Duration::minutes(minutes);
        runs.insert(&run).await.unwrap();
        created.push(run);
    }
    // An ended run is never overdue, however old.
    let mut ended = created[1].clone();
    ended.cancel(Utc::now()).unwrap();
    runs.update_lifecycle(&ended, RunStatus::Queued).await.unwrap();

    let cutoff = base + chrono::Duration::minutes(60);
    let overdue = runs.list_overdue(cutoff, 10).await.unwrap();
    let ids: Vec<_> = overdue.iter().map(|r| r.id).collect();
    assert_eq!(ids, [created[2].id, created[0].id]);
    assert_eq!(runs.list_overdue(cutoff, 1).await.unwrap().len(), 1, "the limit is honoured");
}
