//! The event pipeline on Redis end to end (ADR 0017, issue 14): nodes sharing one Redis and
//! one PostgreSQL database, workers that die, a Redis that restarts or loses its data, and
//! queue entries that can never be stored. Each test runs its own `redis-server`
//! ([`PrivateRedis`]), so stopping it disturbs nobody, and its own database; the embedded
//! mode (no Redis) is covered by `ingest.rs`.
//!
//! "Stored" below means read from PostgreSQL through the store's event log, never through
//! the API, which also serves events from the Redis history.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sba_application::ports::EventQueue as _;
use sba_delivery::startup::{Worker, event_queue};
use sba_domain::events::{RunEvent, partition};
use sba_domain::{Role, RunId, TenantId};
use sba_infrastructure::config::Settings;
use sba_infrastructure::internal_store::test_support::fresh_postgres_url;
use sba_infrastructure::internal_store::{InternalStore, PoolOptions};
use sba_infrastructure::redis::events::keys::{PERSISTERS, queue_key};
use sba_infrastructure::redis::test_support::PrivateRedis;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{TestApp, accepted_seqs, json_of, new_tenant, problem, spawn_app_on};

/// How long a test waits for an asynchronous outcome before it fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// A node of the deployment on `redis` and the database at `database_url`, running no
/// worker (a test starts one when it wants the queues persisted).
async fn node(redis: &PrivateRedis, database_url: &str, extra_env: &[(&str, &str)]) -> TestApp {
    let url = redis.url();
    let mut env = vec![
        ("REDIS_URL", url.as_str()),
        // Not under test here, and the polling below would exhaust the default quota.
        ("SBA_RATE_LIMIT__ENABLED", "false"),
        ("SBA_WORKER__POLL_INTERVAL", "10ms"),
        ("SBA_WORKER__IN_PROCESS", "false"),
    ];
    env.extend_from_slice(extra_env);
    spawn_app_on(database_url, &env).await
}

/// A run of a new tenant, with a token of its creator and one of an agent of its tenant.
struct Run {
    id: String,
    tenant: TenantId,
    user: String,
    agent: String,
}

impl Run {
    fn run_id(&self) -> RunId {
        self.id.parse().unwrap()
    }

    fn path(&self, rest: &str) -> String {
        format!("/v1/runs/{}{rest}", self.id)
    }
}

async fn new_run(app: &TestApp) -> Run {
    let tenant = new_tenant();
    let user = app.token(tenant, "alice", Role::Authenticated);
    let created = json_of(app.post_json("/v1/runs", &user, &json!({"agent": "bot"})).await, 201).await;
    Run {
        id: created["id"].as_str().unwrap().to_owned(),
        tenant,
        user,
        agent: app.token(tenant, "agent-1", Role::Agent),
    }
}

/// `run.started` and the step `s1` the deltas write to.
fn opening() -> Vec<Value> {
    vec![
        json!({"id": "start", "kind": "run.started"}),
        json!({"id": "s1", "kind": "step.created", "data": {"step_id": "s1", "type": "message_creation"}}),
    ]
}

/// A delta whose text is its own id, so a listing shows which event holds which seq.
fn delta(id: &str) -> Value {
    json!({"id": id, "kind": "step.delta", "data": {"step_id": "s1", "text": id}})
}

fn deltas(prefix: &str, count: usize) -> Vec<Value> {
    (0..count).map(|i| delta(&format!("{prefix}-{i}"))).collect()
}

async fn ingest(app: &TestApp, run: &Run, events: &[Value]) -> reqwest::Response {
    app.post_json(&run.path("/events"), &run.agent, &json!({"events": events})).await
}

/// Ingests `events`, which must be accepted as new events; answers their `(id, seq)`.
async fn accept(app: &TestApp, run: &Run, events: &[Value]) -> Vec<(String, u64)> {
    let body = json_of(ingest(app, run, events).await, 200).await;
    assert_eq!(body["duplicates"], 0, "{body}");
    accepted_seqs(&body)
}

/// Ingests `events` until it is accepted (200), as an agent retries while the event store
/// is unavailable (503, the only other answer allowed); answers their `(id, seq)`.
async fn accept_once_available(app: &TestApp, run: &Run, events: &[Value]) -> Vec<(String, u64)> {
    eventually("the event store to accept the batch again", || async {
        let response = ingest(app, run, events).await;
        match response.status().as_u16() {
            200 => Some(accepted_seqs(&response.json().await.unwrap())),
            503 => None,
            other => panic!("{other}: {}", response.text().await.unwrap()),
        }
    })
    .await
}

/// `seq` → the producer id the run's events were accepted with, `run.created` (seq 1, no
/// producer id) included.
fn expected_events(accepted: &[(String, u64)]) -> Vec<(u64, Option<String>)> {
    let by_seq: BTreeMap<u64, Option<String>> =
        std::iter::once((1, None)).chain(accepted.iter().map(|(id, seq)| (*seq, Some(id.clone())))).collect();
    assert_eq!(by_seq.len(), accepted.len() + 1, "no seq answered twice");
    by_seq.into_iter().collect()
}

/// Calls `probe` until it answers `Some`, for at most [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(outcome) = probe().await {
            return outcome;
        }
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The store of `app`, to read what is stored without going through Redis.
async fn store_of(app: &TestApp) -> InternalStore {
    InternalStore::connect(
        &app.settings.store.location,
        PoolOptions { max_connections: 2, connect_timeout: Duration::from_secs(5) },
    )
    .await
    .unwrap()
}

/// Every event of `run` stored in PostgreSQL, in seq order.
async fn stored_events(store: &InternalStore, run: &Run) -> Vec<RunEvent> {
    let mut events: Vec<RunEvent> = Vec::new();
    loop {
        let after = events.last().map_or(0, |e| e.seq);
        let page = store.event_log().list_after(run.tenant, run.run_id(), after, 500).await.unwrap();
        events.extend(page.items);
        if page.next.is_none() {
            return events;
        }
    }
}

/// `(seq, producer id)` of the stored events of `run`.
async fn stored(store: &InternalStore, run: &Run) -> Vec<(u64, Option<String>)> {
    stored_events(store, run).await.into_iter().map(|e| (e.seq, e.producer_id)).collect()
}

/// `(seq, producer id)` of the stored events of `run` once `count` of them are stored.
async fn stored_when(store: &InternalStore, run: &Run, count: usize) -> Vec<(u64, Option<String>)> {
    eventually(&format!("{count} stored events"), || async {
        let stored = stored(store, run).await;
        (stored.len() >= count).then_some(stored)
    })
    .await
}

/// Every event of `run` the API lists from `after_seq` on, following `next_cursor` through
/// pages of `limit`.
async fn listed(app: &TestApp, run: &Run, after_seq: u64, limit: u64) -> Vec<Value> {
    let mut events = Vec::new();
    let mut query = format!("after_seq={after_seq}&limit={limit}");
    loop {
        let page = json_of(app.get(&run.path(&format!("/events?{query}")), &run.user).await, 200).await;
        events.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("cursor={cursor}&limit={limit}"),
            None => return events,
        }
    }
}

/// `(seq, kind)` of listed events.
fn kinds(events: &[Value]) -> Vec<(u64, String)> {
    events.iter().map(|e| (e["seq"].as_u64().unwrap(), e["kind"].as_str().unwrap().to_owned())).collect()
}

fn pairs(expected: &[(u64, &str)]) -> Vec<(u64, String)> {
    expected.iter().map(|(seq, text)| (*seq, (*text).to_owned())).collect()
}

/// The run's status as `GET /v1/runs/{id}` shows it (PostgreSQL) once it is `status`.
async fn shown_status_when(app: &TestApp, run: &Run, status: &str) -> Value {
    eventually(&format!("the run to show status {status}"), || async {
        let shown = json_of(app.get(&run.path(""), &run.user).await, 200).await;
        (shown["status"] == status).then_some(shown)
    })
    .await
}

/// A [`Worker`] running in this process, as `sba worker` would.
struct RunningWorker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start_worker(settings: &Settings) -> RunningWorker {
    let worker = Worker::build(settings).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    RunningWorker { stop, task }
}

impl RunningWorker {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(PATIENCE, self.task).await.expect("the worker stops when asked").unwrap();
    }
}

/// `redis-cli` on `redis`, answering its output.
fn redis_cli(redis: &PrivateRedis, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-u", &redis.url()])
        .args(args)
        .output()
        .expect("redis-cli is installed with redis-server");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_through_two_nodes_get_unique_gapless_seqs_and_are_stored_exactly_once() {
    const TASKS: usize = 8;
    const BATCHES: usize = 25;
    let redis = PrivateRedis::start();
    let database = fresh_postgres_url().await;
    let (a, b) = (node(&redis, &database, &[]).await, node(&redis, &database, &[]).await);
    let run = new_run(&a).await;
    let mut accepted = accept(&b, &run, &opening()).await;
    let tasks = (0..TASKS).map(|task| {
        let (a, b, run) = (&a, &b, &run);
        async move {
            let mut accepted = Vec::new();
            for batch in 0..BATCHES {
                let node = if (task + batch) % 2 == 0 { a } else { b };
                accepted.extend(accept(node, run, &deltas(&format!("t{task}b{batch}"), 4)).await);
            }
            accepted
        }
    });
    accepted.extend(join_all(tasks).await.into_iter().flatten());

    let n = accepted.len() as u64;
    assert_eq!(n, 2 + (TASKS * BATCHES * 4) as u64);
    let ids: BTreeSet<&str> = accepted.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len() as u64, n, "every id was sent once");
    let seqs: BTreeSet<u64> = accepted.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs.len() as u64, n, "every accepted event has a seq of its own");
    assert_eq!(seqs, (2..=n + 1).collect(), "the seqs follow run.created without a gap");

    let worker = start_worker(&a.settings).await;
    let store = store_of(&a).await;
    let expected = expected_events(&accepted);
    assert_eq!(stored_when(&store, &run, expected.len()).await, expected, "each stored exactly once");
    let listed = listed(&b, &run, 0, 100).await;
    let by_api: Vec<(u64, Option<String>)> = listed
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["data"]["text"].as_str().map(str::to_owned)))
        .collect();
    let deltas_only: Vec<(u64, Option<String>)> =
        expected.iter().map(|(seq, id)| (*seq, id.clone().filter(|id| id.starts_with('t')))).collect();
    assert_eq!(by_api, deltas_only, "the API lists the same events, once each, in seq order");
    worker.stop().await;
}

#[tokio::test]
async fn a_cancel_on_one_node_refuses_the_next_batch_on_another_before_any_worker_ran() {
    let redis = PrivateRedis::start();
    let database = fresh_postgres_url().await;
    let (a, b) = (node(&redis, &database, &[]).await, node(&redis, &database, &[]).await);
    let run = new_run(&a).await;
    assert_eq!(accept(&b, &run, &opening()).await, [("start".to_owned(), 2), ("s1".to_owned(), 3)]);

    let cancelled = json_of(a.post(&run.path("/cancel"), &run.user).await, 200).await;
    assert_eq!(cancelled["status"], "cancelled");
    let refused = problem(ingest(&b, &run, &[delta("late")]).await, 409, "run_terminal").await;
    assert_eq!(refused["run_status"], "cancelled");
    assert_eq!(
        kinds(&listed(&b, &run, 0, 100).await),
        pairs(&[(1, "run.created"), (2, "run.started"), (3, "step.created"), (4, "run.cancelled")]),
        "run.cancelled took the next seq"
    );
    let store = store_of(&a).await;
    assert_eq!(stored(&store, &run).await, [(1, None)], "no worker has stored anything yet");

    let worker = start_worker(&a.settings).await;
    let shown = shown_status_when(&b, &run, "cancelled").await;
    assert!(shown["cancelled_at"].is_string(), "{shown}");
    let kinds_stored: Vec<(u64, String)> =
        stored_events(&store, &run).await.iter().map(|e| (e.seq, e.kind().as_str().to_owned())).collect();
    assert_eq!(kinds_stored.last(), Some(&(4, "run.cancelled".to_owned())));
    worker.stop().await;
}

#[tokio::test]
async fn a_run_completed_on_one_node_refuses_the_next_batch_on_another_before_any_worker_ran() {
    let redis = PrivateRedis::start();
    let database = fresh_postgres_url().await;
    let (a, b) = (node(&redis, &database, &[]).await, node(&redis, &database, &[]).await);
    let run = new_run(&a).await;
    accept(&b, &run, &opening()).await;

    let done = json!({"id": "done", "kind": "run.completed", "data": {"output": "hi"}});
    let body = json_of(ingest(&a, &run, &[done]).await, 200).await;
    assert_eq!(
        (accepted_seqs(&body), &body["run_status"]),
        (vec![("done".to_owned(), 4)], &json!("completed"))
    );
    let refused = problem(ingest(&b, &run, &[delta("late")]).await, 409, "run_terminal").await;
    assert_eq!(refused["run_status"], "completed");
    let store = store_of(&a).await;
    assert_eq!(stored(&store, &run).await, [(1, None)], "no worker has stored anything yet");

    let worker = start_worker(&a.settings).await;
    let shown = shown_status_when(&b, &run, "completed").await;
    assert_eq!(shown["output"], "hi");
    worker.stop().await;
}

#[tokio::test]
async fn reads_serve_accepted_events_from_the_history_without_a_gap_until_the_worker_stores_them() {
    let mut redis = PrivateRedis::start();
    let database = fresh_postgres_url().await;
    let app = node(&redis, &database, &[("SBA_EVENTS__TIMEOUT", "300ms")]).await;
    let run = new_run(&app).await;
    accept(&app, &run, &opening()).await;
    accept(&app, &run, &deltas("d", 3)).await;
    let store = store_of(&app).await;
    assert_eq!(stored(&store, &run).await, [(1, None)], "only run.created is in PostgreSQL");

    let expected = pairs(&[
        (1, "run.created"),
        (2, "run.started"),
        (3, "step.created"),
        (4, "step.delta"),
        (5, "step.delta"),
        (6, "step.delta"),
    ]);
    let before = listed(&app, &run, 0, 100).await;
    assert_eq!(kinds(&before), expected, "run.created from PostgreSQL, then the history");
    assert_eq!(listed(&app, &run, 0, 2).await, before, "pages across the boundary, without a gap");
    assert_eq!(kinds(&listed(&app, &run, 4, 100).await), expected[4..], "from the history alone");

    let worker = start_worker(&app.settings).await;
    stored_when(&store, &run, expected.len()).await;
    worker.stop().await;
    // Without Redis the history cannot be read: what is listed now comes from PostgreSQL.
    redis.stop();
    assert_eq!(listed(&app, &run, 0, 100).await, before, "the same events, byte for byte");
}

#[tokio::test]
async fn entries_a_killed_worker_left_pending_are_claimed_by_another_and_stored_exactly_once() {
    let redis = PrivateRedis::start();
    let database = fresh_postgres_url().await;
    let app =
        node(&redis, &database, &[("SBA_WORKER__CLAIM_IDLE", "200ms"), ("SBA_WORKER__LEASE_TTL", "500ms")])
            .await;
    let run = new_run(&app).await;
    let mut accepted = accept(&app, &run, &opening()).await;
    for batch in 0..4 {
        accepted.extend(accept(&app, &run, &deltas(&format!("b{batch}"), 4)).await);
    }
    let store = store_of(&app).await;

    // The first worker reads three of the five entries, commits the first two and dies
    // before acknowledging anything: no ack, no lease released, as after a SIGKILL between
    // the commit and the ack.
    let first = event_queue(&app.settings, PERSISTERS).await.unwrap().unwrap();
    let taken = first.next_batch(3).await.unwrap();
    assert_eq!(taken.iter().map(|e| e.events.len()).collect::<Vec<_>>(), [2, 4, 4]);
    let committed: Vec<RunEvent> = taken[..2].iter().flat_map(|e| e.events.clone()).collect();
    store.run_ledger().apply_events(run.tenant, run.run_id(), committed).await.unwrap();
    drop(first);
    assert_eq!(stored(&store, &run).await.len(), 7, "run.created and the first two entries");

    let second = start_worker(&app.settings).await;
    let expected = expected_events(&accepted);
    assert_eq!(stored_when(&store, &run, expected.len()).await, expected, "each stored exactly once");
    let key = queue_key(partition(run.run_id(), app.settings.events.partitions));
    eventually("every entry acknowledged", || async {
        let summary = redis_cli(&redis, &["XPENDING", &key, PERSISTERS]);
        summary.lines().next().is_some_and(|count| count.trim() == "0").then_some(())
    })
    .await;
    second.stop().await;
    assert_eq!(stored(&store, &run).await, expected, "nothing was stored twice meanwhile");
}

#[tokio::test]
async fn events_accepted_before_a_redis_restart_are_stored_and_the_sequence_continues_after_it() {
    let mut redis = PrivateRedis::start_durable();
    let database = fresh_postgres_url().await;
    let app = node(&redis, &database, &[("SBA_EVENTS__TIMEOUT", "300ms")]).await;
    let run = new_run(&app).await;
    let mut accepted = accept(&app, &run, &opening()).await;
    accepted.extend(accept(&app, &run, &deltas("before", 4)).await);
    let last = accepted.last().unwrap().1;

    redis.stop();
    let after = deltas("after", 4);
    problem(ingest(&app, &run, &after).await, 503, "event_store_unavailable").await;
    redis.restart();
    let continued = accept_once_available(&app, &run, &after).await;
    assert_eq!(
        continued.iter().map(|(_, seq)| *seq).collect::<Vec<_>>(),
        (last + 1..=last + 4).collect::<Vec<_>>(),
        "the counter survived the restart: no seq reused, none skipped"
    );
    accepted.extend(continued);

    let worker = start_worker(&app.settings).await;
    let store = store_of(&app).await;
    let expected = expected_events(&accepted);
    assert_eq!(stored_when(&store, &run, expected.len()).await, expected, "each stored exactly once");
    worker.stop().await;
}

#[tokio::test]
async fn a_redis_that_lost_its_data_is_reseeded_from_postgres_and_never_reuses_a_seq() {
    let mut redis = PrivateRedis::start_durable();
    let database = fresh_postgres_url().await;
    let app = node(&redis, &database, &[("SBA_EVENTS__TIMEOUT", "300ms")]).await;
    let run = new_run(&app).await;
    let mut accepted = accept(&app, &run, &opening()).await;
    accepted.extend(accept(&app, &run, &deltas("before", 4)).await);
    let worker = start_worker(&app.settings).await;
    let store = store_of(&app).await;
    let last = stored_when(&store, &run, accepted.len() + 1).await.last().unwrap().0;

    redis.restart_empty();
    assert_eq!(redis_cli(&redis, &["DBSIZE"]).trim(), "0", "Redis forgot everything");
    let continued = accept_once_available(&app, &run, &deltas("after", 4)).await;
    assert_eq!(
        continued.iter().map(|(_, seq)| *seq).collect::<Vec<_>>(),
        (last + 1..=last + 4).collect::<Vec<_>>(),
        "the counter continues after the highest stored seq"
    );
    accepted.extend(continued);
    let expected = expected_events(&accepted);
    assert_eq!(stored_when(&store, &run, expected.len()).await, expected, "each stored exactly once");
    assert_eq!(
        listed(&app, &run, 0, 100).await.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        (1..=last + 4).collect::<Vec<_>>()
    );
    worker.stop().await;
}

/// Seeding after Redis lost its data restores the run's stored producer ids with the counter
/// (ADR 0017, "Seeding a lost counter"), so a batch stored before the loss and retried after
/// it is answered with its original seqs, and later batches are stored. (Without the ids it
/// got new seqs, which the `(run_id, producer_id)` unique index then kept out of the
/// database, blocking the run's persistence.)
#[tokio::test]
async fn a_batch_retried_after_redis_lost_its_data_keeps_its_seqs_and_later_batches_are_stored() {
    let mut redis = PrivateRedis::start_durable();
    let database = fresh_postgres_url().await;
    let app = node(&redis, &database, &[("SBA_EVENTS__TIMEOUT", "300ms")]).await;
    let run = new_run(&app).await;
    let mut accepted = accept(&app, &run, &opening()).await;
    let before = deltas("before", 4);
    let first = accept(&app, &run, &before).await;
    accepted.extend(first.clone());
    let worker = start_worker(&app.settings).await;
    let store = store_of(&app).await;
    stored_when(&store, &run, accepted.len() + 1).await;

    redis.restart_empty();
    let retried = eventually("the event store to answer the retried batch", || async {
        let response = ingest(&app, &run, &before).await;
        match response.status().as_u16() {
            200 => Some(response.json::<Value>().await.unwrap()),
            503 => None,
            other => panic!("{other}: {}", response.text().await.unwrap()),
        }
    })
    .await;
    assert_eq!((accepted_seqs(&retried), &retried["duplicates"]), (first, &json!(4)), "the stored seqs");
    accepted.extend(accept(&app, &run, &deltas("after", 2)).await);
    let expected = expected_events(&accepted);
    assert_eq!(stored_when(&store, &run, expected.len()).await, expected, "each stored exactly once");
    worker.stop().await;
}

#[tokio::test]
async fn a_poison_entry_goes_to_the_dead_letters_after_max_attempts_without_blocking_its_partition() {
    let redis = PrivateRedis::start();
    let database = fresh_postgres_url().await;
    // One partition: the poison entry and the good run's entries share a queue.
    let env = [
        ("SBA_EVENTS__PARTITIONS", "1"),
        ("SBA_WORKER__MAX_ATTEMPTS", "2"),
        ("SBA_WORKER__CLAIM_IDLE", "100ms"),
    ];
    let app = node(&redis, &database, &env).await;
    let (poisoned, good) = (new_run(&app).await, new_run(&app).await);
    // Seq 5 (`first_seq`) of a run that stored only seq 1: the ledger refuses the gap every time.
    let event = json!([{
        "run_id": poisoned.id, "tenant_id": poisoned.tenant.to_string(), "id": "p5",
        "kind": "step.delta", "data": {"step_id": "s1", "text": "x"}, "created_at": "2026-12-06T12:00:00Z"
    }]);
    let tenant = poisoned.tenant.to_string();
    redis_cli(
        &redis,
        &[
            "XADD",
            &queue_key(0),
            "*",
            "tenant",
            &tenant,
            "run",
            &poisoned.id,
            "first_seq",
            "5",
            "last_seq",
            "5",
            "events",
            &event.to_string(),
        ],
    );
    let mut accepted = accept(&app, &good, &opening()).await;
    accepted.extend(accept(&app, &good, &deltas("d", 3)).await);

    let worker = start_worker(&app.settings).await;
    let store = store_of(&app).await;
    let expected = expected_events(&accepted);
    assert_eq!(stored_when(&store, &good, expected.len()).await, expected, "the partition is not blocked");
    let queue = event_queue(&app.settings, PERSISTERS).await.unwrap().unwrap();
    let letter = eventually("the poison entry to be dead-lettered", || async {
        queue.dead_letters(10).await.unwrap().into_iter().find(|l| l.run == poisoned.run_id())
    })
    .await;
    assert_eq!((letter.first_seq, letter.last_seq, letter.attempts), (5, 5, 2));
    assert!(letter.reason.contains("expected seq 2, got 5"), "{}", letter.reason);
    worker.stop().await;
    assert_eq!(stored(&store, &poisoned).await, [(1, None)], "nothing of the poison entry is stored");

    let listing = sba_dead_letters(&redis);
    let line = listing
        .lines()
        .find(|line| line.contains(&poisoned.id))
        .unwrap_or_else(|| panic!("the run is not listed:\n{listing}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns[..6], ["0", letter.entry_id.as_str(), tenant.as_str(), &poisoned.id, "5-5", "2"]);
    assert_eq!(columns[6..].join(" "), letter.reason);
    assert!(listing.contains("1 dead letter(s)"), "{listing}");
}

/// `sba worker dead-letters` run as a process against `redis`'s one partition; its stdout.
fn sba_dead_letters(redis: &PrivateRedis) -> String {
    let (mut command, dir) = crate::helpers::sba_process(&["worker", "dead-letters"]);
    let output = command
        .env("SBA_DATA_DIR", dir.join("data"))
        .env("REDIS_URL", redis.url())
        .env("SBA_EVENTS__PARTITIONS", "1")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    stdout
}

#[tokio::test]
async fn usage_reported_through_ingest_is_summed_once_the_worker_stored_it() {
    let redis = PrivateRedis::start();
    let database = fresh_postgres_url().await;
    let app = node(&redis, &database, &[]).await;
    let run = new_run(&app).await;
    let usage = json!({"id": "u1", "kind": "usage.reported",
        "data": {"model": "gpt-x", "input_tokens": 120, "output_tokens": 30, "cost_micros": 4500}});
    accept(&app, &run, &[opening()[0].clone(), usage]).await;
    let admin = app.token(run.tenant, "boss", Role::Admin);
    let today = chrono::Utc::now().date_naive();
    let path = format!("/v1/usage?from={today}&to={today}&group_by=model");
    assert_eq!(json_of(app.get(&path, &admin).await, 200).await["data"], json!([]), "not stored yet");

    let worker = start_worker(&app.settings).await;
    let sums = eventually("the usage to be summed", || async {
        let sums = json_of(app.get(&path, &admin).await, 200).await;
        (sums["data"] != json!([])).then_some(sums)
    })
    .await;
    assert_eq!(
        sums["data"],
        json!([{"key": "gpt-x", "input_tokens": 120, "output_tokens": 30, "cost_micros": 4500, "runs": 1}])
    );
    worker.stop().await;
}
