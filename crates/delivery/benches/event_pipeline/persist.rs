//! Part 2: events per second the worker moves from the queue into `agent_events`, against
//! the raw multi-row `INSERT` baseline of the `apply_events` benchmark at the same batch
//! size, with `apply_events` called directly as the floor between them; then the worker's
//! lag under a steady load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound as _, Utc};
use futures_util::StreamExt as _;
use futures_util::stream;
use sba_application::ports::{AppendOutcome, AppendRequest, EventSequencer as _, RunLedger, StatusChange};
use sba_delivery::startup::{Worker, event_sequencer, open_store};
use sba_domain::events::{EventData, IncomingEvent, RunEvent, StepRef};
use sba_domain::steps::StepType;
use sba_domain::{AgentRun, RunStatus};
use sba_infrastructure::internal_store::test_support::{creation_audit, multi_row_insert, new_run};
use sba_infrastructure::redis::FredEventSequencer;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};
use serde_json::json;

use crate::DELTA_TEXT;
use crate::support::{BenchConfig, Environment, MetricsTap, Taken, median_of, thousands};

/// The longest a drain may take before the benchmark gives up (something is stuck).
const DRAIN_LIMIT: Duration = Duration::from_mins(5);
/// Producers and batch size of the steady load of the lag measurement.
const LAG_PRODUCERS: usize = 64;
const LAG_BATCH: usize = 10;

/// What one side does per round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `sba worker`'s loop (the delivery crate's `Worker`, in this process) draining a
    /// queue pre-filled through the sequencer.
    Worker,
    /// `RunLedger::apply_events` called directly, one run after the other: the worker's
    /// floor (its transaction without the queue).
    Ledger,
    /// The same rows by one multi-row `INSERT` per run in a transaction of its own.
    Raw,
    /// The same rows by one `INSERT … SELECT … FROM json_to_recordset($1)` per run: one
    /// bound value instead of seven per row, tried for the ledger and not kept (slower).
    RawJson,
}

/// Events per second of each side in each round, and the lag measurement.
pub struct PersistResult {
    pub runs: usize,
    pub batch: u64,
    pub worker: Vec<f64>,
    pub ledger: Vec<f64>,
    pub raw: Vec<f64>,
    pub raw_json: Vec<f64>,
    pub lag: Option<LagResult>,
}

/// The worker's lag (queue entry written to acknowledged after commit) under a steady load.
pub struct LagResult {
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub entries: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

struct Fixture {
    ledger: Arc<dyn RunLedger>,
    raw: DatabaseConnection,
    sequencer: Arc<FredEventSequencer>,
}

pub async fn run(config: &BenchConfig, env: &Environment, metrics: &MetricsTap) -> PersistResult {
    let settings = &env.settings;
    let store = open_store(settings, 8).await.unwrap();
    store.migrate_up().await.unwrap();
    let database_url = env.pairs.iter().find(|(k, _)| k == "DATABASE_URL").unwrap().1.clone();
    let mut options = ConnectOptions::new(database_url);
    // The store's pool settings: no per-statement logging on either side.
    options.max_connections(5).sqlx_logging(false);
    let fixture = Fixture {
        ledger: store.run_ledger(),
        raw: Database::connect(options).await.unwrap(),
        sequencer: event_sequencer(settings).await.unwrap().unwrap(),
    };
    let (n, batch) = (config.persist_runs, config.persist_batch);

    eprintln!("persist: creating {} runs", 4 * n);
    let worker_runs = create_runs(&fixture.ledger, n).await;
    let ledger_runs = create_runs(&fixture.ledger, n).await;
    let raw_runs = create_runs(&fixture.ledger, n).await;
    let raw_json_runs = create_runs(&fixture.ledger, n).await;
    // Started, with step s1 open, before any round: the worker's runs through the
    // sequencer and one untimed drain, the ledger's directly.
    start_through_sequencer(&fixture, &worker_runs).await;
    drain(settings, metrics, 2 * n as u64).await;
    start_through_ledger(&fixture, &ledger_runs).await;

    let mut result = PersistResult {
        runs: n,
        batch,
        worker: Vec::new(),
        ledger: Vec::new(),
        raw: Vec::new(),
        raw_json: Vec::new(),
        lag: None,
    };
    for round in 0..config.rounds {
        prefill(&fixture, &worker_runs, round, batch).await;
        let mut order = [Side::Worker, Side::Ledger, Side::Raw, Side::RawJson];
        if round % 2 == 1 {
            order.reverse();
        }
        for side in order {
            let elapsed = match side {
                Side::Worker => drain(settings, metrics, n as u64 * batch).await.0,
                // Seqs after run.created, run.started and step.created.
                Side::Ledger => apply_directly(&fixture, &ledger_runs, 4 + round as u64 * batch, batch).await,
                // Seqs after run.created.
                Side::Raw => insert_raw(&fixture, &raw_runs, 2 + round as u64 * batch, batch).await,
                Side::RawJson => {
                    insert_raw_json(&fixture, &raw_json_runs, 2 + round as u64 * batch, batch).await
                }
            };
            let rate = (n as u64 * batch) as f64 / elapsed.as_secs_f64();
            eprintln!("persist round {} {side:<6?} {:>9} events/s", round + 1, thousands(rate));
            match side {
                Side::Worker => result.worker.push(rate),
                Side::Ledger => result.ledger.push(rate),
                Side::Raw => result.raw.push(rate),
                Side::RawJson => result.raw_json.push(rate),
            }
        }
    }
    let mut expected = 4 * (n as u64) * batch * config.rounds as u64;

    if !config.lag_seconds.is_zero() {
        let target = median_of(result.worker.clone()) * config.lag_share;
        let lag = measure_lag(config, settings, metrics, &fixture, &worker_runs, target).await;
        expected += lag.1;
        result.lag = Some(lag.0);
    }

    let stored = fixture
        .raw
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "select count(*) as n from agent_events where kind = 'step.delta'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(u64::try_from(stored).unwrap(), expected, "every event sent is in agent_events, once");
    fixture.raw.close().await.unwrap();
    store.close().await;
    result
}

/// `n` new queued runs, each of a new tenant, created through the ledger (as `POST
/// /v1/runs` does, without the counter seed, which the caller does where it needs one).
async fn create_runs(ledger: &Arc<dyn RunLedger>, n: usize) -> Vec<AgentRun> {
    stream::iter(0..n)
        .map(|_| async {
            let run = new_run();
            ledger.create_run(&run, &creation_audit(&run)).await.unwrap();
            run
        })
        .buffer_unordered(8)
        .collect()
        .await
}

fn step() -> StepRef {
    StepRef::parse("s1").unwrap()
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Seeds each run's counter (as run creation does) and appends `run.started` and step `s1`.
async fn start_through_sequencer(fixture: &Fixture, runs: &[AgentRun]) {
    stream::iter(runs)
        .for_each_concurrent(16, |run| async move {
            fixture.sequencer.seed(run.id, 1, RunStatus::Queued).await.unwrap();
            let events = vec![
                IncomingEvent::parse("start", "run.started", json!({})).unwrap(),
                IncomingEvent::parse(
                    "open",
                    "step.created",
                    json!({"step_id": "s1", "type": "message_creation"}),
                )
                .unwrap(),
            ];
            append(fixture, run, events, RunStatus::Queued).await;
        })
        .await;
}

async fn append(fixture: &Fixture, run: &AgentRun, events: Vec<IncomingEvent>, from: RunStatus) {
    let request = AppendRequest {
        tenant: run.tenant_id,
        run: run.id,
        events,
        created_at: Utc::now(),
        status_change: Some(StatusChange { expected: from, new: RunStatus::InProgress }),
    };
    let outcome = fixture.sequencer.append(request).await.unwrap();
    assert!(matches!(outcome, AppendOutcome::Appended { .. }), "{outcome:?}");
}

fn deltas(prefix: &str, count: u64) -> Vec<IncomingEvent> {
    (0..count)
        .map(|i| {
            let data = json!({"step_id": "s1", "text": DELTA_TEXT});
            IncomingEvent::parse(&format!("{prefix}-{i}"), "step.delta", data).unwrap()
        })
        .collect()
}

/// One queue entry of `batch` new `step.delta` events per run, through the sequencer.
async fn prefill(fixture: &Fixture, runs: &[AgentRun], round: usize, batch: u64) {
    stream::iter(runs)
        .for_each_concurrent(16, |run| async move {
            append(fixture, run, deltas(&format!("r{round}"), batch), RunStatus::InProgress).await;
        })
        .await;
}

/// Runs `sba worker`'s loop (a `Worker` built from the benchmark's settings, as `sba
/// worker` builds it) until `expected` events are committed, then stops it. Returns the
/// time from its start to the last commit, and what its metrics said meanwhile.
async fn drain(
    settings: &sba_infrastructure::config::Settings,
    metrics: &MetricsTap,
    expected: u64,
) -> (Duration, Taken) {
    let worker = Worker::build(settings).await.unwrap();
    let _ = metrics.take();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let watch = async {
        let mut total = Taken::default();
        while total.persisted < expected {
            assert!(
                started.elapsed() < DRAIN_LIMIT,
                "the worker stored {} of {expected} events",
                total.persisted
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
            let taken = metrics.take();
            total.persisted += taken.persisted;
            total.lags.extend(taken.lags);
        }
        let elapsed = started.elapsed();
        let _ = stop.send(());
        (elapsed, total)
    };
    let ((), drained) = tokio::join!(
        worker.run_until_stopped(async move {
            let _ = stopped.await;
        }),
        watch
    );
    drained
}

/// `run.started` and step `s1` on each run, applied directly.
async fn start_through_ledger(fixture: &Fixture, runs: &[AgentRun]) {
    stream::iter(runs)
        .for_each_concurrent(8, |run| async move {
            let at = now();
            let events = vec![
                event(run, 2, EventData::RunStarted, at),
                event(
                    run,
                    3,
                    EventData::StepCreated { step_id: step(), step_type: StepType::MessageCreation },
                    at,
                ),
            ];
            fixture.ledger.apply_events(run.tenant_id, run.id, events).await.unwrap();
        })
        .await;
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

/// `count` `step.delta` events on step `s1`, seqs `first..first + count` (as the
/// `apply_events` benchmark builds them).
fn delta_events(run: &AgentRun, first: u64, count: u64) -> Vec<RunEvent> {
    let at = now();
    (first..first + count)
        .map(|seq| event(run, seq, EventData::StepDelta { step_id: step(), text: DELTA_TEXT.to_owned() }, at))
        .collect()
}

/// One `apply_events` of `batch` new events per run, one run after the other (as the
/// worker applies the runs of a pass); the batches are built untimed.
async fn apply_directly(fixture: &Fixture, runs: &[AgentRun], first: u64, batch: u64) -> Duration {
    let batches: Vec<_> = runs.iter().map(|run| (run, delta_events(run, first, batch))).collect();
    let started = Instant::now();
    for (run, events) in batches {
        let outcome = fixture.ledger.apply_events(run.tenant_id, run.id, events).await.unwrap();
        assert_eq!(outcome.applied as u64, batch, "every event is new");
        assert!(outcome.skipped.is_empty(), "every delta has its effect: {:?}", outcome.skipped);
    }
    started.elapsed()
}

/// The baseline: per run, `BEGIN`, one multi-row `INSERT` of the same rows, `COMMIT`, one
/// run after the other; the rows are converted inside the timed region, as the ledger does.
async fn insert_raw(fixture: &Fixture, runs: &[AgentRun], first: u64, batch: u64) -> Duration {
    let batches: Vec<_> = runs.iter().map(|run| delta_events(run, first, batch)).collect();
    let started = Instant::now();
    for events in batches {
        let txn = fixture.raw.begin().await.unwrap();
        let result = txn.execute(&multi_row_insert(&events)).await.unwrap();
        txn.commit().await.unwrap();
        assert_eq!(result.rows_affected(), batch, "every row is new");
    }
    started.elapsed()
}

/// Per run, `BEGIN`, one `INSERT … FROM json_to_recordset($1)` of the same rows, `COMMIT`;
/// the JSON is built inside the timed region.
async fn insert_raw_json(fixture: &Fixture, runs: &[AgentRun], first: u64, batch: u64) -> Duration {
    const INSERT: &str = "INSERT INTO agent_events (tenant_id, run_id, seq, producer_id, kind, data, created_at) \
        SELECT e.tenant_id, e.run_id, e.seq, e.producer_id, e.kind, e.data, e.created_at \
        FROM json_to_recordset($1::json) AS e(tenant_id uuid, run_id uuid, seq bigint, \
        producer_id text, kind text, data jsonb, created_at timestamptz)";
    let batches: Vec<_> = runs.iter().map(|run| delta_events(run, first, batch)).collect();
    let started = Instant::now();
    for events in batches {
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                json!({
                    "tenant_id": e.tenant_id, "run_id": e.run_id, "seq": e.seq, "producer_id": e.producer_id,
                    "kind": e.kind().as_str(), "data": e.data_json(),
                    "created_at": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                })
            })
            .collect();
        let json = serde_json::to_string(&rows).unwrap();
        let txn = fixture.raw.begin().await.unwrap();
        let result = txn
            .execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, INSERT, [json.into()]))
            .await
            .unwrap();
        txn.commit().await.unwrap();
        assert_eq!(result.rows_affected(), batch, "every row is new");
    }
    started.elapsed()
}

/// The worker's lag under a steady load of `target` events/s: `LAG_PRODUCERS` runs, each
/// appending a batch of `LAG_BATCH` deltas at a fixed interval through the sequencer for
/// the configured time while a worker persists; then until the worker has caught up. The
/// lag is the worker's `sba_worker_lag_seconds` (queue entry id time to acknowledgement).
/// Returns the result and the events appended.
async fn measure_lag(
    config: &BenchConfig,
    settings: &sba_infrastructure::config::Settings,
    metrics: &MetricsTap,
    fixture: &Fixture,
    runs: &[AgentRun],
    target: f64,
) -> (LagResult, u64) {
    let producers = &runs[..LAG_PRODUCERS.min(runs.len())];
    let per_producer = target / producers.len() as f64 / LAG_BATCH as f64;
    let interval = Duration::from_secs_f64(1.0 / per_producer);
    eprintln!(
        "persist lag: {} producers, a batch of {LAG_BATCH} every {:.1} ms each ({} events/s) for {} s",
        producers.len(),
        interval.as_secs_f64() * 1e3,
        thousands(target),
        config.lag_seconds.as_secs()
    );
    let worker = Worker::build(settings).await.unwrap();
    let _ = metrics.take();
    let appended = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let produce = async {
        stream::iter(producers.iter().enumerate())
            .for_each_concurrent(None, |(p, run)| {
                let appended = &appended;
                async move {
                    // Producers spread over the interval, so the load is steady, not bursts.
                    let offset = interval.mul_f64(p as f64 / producers.len() as f64);
                    let first = tokio::time::Instant::from_std(started) + offset;
                    let mut ticks = tokio::time::interval_at(first, interval);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut i: u32 = 0;
                    while offset + interval * i < config.lag_seconds {
                        ticks.tick().await;
                        append(
                            fixture,
                            run,
                            deltas(&format!("lag{p}-{i}"), LAG_BATCH as u64),
                            RunStatus::InProgress,
                        )
                        .await;
                        appended.fetch_add(LAG_BATCH as u64, Ordering::Relaxed);
                        i += 1;
                    }
                }
            })
            .await;
        done.store(true, Ordering::Release);
        config.lag_seconds.max(started.elapsed())
    };
    let watch = async {
        let mut total = Taken::default();
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let taken = metrics.take();
            total.persisted += taken.persisted;
            total.lags.extend(taken.lags);
            if done.load(Ordering::Acquire) && total.persisted >= appended.load(Ordering::Relaxed) {
                break;
            }
            assert!(started.elapsed() < config.lag_seconds + DRAIN_LIMIT, "the worker did not catch up");
        }
        let _ = stop.send(());
        total
    };
    let ((), produced_for, total) = tokio::join!(
        worker.run_until_stopped(async move {
            let _ = stopped.await;
        }),
        produce,
        watch
    );
    let appended = appended.into_inner();
    let mut lags = total.lags;
    lags.sort_by(f64::total_cmp);
    let at = |q: f64| lags[((lags.len() as f64 * q) as usize).min(lags.len() - 1)] * 1e3;
    let result = LagResult {
        target_rate: target,
        achieved_rate: appended as f64 / produced_for.as_secs_f64(),
        entries: lags.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: lags.last().copied().unwrap_or(f64::NAN) * 1e3,
    };
    (result, appended)
}
