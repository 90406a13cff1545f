//! Cache reads per second and their latency (p50, p99) through `CachedNamespace` on
//! `FredCache`: L1 hits, L2 (Redis) hits and misses, against a baseline measured in the same
//! run: a raw `GET` of a value of the same size through one fred client, at the same
//! concurrency. `scripts/bench-cache.sh` runs it; results and method are in
//! docs/benchmarks.md.
//!
//! A plain load loop (harness = false), like `rate_limiter.rs`. Each (concurrency, side)
//! pair runs `ROUNDS` times, sides alternating so drift on the shared machine hits all of
//! them; the table shows medians over rounds. Without `--bench` (as `cargo test
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike as _, KeysInterface as _};
use fred::prelude::{Builder, Client, Config};
use sba_application::cache::{CachedNamespace, NamespacePolicy};
use sba_application::ports::Cache;
use sba_domain::TenantId;
use sba_infrastructure::cache::{CacheSettings, FredCache};
use sba_infrastructure::system::SystemClock;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use support::{Sample, median};

const CONCURRENCY: [usize; 2] = [1, 64];
const ROUNDS: usize = 3;
/// Distinct keys of the L1-hit side (each task walks them in turn).
const KEYS: usize = 256;
/// The working set of the L2-hit side: far larger than that node's L1 (`L2_NODE_L1_BYTES`),
/// so a read finds its key in Redis, not in L1, and fills L1 as every L2 hit does.
const COLD_KEYS: usize = 100_000;
/// The L2-hit node's L1: a few thousand entries.
const L2_NODE_L1_BYTES: u64 = 1 << 20;

const POLICY: NamespacePolicy = NamespacePolicy {
    name: "bench",
    schema: 1,
    ttl: Duration::from_hours(1),
    max_ttl: Duration::from_hours(1),
};

/// About the size of a cached tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Value {
    status: String,
    allowed_origins: Vec<String>,
    plan: Option<String>,
    rate_limit: Option<(u32, u32)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    RawGet,
    /// A bare moka lookup of the same keys and an `Arc` clone: the floor under any L1 hit
    /// built on moka in this harness (timing and task switches included).
    MokaFloor,
    L1Hit,
    L2Hit,
    Miss,
}

impl Side {
    const ALL: [Self; 5] = [Self::RawGet, Self::MokaFloor, Self::L1Hit, Self::L2Hit, Self::Miss];

    const fn label(self) -> &'static str {
        match self {
            Self::RawGet => "raw GET (baseline)",
            Self::MokaFloor => "bare moka get (floor)",
            Self::L1Hit => "L1 hit",
            Self::L2Hit => "L2 hit",
            Self::Miss => "miss",
        }
    }
}

/// What the load tasks read through.
struct Fixture {
    raw: Client,
    raw_keys: Vec<String>,
    /// The floor side's map, holding `raw_keys`.
    moka: moka::sync::Cache<String, Arc<Value>>,
    keys: Vec<String>,
    cold_keys: Vec<String>,
    absent: Vec<String>,
    /// A node whose L1 keeps everything (L1 hits).
    l1: CachedNamespace<Value>,
    /// A node whose small L1 cannot hold the cold working set (L2 hits, and misses).
    l2: CachedNamespace<Value>,
    tenant: TenantId,
}

fn main() {
    support::run_with_redis("scripts/bench-cache.sh", |url, duration| async move {
        run(&url, duration).await;
    });
}

async fn node(url: &str, l1_max_bytes: u64) -> CachedNamespace<Value> {
    let settings =
        CacheSettings { l1_max_bytes, redis_timeout: Duration::from_secs(2), ..CacheSettings::default() };
    let cache: Arc<dyn Cache> =
        Arc::new(FredCache::connect(&SecretString::from(url.to_owned()), settings).await.unwrap());
    CachedNamespace::new(cache, Arc::new(SystemClock), POLICY)
}

async fn run(url: &str, duration: Duration) {
    let raw = Builder::from_config(Config::from_url(url).unwrap()).build().unwrap();
    raw.init().await.unwrap();
    let tenant = TenantId::from_uuid(uuid::Uuid::now_v7());
    let l1 = node(url, CacheSettings::default().l1_max_bytes).await;
    let l2 = node(url, L2_NODE_L1_BYTES).await;
    let value = Value {
        status: "active".into(),
        allowed_origins: vec!["https://app.example.com".into(), "https://admin.example.com".into()],
        plan: Some("pro".into()),
        rate_limit: Some((600, 60)),
    };
    let mut raw_keys = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        l1.set(tenant, &format!("k{i}"), &value).await;
        let raw_key = format!("sba:bench:raw:{tenant}:{i}");
        // The baseline reads a value of about the stored entry's size (envelope + payload).
        let _: () = raw.set(&raw_key, "x".repeat(150), None, None, false).await.unwrap();
        raw_keys.push(raw_key);
    }
    let moka = moka::sync::Cache::new(10_000);
    for raw_key in &raw_keys {
        moka.insert(raw_key.clone(), Arc::new(value.clone()));
    }
    let keys = (0..KEYS).map(|i| format!("k{i}")).collect();
    let cold_keys: Vec<String> = (0..COLD_KEYS).map(|i| format!("cold{i}")).collect();
    store_all(&l1, tenant, &cold_keys, &value).await;
    let absent = (0..KEYS).map(|i| format!("absent{i}")).collect();
    let fixture = Arc::new(Fixture { raw, raw_keys, moka, keys, cold_keys, absent, l1, l2, tenant });
    // Warm the L1 node.
    for i in 0..KEYS {
        assert!(fixture.l1.get(tenant, &format!("k{i}")).await.is_some());
    }

    println!("| concurrency | read | reads/s | p50 / p99 µs | vs raw GET |");
    println!("|---:|---|---:|---:|---:|");
    // `SBA_BENCH_CONCURRENCY=64` limits the run to one concurrency (profiling).
    let only: Option<usize> = std::env::var("SBA_BENCH_CONCURRENCY").ok().and_then(|c| c.parse().ok());
    for concurrency in CONCURRENCY.into_iter().filter(|c| only.is_none_or(|o| o == *c)) {
        let mut samples: Vec<Vec<Sample>> = Side::ALL.iter().map(|_| Vec::new()).collect();
        for _ in 0..ROUNDS {
            for (i, side) in Side::ALL.into_iter().enumerate() {
                samples[i].push(load(side, concurrency, duration, &fixture).await);
            }
        }
        let medians: Vec<Sample> = samples.iter().map(|s| median(s)).collect();
        let baseline = medians[0].per_sec;
        for (side, m) in Side::ALL.iter().zip(&medians) {
            println!(
                "| {concurrency} | {} | {:.0} | {:.1} / {:.1} | {:.2}× |",
                side.label(),
                m.per_sec,
                m.p50_us,
                m.p99_us,
                m.per_sec / baseline
            );
        }
    }
}

/// Stores `value` under every key, 64 at a time.
async fn store_all(node: &CachedNamespace<Value>, tenant: TenantId, keys: &[String], value: &Value) {
    for chunk in keys.chunks(64) {
        let writes: Vec<_> = chunk
            .iter()
            .map(|key| {
                let (node, key, value) = (node.clone(), key.clone(), value.clone());
                tokio::spawn(async move { node.set(tenant, &key, &value).await })
            })
            .collect();
        for write in writes {
            write.await.unwrap();
        }
    }
}

/// `concurrency` tasks reading one key after another for `duration`.
async fn load(side: Side, concurrency: usize, duration: Duration, fixture: &Arc<Fixture>) -> Sample {
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let fixture = Arc::clone(fixture);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 20);
                let mut i = worker;
                while started.elapsed() < duration {
                    let key = i % KEYS;
                    i += 1;
                    let op = Instant::now();
                    match side {
                        Side::RawGet => {
                            let got: Option<String> = fixture.raw.get(&fixture.raw_keys[key]).await.unwrap();
                            assert!(got.is_some());
                        }
                        Side::MokaFloor => {
                            assert!(fixture.moka.get(&fixture.raw_keys[key]).is_some());
                        }
                        Side::L1Hit => {
                            assert!(fixture.l1.get(fixture.tenant, &fixture.keys[key]).await.is_some());
                        }
                        Side::L2Hit => {
                            // Each task walks the whole cold set (7919 is prime to its size) from its own start.
                            let cold = &fixture.cold_keys[(worker * 1_543 + i * 7_919) % COLD_KEYS];
                            assert!(fixture.l2.get(fixture.tenant, cold).await.is_some());
                        }
                        Side::Miss => {
                            assert!(fixture.l2.get(fixture.tenant, &fixture.absent[key]).await.is_none());
                        }
                    }
                    latencies.push(op.elapsed());
                    // An L1 hit never waits: without this the load tasks would starve the
                    // runtime's other tasks (fred's connections) as no request handler does.
                    if i % 32 == 0 {
                        tokio::task::yield_now().await;
                    }
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
