//! One load from start to end: subscribers connected and subscribed, server memory read idle,
//! events ingested at the set rate, the subscribers drained, the report gathered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::accounting::Histogram;
use crate::frame::now_micros;
use crate::ingest::{self, Producer};
use crate::report::{Delivery, Latency, Memory, Report, rss_kib};
use crate::subscriber::{self, Plan, Shared};

/// Handshakes in progress at once (a burst of thousands would only meet the listen backlog).
const CONNECTING: usize = 256;
/// How long the servers settle (the allocations of the last handshakes) before their
/// memory is read.
const SETTLE: Duration = Duration::from_secs(1);

/// The load's shape, from the command line.
#[derive(Debug, Clone)]
pub struct Load {
    pub label: String,
    pub subscribers: usize,
    pub slow: usize,
    pub rate: f64,
    pub batch: usize,
    /// Bytes of filler in each delta's text.
    pub pad: usize,
    pub duration: Duration,
    /// How long the subscribers may take after the ingest to receive everything.
    pub drain: Duration,
    /// How long all subscribers may take to connect and subscribe.
    pub connect_timeout: Duration,
}

/// What the load runs against.
#[derive(Debug)]
pub struct Target {
    pub name: &'static str,
    /// `ws://host:port/v1/stream` of each node; subscribers are spread over them in turn.
    pub stream_urls: Vec<String>,
    pub authorization: Option<String>,
    /// Each run's channel and the seq after which the load's events come.
    pub runs: Vec<(String, u64)>,
    pub producer: Producer,
    pub server_pids: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("only {ready} of {wanted} subscribers were subscribed after {waited:?}")]
    NotSubscribed { ready: usize, wanted: usize, waited: Duration },
}

pub async fn drive(load: &Load, target: Target) -> Result<Report, DriveError> {
    let run_count = target.runs.len();
    let shared = Arc::new(Shared {
        histogram: Histogram::default(),
        last_seq: (0..run_count).map(|_| AtomicU64::new(0)).collect(),
        last_receipt: AtomicU64::new(0),
    });
    let before_kib = rss_kib(&target.server_pids);

    let (drain_tx, drain_rx) = watch::channel(None);
    let waited = Instant::now();
    // In two waves, memory read after each: the second wave's growth is what a connection
    // costs once the servers' one-time growth (the first connections' lazily made state,
    // the allocator's arenas) is behind them.
    let half = load.subscribers / 2;
    let (mut tasks, first_ready, first_failed) =
        connect_all(load, &target, &shared, &drain_rx, 0..half).await?;
    tokio::time::sleep(SETTLE).await;
    let half_kib = rss_kib(&target.server_pids);
    let (more, second_ready, second_failed) =
        connect_all(load, &target, &shared, &drain_rx, half..load.subscribers).await?;
    tasks.extend(more);
    let (ready, failed) = (first_ready + second_ready, first_failed + second_failed);
    eprintln!(
        "sba-load: {ready} subscribers subscribed ({failed} failed) in {:.1} s",
        waited.elapsed().as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let idle_kib = rss_kib(&target.server_pids);

    let last_seq = Arc::new((0..run_count).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
    let started_micros = now_micros();
    let ingested = ingest::load(
        target.producer,
        run_count,
        load.rate,
        load.batch,
        load.duration,
        crate::frame::padding(load.pad).into(),
        Arc::clone(&last_seq),
    )
    .await;
    let end_kib = rss_kib(&target.server_pids);
    for (run, seq) in last_seq.iter().enumerate() {
        let seq = seq.load(Ordering::Acquire).max(target.runs[run].1);
        shared.last_seq[run].store(seq, Ordering::Release);
    }
    let _ = drain_tx.send(Some(Instant::now() + load.drain));
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(outcome) = task.await {
            outcomes.push(outcome);
        }
    }
    let last: Vec<u64> = shared.last_seq.iter().map(|s| s.load(Ordering::Acquire)).collect();
    let normal = Delivery::gather(&outcomes, &last, |o| !o.slow);
    let slow = Delivery::gather(&outcomes, &last, |o| o.slow);
    #[allow(clippy::cast_precision_loss)]
    let window = shared.last_receipt.load(Ordering::Relaxed).saturating_sub(started_micros) as f64 / 1e6;
    #[allow(clippy::cast_precision_loss)]
    let per_second = |count: u64| if window > 0.0 { count as f64 / window } else { 0.0 };
    #[allow(clippy::cast_precision_loss)]
    let per_idle_connection_kib = (!target.server_pids.is_empty() && ready > 0)
        .then(|| idle_kib.saturating_sub(before_kib) as f64 / ready as f64);
    #[allow(clippy::cast_precision_loss)]
    let per_added_connection_kib = (!target.server_pids.is_empty() && second_ready > 0)
        .then(|| idle_kib.saturating_sub(half_kib) as f64 / second_ready as f64);
    #[allow(clippy::cast_precision_loss)]
    let ingest_rate = ingested.events as f64 / ingested.elapsed.as_secs_f64().max(1e-9);
    Ok(Report {
        label: load.label.clone(),
        target: target.name.to_owned(),
        nodes: target.stream_urls.len(),
        runs: run_count,
        rate_target: load.rate,
        batch: load.batch,
        duration_s: ingested.elapsed.as_secs_f64(),
        ingested_events: ingested.events,
        ingest_calls: ingested.batches,
        ingest_rate,
        ingest_errors: ingested.errors,
        delivery_window_s: window,
        deliveries_per_s: per_second(normal.events),
        messages_per_s: per_second(normal.frames),
        latency: Latency::of(&shared.histogram),
        normal,
        slow,
        memory: Memory {
            pids: target.server_pids,
            before_kib,
            half_kib,
            idle_kib,
            end_kib,
            per_idle_connection_kib,
            per_added_connection_kib,
        },
    })
}

type Tasks = Vec<tokio::task::JoinHandle<subscriber::Outcome>>;

/// Starts every subscriber and waits until each is subscribed or has failed; the tasks and
/// the counts of both.
/// Connects and subscribes the subscribers of `range` (of `0..load.subscribers`).
async fn connect_all(
    load: &Load,
    target: &Target,
    shared: &Arc<Shared>,
    drain_rx: &watch::Receiver<Option<Instant>>,
    range: std::ops::Range<usize>,
) -> Result<(Tasks, usize, usize), DriveError> {
    let wanted = range.len();
    let (ready_tx, mut ready_rx) = mpsc::channel(wanted.max(1));
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let mut tasks = Vec::with_capacity(wanted);
    for i in range {
        let run = i % target.runs.len();
        let plan = Plan {
            url: target.stream_urls[i % target.stream_urls.len()].clone(),
            authorization: target.authorization.clone(),
            run,
            channel: target.runs[run].0.clone(),
            after_seq: target.runs[run].1,
            // The last ones, so every node and run has normal subscribers too.
            slow: i >= load.subscribers - load.slow.min(load.subscribers),
        };
        let (shared, drain_rx, connecting) = (Arc::clone(shared), drain_rx.clone(), Arc::clone(&connecting));
        let (ready, gate) = mpsc::channel(1);
        let outer = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let permit = connecting.acquire_owned().await;
            let forward = tokio::spawn(relay(gate, outer, permit.ok()));
            let outcome = subscriber::run(plan, shared, ready, drain_rx).await;
            let _ = forward.await;
            outcome
        }));
    }
    drop(ready_tx);
    let deadline = Instant::now() + load.connect_timeout;
    let mut ready = 0;
    let mut failed = 0;
    while ready + failed < wanted {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(true)) => ready += 1,
            Ok(Some(false)) => failed += 1,
            Ok(None) | Err(_) => break,
        }
    }
    if ready + failed < wanted {
        return Err(DriveError::NotSubscribed { ready, wanted, waited: load.connect_timeout });
    }
    Ok((tasks, ready, failed))
}

/// Passes a subscriber's readiness on and releases its handshake slot with it.
async fn relay(
    mut gate: mpsc::Receiver<bool>,
    outer: mpsc::Sender<bool>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    if let Some(ok) = gate.recv().await {
        drop(permit);
        let _ = outer.send(ok).await;
    }
}
