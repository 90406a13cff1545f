//! What both parts share: the benchmark's settings and environment, the `sba serve` child
//! process, the Redis database the benchmark owns, the metrics it reads from the worker, and
//! the statistics.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::interfaces::{ClientLike as _, KeysInterface as _};
use fred::prelude::{Builder, Client, Config};
use fred::types::{CustomCommand, Value};
use metrics_util::debugging::{DebugValue, Snapshotter};
use sba_infrastructure::config::{EnvSnapshot, LoadOptions, Settings, load};

/// The HS256 secret the benchmark's server verifies and the benchmark signs with.
const SECRET: &str = "bench-secret-bench-secret-bench-secret-0001";

/// What the benchmark is told by its environment (see `scripts/bench-events.sh`).
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The private PostgreSQL's admin URL (`SBA_TEST_DATABASE_URL`).
    pub admin_url: String,
    /// The private Redis with the benchmark's database number (`SBA_TEST_REDIS_URL` and
    /// `SBA_BENCH_REDIS_DB`).
    pub redis_url: String,
    pub redis_db: u32,
    /// The `sba` binary to serve (`SBA_BIN`, else the one cargo built with this benchmark).
    pub sba_bin: PathBuf,
    /// Which parts run (`SBA_BENCH_PARTS`: `ingest`, `persist` or both).
    pub ingest: bool,
    pub persist: bool,
    /// Load per side and round of the ingest part (`SBA_BENCH_SECONDS`, default 2).
    pub seconds: Duration,
    /// Rounds of each part (`SBA_BENCH_ROUNDS`, default 3).
    pub rounds: usize,
    /// Concurrent clients of the ingest part, each on its own run (`SBA_BENCH_CLIENTS`,
    /// default 64).
    pub clients: usize,
    /// Ingest batch sizes (`SBA_BENCH_BATCHES`, default `1,10,100`).
    pub batches: Vec<usize>,
    /// Runs of each side of the persistence part (`SBA_BENCH_PERSIST_RUNS`, default 1000).
    pub persist_runs: usize,
    /// Events per run and round of the persistence part, so per ledger transaction
    /// (`SBA_BENCH_PERSIST_BATCH`, default 100).
    pub persist_batch: u64,
    /// How long the steady load of the lag measurement lasts (`SBA_BENCH_LAG_SECONDS`,
    /// default 10).
    pub lag_seconds: Duration,
    /// The steady load's rate as a share of the worker's measured drain rate
    /// (`SBA_BENCH_LAG_SHARE`, default 0.5).
    pub lag_share: f64,
}

impl BenchConfig {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let number = |name: &str, default: u64| -> u64 {
            var(name)
                .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number, not {v}")))
        };
        let admin_url = var("SBA_TEST_DATABASE_URL")
            .unwrap_or_else(|| panic!("SBA_TEST_DATABASE_URL is not set: run scripts/bench-events.sh"));
        let redis_base = var("SBA_TEST_REDIS_URL")
            .unwrap_or_else(|| panic!("SBA_TEST_REDIS_URL is not set: run scripts/bench-events.sh"));
        let redis_db = u32::try_from(number("SBA_BENCH_REDIS_DB", 13)).unwrap();
        assert!((1..16).contains(&redis_db), "SBA_BENCH_REDIS_DB must be 1 to 15: database 0 is the tests'");
        let mut redis_url = reqwest::Url::parse(&redis_base).expect("SBA_TEST_REDIS_URL is a URL");
        redis_url.set_path(&format!("/{redis_db}"));
        let parts = var("SBA_BENCH_PARTS").unwrap_or_else(|| "ingest persist".into());
        let batches = var("SBA_BENCH_BATCHES")
            .unwrap_or_else(|| "1,10,100".into())
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap_or_else(|_| panic!("SBA_BENCH_BATCHES: `{s}` is not a number")))
            .collect();
        Self {
            admin_url,
            redis_url: redis_url.to_string(),
            redis_db,
            sba_bin: var("SBA_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sba")), PathBuf::from),
            ingest: parts.contains("ingest"),
            persist: parts.contains("persist"),
            seconds: Duration::from_secs(number("SBA_BENCH_SECONDS", 2)),
            rounds: usize::try_from(number("SBA_BENCH_ROUNDS", 3)).unwrap().max(1),
            clients: usize::try_from(number("SBA_BENCH_CLIENTS", 64)).unwrap().max(1),
            batches,
            persist_runs: usize::try_from(number("SBA_BENCH_PERSIST_RUNS", 1000)).unwrap().max(1),
            persist_batch: number("SBA_BENCH_PERSIST_BATCH", 100).max(1),
            lag_seconds: Duration::from_secs(number("SBA_BENCH_LAG_SECONDS", 10)),
            lag_share: var("SBA_BENCH_LAG_SHARE")
                .map_or(0.5, |v| v.parse().expect("SBA_BENCH_LAG_SHARE is a number")),
        }
    }
}

/// The environment of the benchmark's `sba` processes, and the same settings loaded in this
/// process (for the worker, the sequencer, the store and the token signer).
pub struct Environment {
    pub pairs: Vec<(String, String)>,
    pub settings: Settings,
    pub port: u16,
}

impl Environment {
    /// `sba serve` on a free loopback port, on the database at `database_url` and the
    /// benchmark's Redis database; no in-process worker, no rate limit, no demo agent.
    pub fn new(config: &BenchConfig, database_url: &str, work: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pairs: Vec<(String, String)> = [
            ("SBA_DATA_DIR", work.display().to_string()),
            ("DATABASE_URL", database_url.to_owned()),
            ("REDIS_URL", config.redis_url.clone()),
            ("PORT", port.to_string()),
            ("SBA_SERVER__HOST", "127.0.0.1".to_owned()),
            ("SBA_SERVER__SHUTDOWN_TIMEOUT_SECS", "1".to_owned()),
            ("SBA_AUTH__JWT_SECRETS", SECRET.to_owned()),
            ("SBA_AUTH__ISSUER", "sba-bench".to_owned()),
            ("SBA_AUTH__AUDIENCE", "sba-bench".to_owned()),
            // The worker is measured on its own (the persistence part), not beside ingest.
            ("SBA_WORKER__IN_PROCESS", "false".to_owned()),
            // Ingest is measured, not the limiter (docs/benchmarks.md has its own section).
            ("SBA_RATE_LIMIT__ENABLED", "false".to_owned()),
            ("SBA_DEMO__ECHO_AGENT", "false".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let settings = load(
            &EnvSnapshot::from_pairs(pairs.clone()),
            &LoadOptions { config_dir: work.join("config"), create_dev_secret: false },
        )
        .unwrap_or_else(|problems| panic!("the benchmark's settings: {problems}"));
        Self { pairs, settings, port }
    }
}

/// A running `sba serve`, stopped when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    log: PathBuf,
}

impl Server {
    /// Starts `sba serve` with exactly `env`'s variables (and `PATH`) and waits until it
    /// answers `/healthz`.
    pub async fn start(bin: &Path, env: &Environment, work: &Path) -> Self {
        let log = work.join("server.log");
        let out = File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut server = Self { child, base: format!("http://127.0.0.1:{}", env.port), log };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(format!("{}/healthz", server.base)).send().await
                && response.status().is_success()
            {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("sba serve exited ({status}):\n{}", server.log_tail());
            }
            assert!(Instant::now() < deadline, "sba serve did not answer in 30 s:\n{}", server.log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's log, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The process id, for its CPU time.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Stops it (SIGKILL: nothing of it is measured after this).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain fred client on the benchmark's Redis database, for the baselines and the
/// housekeeping.
pub async fn redis_client(url: &str) -> Client {
    let client = Builder::from_config(Config::from_url(url).unwrap()).build().unwrap();
    client.init().await.expect("connecting to the benchmark's Redis database");
    client
}

/// Deletes every key of the benchmark's Redis database that the benchmark writes
/// (`sba:*` of the server, the worker and the sequencer; `bench:*` of the baselines). The
/// database (`SBA_BENCH_REDIS_DB`) is the benchmark's own: the tests use database 0.
pub async fn clear_redis(client: &Client) {
    for pattern in ["sba:*", "bench:*"] {
        let mut cursor = "0".to_owned();
        loop {
            let reply: Value = client
                .custom(
                    CustomCommand::new_static("SCAN", None, false),
                    vec![cursor.clone(), "MATCH".into(), pattern.into(), "COUNT".into(), "1000".into()],
                )
                .await
                .unwrap();
            let Value::Array(mut parts) = reply else { panic!("SCAN answered {reply:?}") };
            let keys: Vec<String> = parts.pop().unwrap().convert().unwrap();
            cursor = parts.pop().unwrap().convert().unwrap();
            if !keys.is_empty() {
                let _: i64 = client.unlink(keys).await.unwrap();
            }
            if cursor == "0" {
                break;
            }
        }
    }
}

/// Redis' CPU time so far (user + system, seconds), from `INFO cpu`: the server's work per
/// event is the difference over a measurement divided by its events. It counts every
/// client of that Redis, so it is exact only on the script's own Redis.
pub async fn redis_cpu_seconds(client: &Client) -> f64 {
    let info: String =
        client.custom(CustomCommand::new_static("INFO", None, false), vec!["cpu".to_owned()]).await.unwrap();
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| matches!(*name, "used_cpu_sys" | "used_cpu_user"))
        .map(|(_, value)| value.trim().parse::<f64>().unwrap())
        .sum()
}

/// What the worker reported through its metrics since the last [`MetricsTap::take`].
#[derive(Debug, Default)]
pub struct Taken {
    /// `sba_worker_events_persisted_total`: events committed to `agent_events`.
    pub persisted: u64,
    /// `sba_worker_lag_seconds`: one value per acknowledged queue entry.
    pub lags: Vec<f64>,
}

/// Reads the in-process worker's metrics (the process's recorder is a
/// `DebuggingRecorder`: every take drains what was recorded since the last).
#[derive(Clone)]
pub struct MetricsTap(pub Arc<Snapshotter>);

impl MetricsTap {
    pub fn take(&self) -> Taken {
        let mut taken = Taken::default();
        for (key, _, _, value) in self.0.snapshot().into_vec() {
            match (key.key().name(), value) {
                ("sba_worker_events_persisted_total", DebugValue::Counter(n)) => taken.persisted += n,
                ("sba_worker_lag_seconds", DebugValue::Histogram(values)) => {
                    taken.lags.extend(values.into_iter().map(|v| v.0));
                }
                _ => {}
            }
        }
        taken
    }
}

/// One side's measurement in one round.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub events_per_sec: f64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time per event, µs, of Redis, of `sba serve` and of this process (the clients).
    pub cpu_us_per_event: Cpu,
}

/// CPU time of the three processes that share the machine's cores during a measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub redis: f64,
    pub server: f64,
    pub clients: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Self;
    fn sub(self, before: Self) -> Self {
        Self {
            redis: self.redis - before.redis,
            server: self.server - before.server,
            clients: self.clients - before.clients,
        }
    }
}

/// CPU time (seconds) of every live thread of process `pid` (`self` for this one), from
/// the scheduler's statistics (`/proc/<pid>/task/*/schedstat`, nanoseconds on a CPU).
pub fn process_cpu_seconds(pid: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return f64::NAN };
    let nanos: f64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<f64>().ok())
        .sum();
    nanos / 1e9
}

/// The sample of `latencies` (one per request of `batch` events) done in `elapsed`, with
/// the CPU time (seconds) each process spent meanwhile.
pub fn sample(mut latencies: Vec<Duration>, batch: usize, elapsed: Duration, cpu: Cpu) -> Sample {
    latencies.sort_unstable();
    let requests = latencies.len() as f64;
    let events = requests * batch as f64;
    let per_event = |seconds: f64| seconds * 1e6 / events;
    Sample {
        events_per_sec: events / elapsed.as_secs_f64(),
        requests_per_sec: requests / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        cpu_us_per_event: Cpu {
            redis: per_event(cpu.redis),
            server: per_event(cpu.server),
            clients: per_event(cpu.clients),
        },
    }
}

/// The `q` quantile of sorted durations, in milliseconds.
pub fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// The median of each figure over rounds.
pub fn median(samples: &[Sample]) -> Sample {
    let pick = |f: fn(&Sample) -> f64| median_of(samples.iter().map(f).collect());
    Sample {
        events_per_sec: pick(|s| s.events_per_sec),
        requests_per_sec: pick(|s| s.requests_per_sec),
        p50_ms: pick(|s| s.p50_ms),
        p99_ms: pick(|s| s.p99_ms),
        cpu_us_per_event: Cpu {
            redis: pick(|s| s.cpu_us_per_event.redis),
            server: pick(|s| s.cpu_us_per_event.server),
            clients: pick(|s| s.cpu_us_per_event.clients),
        },
    }
}

/// The median of `values` (the upper one of an even count).
pub fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `1,234,567` for a count.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
