//! Rate-limit decisions per second and their latency (p50, p99) through `FredRateLimiter`
//! at concurrency 1, 16 and 64, against a baseline measured in the same run: a raw
//! `EVALSHA` of a trivial script (`return 1`, same key and argument count) through fred,
//! at the same concurrency. `scripts/bench-ratelimit.sh` runs it; results and method are in
//! docs/benchmarks.md.
//!
//! A plain load loop (harness = false) rather than criterion, because percentiles of
//! single decisions under concurrency are the point. Each (concurrency, side) pair runs
//! `ROUNDS` times, alternating baseline and limiter so drift on the shared machine hits
//! both; the table shows medians over rounds. Without `--bench` (as `cargo test
//! --all-targets` and nextest run it) it does nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "benchmark binary: statistics on counts"
)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike as _, LuaInterface as _};
use fred::prelude::{Builder, Client, Config};
use fred::types::Key;
use fred::types::scripts::Script;
use sba_application::ports::RateLimiter as _;
use sba_domain::TenantId;
use sba_domain::ratelimit::{HttpLimitKey, Quota};
use sba_infrastructure::redis::{FredRateLimiter, FredRateLimiterSettings};
use secrecy::SecretString;
use support::{Sample, median};

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const ROUNDS: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Baseline,
    Limiter,
}

fn main() {
    support::run_with_redis("scripts/bench-ratelimit.sh", |url, duration| async move {
        run(&url, duration).await;
    });
}

async fn run(url: &str, duration: Duration) {
    let settings = FredRateLimiterSettings { timeout: Duration::from_secs(2), ..Default::default() };
    let limiter =
        Arc::new(FredRateLimiter::connect(&SecretString::from(url.to_owned()), settings).await.unwrap());
    let client = Builder::from_config(Config::from_url(url).unwrap()).build().unwrap();
    client.init().await.unwrap();
    let trivial = Script::from_lua("return 1");
    let _: () = client.script_load("return 1").await.unwrap();
    // A tenant of its own per run, so runs never meet old keys.
    let tenant = TenantId::from_uuid(uuid::Uuid::now_v7());

    println!(
        "| concurrency | baseline EVALSHA/s | baseline p50 / p99 µs | limiter decisions/s | limiter p50 / p99 µs | limiter/baseline |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for concurrency in CONCURRENCY {
        let mut baseline = Vec::new();
        let mut decided = Vec::new();
        for _ in 0..ROUNDS {
            for side in [Side::Baseline, Side::Limiter] {
                let sample = load(side, concurrency, duration, &limiter, &client, &trivial, tenant).await;
                if side == Side::Baseline { baseline.push(sample) } else { decided.push(sample) }
            }
        }
        let (b, l) = (median(&baseline), median(&decided));
        println!(
            "| {concurrency} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} | {:.0} % |",
            b.per_sec,
            b.p50_us,
            b.p99_us,
            l.per_sec,
            l.p50_us,
            l.p99_us,
            l.per_sec / b.per_sec * 100.0
        );
    }
}

/// `concurrency` tasks issuing one operation after another for `duration`.
async fn load(
    side: Side,
    concurrency: usize,
    duration: Duration,
    limiter: &Arc<FredRateLimiter>,
    client: &Client,
    trivial: &Script,
    tenant: TenantId,
) -> Sample {
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let limiter = Arc::clone(limiter);
            let client = client.clone();
            let trivial = trivial.clone();
            // One key per worker, as distinct callers have; a quota that always allows, so
            // every decision also writes the key (the expensive path). The baseline uses the
            // key the limiter stores.
            let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, u8::try_from(worker).unwrap()));
            let key = HttpLimitKey { tenant: Some(tenant), ip: Some(ip), method: "GET", route: "/v1/me" }
                .to_string();
            let stored = format!("sba:rl:{key}");
            let quota = Quota::new(4_000_000_000, 1).unwrap();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(100_000);
                while started.elapsed() < duration {
                    let op = Instant::now();
                    match side {
                        Side::Limiter => {
                            let decision = limiter.check(&key, quota, 1).await.unwrap();
                            assert!(decision.is_allowed());
                        }
                        Side::Baseline => {
                            let args = vec!["1".to_owned(), "2".to_owned(), "3".to_owned(), "4".to_owned()];
                            let one: i64 =
                                trivial.evalsha(&client, Key::from(stored.as_str()), args).await.unwrap();
                            assert_eq!(one, 1);
                        }
                    }
                    latencies.push(op.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    support::sample(all, started.elapsed().as_secs_f64())
}
