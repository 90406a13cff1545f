//! The event pipeline's benchmark (issue 14, ADR 0017), each figure against a baseline
//! measured in the same run:
//!
//! 1. **Ingest**: events accepted per second through `POST /v1/runs/{id}/events` of the
//!    release `sba serve` (Redis sequencer, no worker in the process, rate limit off), with
//!    batches of 1, 10 and 100 from 64 concurrent clients, each on its own run, against raw
//!    `XADD` of the same payloads through fred at the same concurrency. Beside them, to see
//!    where the time goes: the sequencer script called directly (alone, then with the live
//!    bus as the server publishes, then with one `SPUBLISH` pipeline per batch), the same
//!    HTTP requests refused after auth and JSON decoding (the HTTP floor), and a bare
//!    `PUBLISH` per event (the design this replaces).
//! 2. **Persistence**: events per second `sba worker`'s loop moves from a pre-filled queue
//!    into `agent_events`, against the raw multi-row `INSERT` of the `apply_events`
//!    benchmark at the same batch size, with `apply_events` called directly as the floor;
//!    then the worker's lag p50/p99 under a steady load at half its measured rate.
//!
//! `scripts/bench-events.sh` starts the services and runs it; docs/benchmarks.md explains
//! the method and keeps the results. A plain load program (harness = false): without
//! `--bench` (as `cargo test --all-targets` and nextest run it) it does nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "benchmark binary: fails by panicking, prints its tables, statistics on counts"
)]

mod ingest;
mod persist;
mod support;

use std::sync::Arc;

use metrics_util::debugging::DebuggingRecorder;
use sba_infrastructure::internal_store::test_support::{execute_sql, fresh_postgres_url};

use ingest::{BatchResult, Side};
use persist::PersistResult;
use support::{BenchConfig, Environment, MetricsTap, clear_redis, median_of, redis_client, thousands};

/// A streamed chunk of model output, the bulk of what agents report (the `apply_events`
/// benchmark's text).
pub const DELTA_TEXT: &str = "a few tokens of streamed model output";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") || !args.iter().any(|a| a == "--bench") {
        return;
    }
    // Before any metric is registered: the worker's metrics are read through it.
    let recorder = DebuggingRecorder::new();
    let metrics = MetricsTap(Arc::new(recorder.snapshotter()));
    recorder.install().expect("installing the metrics recorder");
    let config = BenchConfig::from_env();
    // Like `sba worker`'s runtime: one worker thread per core.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(&config, &metrics));
}

async fn run(config: &BenchConfig, metrics: &MetricsTap) {
    let work = std::env::temp_dir().join(format!("sba-bench-events-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&work).unwrap();
    let database_url = fresh_postgres_url().await;
    let env = Environment::new(config, &database_url, &work);
    let redis = redis_client(&config.redis_url).await;
    clear_redis(&redis).await;
    eprintln!(
        "event pipeline benchmark: {} clients, batches {:?}, {} s per side, {} rounds; Redis database {}",
        config.clients,
        config.batches,
        config.seconds.as_secs(),
        config.rounds,
        config.redis_db
    );

    let ingest = if config.ingest { Some(ingest::run(config, &env, &work).await) } else { None };
    clear_redis(&redis).await;
    let persist = if config.persist { Some(persist::run(config, &env, metrics).await) } else { None };
    clear_redis(&redis).await;

    let name = reqwest::Url::parse(&database_url).unwrap().path().trim_start_matches('/').to_owned();
    execute_sql(&config.admin_url, &format!("DROP DATABASE \"{name}\" WITH (FORCE)")).await;
    let _ = std::fs::remove_dir_all(&work);

    println!();
    if let Some(results) = &ingest {
        print_ingest(config, results);
    }
    if let Some(result) = &persist {
        print_persist(result);
    }
}

fn percent(value: f64) -> String {
    format!("{:.0} %", value * 100.0)
}

fn print_ingest(config: &BenchConfig, results: &[BatchResult]) {
    println!(
        "Ingest: {} clients, each on its own run (or stream), {} s per side and round, medians of {} rounds",
        config.clients,
        config.seconds.as_secs(),
        config.rounds
    );
    println!();
    println!(
        "| batch | path | events/s | requests/s | p50 / p99 ms | CPU µs/event: Redis / sba serve / clients | vs raw XADD |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for result in results {
        let baseline = result.get(Side::Xadd).events_per_sec;
        for (side, sample, _) in &result.sides {
            let cpu = sample.cpu_us_per_event;
            let server = if matches!(side, Side::Http | Side::HttpFloor) {
                format!("{:.1}", cpu.server)
            } else {
                "–".to_owned()
            };
            println!(
                "| {} | {} | {} | {} | {:.2} / {:.2} | {:.1} / {server} / {:.1} | {} |",
                result.batch,
                side.label(),
                thousands(sample.events_per_sec),
                thousands(sample.requests_per_sec),
                sample.p50_ms,
                sample.p99_ms,
                cpu.redis,
                cpu.clients,
                percent(sample.events_per_sec / baseline)
            );
        }
    }
    println!();
    println!(
        "| batch | HTTP / XADD per round | median | HTTP floor / XADD (median) | HTTP / sequencer (median) |"
    );
    println!("|---:|---|---:|---:|---:|");
    for result in results {
        let rounds = |side: Side| &result.sides.iter().find(|(s, _, _)| *s == side).unwrap().2;
        let per_round: Vec<f64> =
            rounds(Side::Http).iter().zip(rounds(Side::Xadd)).map(|(http, xadd)| http / xadd).collect();
        let list = per_round.iter().map(|r| percent(*r)).collect::<Vec<_>>().join(", ");
        println!(
            "| {} | {list} | **{}** | {} | {} |",
            result.batch,
            percent(median_of(per_round.clone())),
            percent(result.get(Side::HttpFloor).events_per_sec / result.get(Side::Xadd).events_per_sec),
            percent(result.get(Side::Http).events_per_sec / result.get(Side::Sequencer).events_per_sec),
        );
    }
    println!();
}

fn print_persist(result: &PersistResult) {
    let (worker, ledger, raw) =
        (median_of(result.worker.clone()), median_of(result.ledger.clone()), median_of(result.raw.clone()));
    let ratios = |side: &[f64]| {
        side.iter().zip(&result.raw).map(|(s, r)| percent(s / r)).collect::<Vec<_>>().join(", ")
    };
    println!(
        "Persistence: {} runs per side, one batch of {} step.delta events per run and round (one ledger \
         transaction each), medians of {} rounds",
        result.runs,
        result.batch,
        result.worker.len()
    );
    println!();
    println!("| side | events/s | vs raw INSERT | per round |");
    println!("|---|---:|---:|---|");
    println!(
        "| **worker** (sba worker's loop: queue → agent_events) | {} | **{}** | {} |",
        thousands(worker),
        percent(worker / raw),
        ratios(&result.worker)
    );
    println!(
        "| apply_events directly (the worker's floor) | {} | {} | {} |",
        thousands(ledger),
        percent(ledger / raw),
        ratios(&result.ledger)
    );
    println!("| raw multi-row INSERT (baseline) | {} | 100 % | |", thousands(raw));
    let raw_json = median_of(result.raw_json.clone());
    println!(
        "| raw INSERT from one JSON parameter (tried for the ledger, not kept) | {} | {} | {} |",
        thousands(raw_json),
        percent(raw_json / raw),
        ratios(&result.raw_json)
    );
    println!();
    println!("worker / apply_events directly: {}", percent(worker / ledger));
    if let Some(lag) = &result.lag {
        println!();
        println!("| worker lag under a steady load | |");
        println!("|---|---:|");
        println!(
            "| load (target / achieved events/s) | {} / {} |",
            thousands(lag.target_rate),
            thousands(lag.achieved_rate)
        );
        println!("| queue entries measured | {} |", thousands(lag.entries as f64));
        println!("| lag p50 / p99 / max ms | {:.1} / {:.1} / {:.1} |", lag.p50_ms, lag.p99_ms, lag.max_ms);
    }
}
