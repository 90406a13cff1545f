//! Throughput of `RunLedger::apply_events` on PostgreSQL, against a baseline measured in the
//! same run: the same `agent_events` rows written by one multi-row `INSERT` through the same
//! driver (sea-orm on sqlx), in a transaction of its own.
//!
//! The machine that runs this is noisy, so the figure that matters is the ratio of the two in
//! one run, not either absolute time. `scripts/bench.sh` starts the private PostgreSQL, runs
//! this and prints the ratios; docs/benchmarks.md explains the method and keeps the results.
//!
//! Each criterion sample works on a fresh run, created untimed: the ledger side first opens a
//! step, then every timed iteration applies one batch of new `step.delta` events on it with
//! the next seqs; the baseline inserts the same rows on a run of its own. Both sides pay one
//! transaction and one commit per batch.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark code fails by panicking"
)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound as _, Utc};
use criterion::{Criterion, Throughput};
use sba_application::ports::RunLedger;
use sba_domain::events::{EventData, RunEvent, StepRef};
use sba_domain::runs::NewRun;
use sba_domain::steps::StepType;
use sba_domain::{
    AgentName, AgentRun, AuditEntry, AuditEntryId, AuditOutcome, Metadata, RunId, TenantId, UserId,
};
use sba_infrastructure::internal_store::test_support::{
    ADMIN_URL_VAR, admin_url, fresh_postgres_store, multi_row_insert,
};
use sba_infrastructure::internal_store::{InternalStore, StoreLocation};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, TransactionTrait};
use secrecy::ExposeSecret as _;
use serde_json::json;
use tokio::runtime::Runtime;
use uuid::Uuid;

const BATCH_SIZES: [u64; 4] = [1, 10, 100, 1000];

/// A streamed chunk of model output, the bulk of what agents report.
const DELTA_TEXT: &str = "a few tokens of streamed model output";

/// The database every benchmark writes to, created on first use so that listing or
/// filtering the benchmarks (as nextest does) creates nothing.
struct Fixture {
    store: InternalStore,
    location: StoreLocation,
    ledger: Arc<dyn RunLedger>,
    /// A second pool on the same database for the baseline, so it never borrows the ledger's.
    raw: DatabaseConnection,
}

impl Fixture {
    async fn connect() -> Self {
        assert!(
            std::env::var_os(ADMIN_URL_VAR).is_some(),
            "{ADMIN_URL_VAR} is not set: run this benchmark with scripts/bench.sh, which starts the \
             private PostgreSQL (or run scripts/services-up.sh and `source target/services/env` first)"
        );
        let (store, location) = fresh_postgres_store().await;
        let mut options = ConnectOptions::new(postgres_url(&location).to_owned());
        // The same pool settings as the store's: no per-statement logging on either side.
        options.max_connections(5).sqlx_logging(false);
        let raw = Database::connect(options).await.expect("connecting the baseline pool");
        Self { ledger: store.run_ledger(), store, location, raw }
    }

    async fn new_run(&self) -> AgentRun {
        let run = AgentRun::new(
            RunId::from_uuid(Uuid::now_v7()),
            NewRun {
                tenant_id: TenantId::from_uuid(Uuid::now_v7()),
                user_id: UserId::parse("bench").unwrap(),
                agent: AgentName::parse("bench-agent").unwrap(),
                input: json!({"prompt": "benchmark"}),
                session_id: None,
                metadata: Metadata::default(),
            },
            now(),
        );
        let audit = AuditEntry {
            id: AuditEntryId::from_uuid(Uuid::now_v7()),
            tenant_id: run.tenant_id,
            actor: "bench".into(),
            action: "run.create".into(),
            resource_type: "run".into(),
            resource_id: Some(run.id.to_string()),
            outcome: AuditOutcome::Success,
            ip: None,
            request_id: None,
            client_request_id: None,
            created_at: now(),
        };
        self.ledger.create_run(&run, &audit).await.expect("creating a run");
        run
    }

    /// Drops the benchmark's database: it holds a few hundred thousand rows by the end.
    async fn drop_database(self) {
        let url = url::Url::parse(postgres_url(&self.location)).expect("the store URL is a URL");
        let name = url.path().trim_start_matches('/').to_owned();
        self.store.close().await;
        self.raw.close().await.expect("closing the baseline pool");
        let admin = Database::connect(admin_url()).await.expect("connecting to the admin database");
        admin
            .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
            .await
            .expect("dropping the benchmark database");
        admin.close().await.expect("closing the admin connection");
    }
}

fn postgres_url(location: &StoreLocation) -> &str {
    let StoreLocation::Postgres(url) = location else { unreachable!("fresh_postgres_store is PostgreSQL") };
    url.expose_secret()
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn step() -> StepRef {
    StepRef::parse("s1").unwrap()
}

fn event(run: &AgentRun, seq: u64, data: EventData, at: DateTime<Utc>) -> RunEvent {
    RunEvent {
        run_id: run.id,
        tenant_id: run.tenant_id,
        seq,
        producer_id: Some(format!("evt-{seq}")),
        data,
        created_at: at,
    }
}

/// `n` `step.delta` events on step `s1`, seqs `first..first + n`.
fn deltas(run: &AgentRun, first: u64, n: u64) -> Vec<RunEvent> {
    let at = now();
    (first..first + n)
        .map(|seq| {
            let data = EventData::StepDelta { step_id: step(), text: DELTA_TEXT.to_owned() };
            event(run, seq, data, at)
        })
        .collect()
}

/// One sample of the ledger: `iters` batches of `n` new events on a fresh run with an open step.
async fn ledger_sample(fixture: &Fixture, n: u64, iters: u64) -> Duration {
    let run = fixture.new_run().await;
    let open = event(
        &run,
        2,
        EventData::StepCreated { step_id: step(), step_type: StepType::MessageCreation },
        now(),
    );
    fixture.ledger.apply_events(run.tenant_id, run.id, vec![open]).await.expect("opening the step");
    let mut next_seq = 3;
    let mut timed = Duration::ZERO;
    for _ in 0..iters {
        let batch = deltas(&run, next_seq, n);
        let start = Instant::now();
        let outcome =
            fixture.ledger.apply_events(run.tenant_id, run.id, batch).await.expect("applying events");
        timed += start.elapsed();
        assert_eq!(outcome.applied, usize::try_from(n).unwrap(), "every event of the batch is new");
        assert!(outcome.skipped.is_empty(), "every delta has its effect: {:?}", outcome.skipped);
        next_seq += n;
    }
    timed
}

/// One sample of the baseline: `iters` multi-row inserts of `n` new rows on a fresh run, each
/// in its own transaction.
async fn baseline_sample(fixture: &Fixture, n: u64, iters: u64) -> Duration {
    let run = fixture.new_run().await;
    let mut next_seq = 2;
    let mut timed = Duration::ZERO;
    for _ in 0..iters {
        let batch = deltas(&run, next_seq, n);
        let start = Instant::now();
        let txn = fixture.raw.begin().await.expect("starting a transaction");
        let result = txn.execute(&multi_row_insert(&batch)).await.expect("inserting rows");
        txn.commit().await.expect("committing rows");
        timed += start.elapsed();
        assert_eq!(result.rows_affected(), n, "every row of the batch is new");
        next_seq += n;
    }
    timed
}

fn apply_events(criterion: &mut Criterion, runtime: &Runtime, fixture: &OnceLock<Fixture>) {
    let fixture = || fixture.get_or_init(|| runtime.block_on(Fixture::connect()));
    for n in BATCH_SIZES {
        let mut group = criterion.benchmark_group(format!("apply_events_batch_{n}"));
        group.throughput(Throughput::Elements(n));
        group.bench_function("ledger_apply_events", |b| {
            let fixture = fixture();
            b.to_async(runtime).iter_custom(|iters| ledger_sample(fixture, n, iters));
        });
        group.bench_function("raw_multi_row_insert", |b| {
            let fixture = fixture();
            b.to_async(runtime).iter_custom(|iters| baseline_sample(fixture, n, iters));
        });
        group.finish();
    }
}

fn main() {
    // A single-threaded runtime: on two shared cores PostgreSQL needs the other one.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let fixture = OnceLock::new();
    // Defaults sized for a whole run of about a minute and a half on two cores; criterion's
    // command-line options (`--measurement-time 10`, `--quick`) override them.
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .configure_from_args();
    apply_events(&mut criterion, &runtime, &fixture);
    criterion.final_summary();
    if let Some(fixture) = fixture.into_inner() {
        runtime.block_on(fixture.drop_database());
    }
}
