//! What the load-loop benchmarks (`rate_limiter.rs`, `cache.rs`) share: their start and
//! their statistics.

use std::future::Future;
use std::time::Duration;

/// Runs `bench(redis_url, seconds per side)` on a 2-thread runtime when invoked with
/// `--bench`; does nothing otherwise (as `cargo test --all-targets` and nextest run it).
/// `script` names the script that starts Redis, for the message when it is missing.
pub fn run_with_redis<F: Future<Output = ()>>(script: &str, bench: impl FnOnce(String, Duration) -> F) {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") || !args.iter().any(|a| a == "--bench") {
        return;
    }
    let url = std::env::var("SBA_TEST_REDIS_URL")
        .unwrap_or_else(|_| panic!("SBA_TEST_REDIS_URL is not set: run {script} (it starts Redis)"));
    let seconds: u64 = std::env::var("SBA_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench(url, Duration::from_secs(seconds)));
}

/// One side's run: operations per second and latency percentiles.
pub struct Sample {
    pub per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// The sample of `latencies` (one per operation) completed in `elapsed_secs`.
pub fn sample(mut latencies: Vec<Duration>, elapsed_secs: f64) -> Sample {
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e6
    };
    Sample { per_sec: latencies.len() as f64 / elapsed_secs, p50_us: at(0.50), p99_us: at(0.99) }
}

/// The median of each figure over rounds.
pub fn median(samples: &[Sample]) -> Sample {
    let pick = |f: fn(&Sample) -> f64| {
        let mut values: Vec<f64> = samples.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    Sample { per_sec: pick(|s| s.per_sec), p50_us: pick(|s| s.p50_us), p99_us: pick(|s| s.p99_us) }
}
