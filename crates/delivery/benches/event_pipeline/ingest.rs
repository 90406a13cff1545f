//! Part 1: events accepted per second through `POST /v1/runs/{id}/events` against raw
//! `XADD` of the same payloads, same concurrency, same run; with the sequencer script alone
//! (and with the live bus, as the server publishes), a bare `PUBLISH` and the
//! HTTP floor beside them to show where the time goes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use fred::interfaces::StreamsInterface as _;
use fred::interfaces::{ClientLike as _, HashesInterface as _, KeysInterface as _, PubsubInterface as _};
use fred::prelude::Client;
use fred::types::Value;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use sba_application::ports::{
    AppendOutcome, AppendRequest, EventBus as _, EventSequencer as _, StatusChange,
};
use sba_domain::events::{IncomingEvent, RunEvent};
use sba_domain::{Role, RunId, RunStatus, TenantId, UserId};
use sba_infrastructure::auth::DevTokenRequest;
use sba_infrastructure::redis::events::keys::{RunKeys, queue_key};
use sba_infrastructure::redis::{FredEventBus, FredEventBusSettings, FredEventSequencer};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

use crate::DELTA_TEXT;
use crate::support::{
    BenchConfig, Cpu, Environment, Sample, Server, median, process_cpu_seconds, redis_client,
    redis_cpu_seconds, sample, thousands,
};

/// What one timed request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// One pipelined round trip of one `PUBLISH` per event (the `NestJS` design's hot path:
    /// a Redis adapter publishing, nothing durable).
    Publish,
    /// The baseline: one pipelined round trip of one `XADD` per event, the event's stored
    /// JSON as the entry.
    Xadd,
    /// `FredEventSequencer::append` called from this process: the ingest script alone
    /// (history, producer ids, queue), without HTTP, validation or the live bus.
    Sequencer,
    /// The same, then the new events published on `FredEventBus` as `IngestService` does
    /// (`EventPipeline::publish` → `publish_all`: one message holding the batch on each of
    /// the run's and tenant's channels, one pipeline): all the Redis work of an ingest,
    /// without HTTP.
    SequencerBus,
    /// The same HTTP requests answered 403 by the route once the token is verified and the
    /// body decoded (a token of role `authenticated`): HTTP, auth and JSON with no Redis.
    HttpFloor,
    /// `POST /v1/runs/{id}/events` as an agent: the real path.
    Http,
}

impl Side {
    const ALL: [Self; 6] =
        [Self::Publish, Self::Xadd, Self::Sequencer, Self::SequencerBus, Self::HttpFloor, Self::Http];

    pub fn label(self) -> &'static str {
        match self {
            Self::Publish => "bare PUBLISH (NestJS-style, not durable)",
            Self::Xadd => "raw XADD (baseline)",
            Self::Sequencer => "sequencer script alone",
            Self::SequencerBus => "sequencer + live bus (ingest's Redis work)",
            Self::HttpFloor => "HTTP floor (403 after auth + JSON)",
            Self::Http => "**HTTP ingest**",
        }
    }
}

/// Medians over rounds of every side at one batch size.
pub struct BatchResult {
    pub batch: usize,
    pub sides: Vec<(Side, Sample, Vec<f64>)>,
}

impl BatchResult {
    pub fn get(&self, side: Side) -> &Sample {
        &self.sides.iter().find(|(s, _, _)| *s == side).unwrap().1
    }
}

/// Everything the load tasks share.
struct Ctx {
    config: BenchConfig,
    base: String,
    http: reqwest::Client,
    agent: HeaderValue,
    user: HeaderValue,
    tenant: TenantId,
    redis: Client,
    sequencer: Arc<FredEventSequencer>,
    bus: FredEventBus,
    partitions: u16,
    server_pid: String,
}

pub async fn run(config: &BenchConfig, env: &Environment, work: &std::path::Path) -> Vec<BatchResult> {
    let server = Server::start(&config.sba_bin, env, work).await;
    let signer = sba_delivery::startup::token_signer(&env.settings).unwrap();
    let tenant = TenantId::from_uuid(Uuid::now_v7());
    let token = |user: &str, role| {
        let token = signer
            .sign(&DevTokenRequest {
                tenant_id: tenant,
                user_id: UserId::parse(user).unwrap(),
                role,
                ttl: Duration::from_hours(2),
            })
            .unwrap();
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    };
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        base: server.base.clone(),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(config.clients)
            .tcp_nodelay(true)
            .http1_only()
            .build()
            .unwrap(),
        agent: token("bench-agent", Role::Agent),
        user: token("bench-user", Role::Authenticated),
        tenant,
        redis: redis_client(&config.redis_url).await,
        sequencer: sba_delivery::startup::event_sequencer(&env.settings).await.unwrap().unwrap(),
        bus: FredEventBus::connect(
            &SecretString::from(config.redis_url.clone()),
            FredEventBusSettings::default(),
        )
        .await
        .unwrap(),
        partitions: env.settings.events.partitions,
        server_pid: server.pid(),
    });

    let mut results = Vec::new();
    for &batch in &config.batches {
        let mut samples: Vec<(Side, Vec<Sample>)> = Side::ALL.iter().map(|s| (*s, Vec::new())).collect();
        for round in 0..config.rounds {
            // Alternate the order so drift on the shared machine hits every side.
            let mut order = Side::ALL.to_vec();
            if round % 2 == 1 {
                order.reverse();
            }
            for side in order {
                let measured = measure(&ctx, side, batch).await;
                eprintln!(
                    "ingest batch {batch:>3} round {} {:<42} {:>9} events/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                    round + 1,
                    side.label(),
                    thousands(measured.events_per_sec),
                    measured.p50_ms,
                    measured.p99_ms
                );
                samples.iter_mut().find(|(s, _)| *s == side).unwrap().1.push(measured);
            }
        }
        results.push(BatchResult {
            batch,
            sides: samples
                .into_iter()
                .map(|(side, all)| {
                    let rates = all.iter().map(|s| s.events_per_sec).collect();
                    (side, median(&all), rates)
                })
                .collect(),
        });
    }
    server.stop();
    results
}

/// One side's load at one batch size: `clients` tasks, each on its own run (or stream, or
/// channel), sending one batch after another for the configured time.
async fn measure(ctx: &Arc<Ctx>, side: Side, batch: usize) -> Sample {
    let runs = prepare(ctx, side).await;
    let cpu_before = cpu(ctx).await;
    let started = Instant::now();
    let tasks: Vec<_> = runs
        .iter()
        .enumerate()
        .map(|(client, &run)| {
            let ctx = Arc::clone(ctx);
            tokio::spawn(async move { load(&ctx, side, batch, client, run, started).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut sent = Vec::new();
    for task in tasks {
        let (task_latencies, events) = task.await.unwrap();
        latencies.extend(task_latencies);
        sent.push(events);
    }
    let elapsed = started.elapsed();
    let cpu = cpu(ctx).await - cpu_before;
    verify(ctx, side, &runs, &sent).await;
    cleanup(ctx, &runs).await;
    sample(latencies, batch, elapsed, cpu)
}

/// The CPU time so far of Redis, the server and this process.
async fn cpu(ctx: &Ctx) -> Cpu {
    Cpu {
        redis: redis_cpu_seconds(&ctx.redis).await,
        server: process_cpu_seconds(&ctx.server_pid),
        clients: process_cpu_seconds("self"),
    }
}

/// The runs of a measurement, ready: created through the API and started with an open step
/// (HTTP), or seeded in progress (sequencer); fresh ids otherwise (streams and channels are
/// named by the client's index).
async fn prepare(ctx: &Ctx, side: Side) -> Vec<RunId> {
    let mut runs = Vec::with_capacity(ctx.config.clients);
    for _ in 0..ctx.config.clients {
        let run = match side {
            Side::Http => create_started_run(ctx).await,
            Side::Sequencer | Side::SequencerBus => {
                let run = RunId::from_uuid(Uuid::now_v7());
                ctx.sequencer.seed(run, 1, RunStatus::InProgress).await.unwrap();
                run
            }
            Side::Publish | Side::Xadd | Side::HttpFloor => RunId::from_uuid(Uuid::now_v7()),
        };
        runs.push(run);
    }
    runs
}

/// `POST /v1/runs`, then one untimed batch that starts it and opens step `s1` (what an agent
/// does first), which also caches the run's facts in the server like any running agent's.
async fn create_started_run(ctx: &Ctx) -> RunId {
    let created = ctx
        .http
        .post(format!("{}/v1/runs", ctx.base))
        .header(AUTHORIZATION, ctx.user.clone())
        .json(&json!({"agent": "bench-agent", "input": {"prompt": "benchmark"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED, "creating a run");
    let body: serde_json::Value = created.json().await.unwrap();
    let run: RunId = body["id"].as_str().unwrap().parse().unwrap();
    let start = json!({"events": [
        {"id": "start", "kind": "run.started"},
        {"id": "open", "kind": "step.created", "data": {"step_id": "s1", "type": "message_creation"}},
    ]});
    let started = ctx
        .http
        .post(format!("{}/v1/runs/{run}/events", ctx.base))
        .header(AUTHORIZATION, ctx.agent.clone())
        .json(&start)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::OK, "starting a run");
    run
}

/// One client's loop; returns its request latencies and how many events it sent.
async fn load(
    ctx: &Ctx,
    side: Side,
    batch: usize,
    client: usize,
    run: RunId,
    started: Instant,
) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::with_capacity(50_000);
    let mut next = 0_u64;
    let url = format!("{}/v1/runs/{run}/events", ctx.base);
    let (token, expected) = match side {
        Side::HttpFloor => (&ctx.user, StatusCode::FORBIDDEN),
        _ => (&ctx.agent, StatusCode::OK),
    };
    let stream = format!("bench:x:{client}");
    let channel = format!("bench:pub:{client}");
    while started.elapsed() < ctx.config.seconds {
        let op = Instant::now();
        match side {
            Side::Http | Side::HttpFloor => {
                let body = http_body(&mut next, batch);
                let response = ctx
                    .http
                    .post(&url)
                    .header(AUTHORIZATION, token.clone())
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let answer = response.bytes().await.unwrap();
                assert_eq!(status, expected, "{}", String::from_utf8_lossy(&answer));
            }
            Side::Sequencer | Side::SequencerBus => {
                append_batch(ctx, side, batch, run, &mut next).await;
            }
            Side::Xadd | Side::Publish => {
                let pipeline = ctx.redis.pipeline();
                for _ in 0..batch {
                    next += 1;
                    let json = stored_json(ctx.tenant, run, next);
                    if side == Side::Xadd {
                        let _: () = pipeline
                            .xadd(stream.as_str(), false, None::<()>, "*", ("event", json))
                            .await
                            .unwrap();
                    } else {
                        let _: () = pipeline.publish(channel.as_str(), json).await.unwrap();
                    }
                }
                let replies: Vec<Value> = pipeline.all().await.unwrap();
                assert_eq!(replies.len(), batch);
            }
        }
        latencies.push(op.elapsed());
    }
    let sent = match side {
        Side::Sequencer | Side::SequencerBus | Side::Xadd | Side::Publish => next,
        Side::Http | Side::HttpFloor => latencies.len() as u64 * batch as u64,
    };
    (latencies, sent)
}

/// One batch of the sequencer sides: appended, then published as the side says.
async fn append_batch(ctx: &Ctx, side: Side, batch: usize, run: RunId, next: &mut u64) {
    let events: Vec<IncomingEvent> = (0..batch)
        .map(|_| {
            *next += 1;
            let data = json!({"step_id": "s1", "text": DELTA_TEXT});
            IncomingEvent::parse(&format!("evt-{}", *next), "step.delta", data).unwrap()
        })
        .collect();
    let created_at = Utc::now();
    let request = AppendRequest {
        tenant: ctx.tenant,
        run,
        events: events.clone(),
        created_at,
        status_change: Some(StatusChange { expected: RunStatus::InProgress, new: RunStatus::InProgress }),
    };
    let AppendOutcome::Appended { events: appended, .. } = ctx.sequencer.append(request).await.unwrap()
    else {
        panic!("the sequencer refused a batch");
    };
    if side == Side::SequencerBus {
        let new: Vec<RunEvent> = events
            .into_iter()
            .zip(appended)
            .map(|(event, outcome)| RunEvent {
                run_id: run,
                tenant_id: ctx.tenant,
                seq: outcome.seq,
                producer_id: Some(outcome.producer_id.to_string()),
                data: event.data,
                created_at,
            })
            .collect();
        ctx.bus.publish_all(&new, None).await.expect("publishing failed");
    }
}

/// An ingest body of `batch` `step.delta` events on step `s1` with new ids.
fn http_body(next: &mut u64, batch: usize) -> String {
    let mut body = String::with_capacity(32 + batch * 100);
    body.push_str(r#"{"events":["#);
    for i in 0..batch {
        *next += 1;
        if i > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"id":"evt-{}","kind":"step.delta","data":{{"step_id":"s1","text":"{DELTA_TEXT}"}}}}"#,
            *next
        );
    }
    body.push_str("]}");
    body
}

/// The event as the sequencer stores it in a run's history (ADR 0017, "Event JSON").
fn stored_json(tenant: TenantId, run: RunId, seq: u64) -> String {
    format!(
        r#"{{"seq":{seq},"run_id":"{run}","tenant_id":"{tenant}","id":"evt-{seq}","kind":"step.delta","data":{{"step_id":"s1","text":"{DELTA_TEXT}"}},"created_at":"{}"}}"#,
        Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

/// Every event sent was recorded: the run's counter (sequencer, HTTP) or the stream's length
/// (XADD) says so.
async fn verify(ctx: &Ctx, side: Side, runs: &[RunId], sent: &[u64]) {
    for (client, (&run, &events)) in runs.iter().zip(sent).enumerate() {
        let recorded: u64 = match side {
            // run.created and the two events that started it come first.
            Side::Http => {
                let seq: u64 = ctx.redis.hget(RunKeys::new(run, ctx.partitions).run, "seq").await.unwrap();
                seq - 3
            }
            Side::Sequencer | Side::SequencerBus => {
                let seq: u64 = ctx.redis.hget(RunKeys::new(run, ctx.partitions).run, "seq").await.unwrap();
                seq - 1
            }
            Side::Xadd => {
                let len: u64 = ctx
                    .redis
                    .custom(
                        fred::types::CustomCommand::new_static("XLEN", None, false),
                        vec![format!("bench:x:{client}")],
                    )
                    .await
                    .unwrap();
                len
            }
            Side::Publish | Side::HttpFloor => events,
        };
        assert_eq!(
            recorded, events,
            "{side:?}: client {client} sent {events} events, {recorded} were recorded"
        );
    }
}

/// Drops what a measurement left in Redis (its runs' keys, the partition queues, the
/// baseline's streams), so memory stays bounded and no measurement meets another's keys.
async fn cleanup(ctx: &Ctx, runs: &[RunId]) {
    let mut keys: Vec<String> = Vec::new();
    for &run in runs {
        let run_keys = RunKeys::new(run, ctx.partitions);
        keys.extend([run_keys.run, run_keys.ids, run_keys.history]);
    }
    keys.extend((0..ctx.partitions).map(queue_key));
    keys.extend((0..runs.len()).map(|c| format!("bench:x:{c}")));
    for chunk in keys.chunks(500) {
        let _: i64 = ctx.redis.unlink(chunk.to_vec()).await.unwrap();
    }
}
