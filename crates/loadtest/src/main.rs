//! `sba-load`: WebSocket fan-out load tool. `sba-load run` opens subscribers on one or more
//! `sba serve` nodes (`GET /v1/stream`), ingests timestamped deltas through the public API
//! and reports deliveries, latency, loss, duplicates, coalescing, 1013 closes and server
//! memory per connection; `sba-load floor` runs the same load against a minimal broadcast
//! server inside the tool, the floor the benchmark compares with (docs/benchmarks.md,
//! "WebSocket fan-out"; scripts/bench-stream.sh).

mod accounting;
mod driver;
mod floor;
mod frame;
mod ingest;
mod report;
mod subscriber;
mod token;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::driver::{Load, Target};
use crate::ingest::{Api, Producer};
use crate::report::Report;
use crate::token::Signer;

#[derive(Debug, Parser)]
#[command(name = "sba-load", about = "WebSocket fan-out load tool for sba serve")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load `sba serve` nodes: subscribers on GET /v1/stream, events through the public API.
    Run(RunArgs),
    /// The same load against a minimal broadcast WebSocket server inside this process.
    Floor(LoadArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Base URLs of the nodes (`http://127.0.0.1:8080,http://127.0.0.1:8081`); subscribers
    /// and ingest batches go to them in turn.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// The servers' HS256 secret (the first of `SBA_AUTH__JWT_SECRETS`).
    #[arg(long, env = "SBA_LOAD_SECRET", hide_env_values = true, conflicts_with = "token_file")]
    secret: Option<String>,
    /// A file holding that secret (kept off the command line).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// `iss` of the tokens (`SBA_AUTH__ISSUER`).
    #[arg(long)]
    issuer: Option<String>,
    /// `aud` of the tokens (`SBA_AUTH__AUDIENCE`).
    #[arg(long)]
    audience: Option<String>,
    /// Tenant of the load (a fresh one by default).
    #[arg(long)]
    tenant: Option<String>,
    /// Pids of the server processes whose resident memory is read (`VmRSS`).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// WebSocket subscribers in all.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Runs the subscribers are spread over (the events too).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Events per second ingested, in all.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Events per ingest call.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Bytes of filler added to each delta's text (bigger events fill slow readers' socket
    /// buffers sooner).
    #[arg(long, default_value_t = 0)]
    pad: usize,
    /// Seconds of ingest.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Subscribers (of the total) that stop reading once subscribed, until the ingest ends.
    #[arg(long, default_value_t = 0)]
    slow: usize,
    /// Seconds the subscribers may take after the ingest to receive every event.
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// Seconds all subscribers may take to connect and subscribe.
    #[arg(long, default_value_t = 120.0)]
    connect_timeout: f64,
    /// Name of the load in the table.
    #[arg(long, default_value = "load")]
    label: String,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl LoadArgs {
    fn load(&self) -> anyhow::Result<Load> {
        if self.runs == 0
            || self.batch == 0
            || self.subscribers == 0
            || self.rate <= 0.0
            || self.duration <= 0.0
        {
            bail!("--runs, --batch, --subscribers, --rate and --duration must be positive");
        }
        if self.batch > 500 {
            bail!("--batch is at most 500 (the ingest limit)");
        }
        if self.pad.saturating_mul(self.batch) > 768 * 1024 {
            bail!("--pad × --batch must stay under the ingest's 1 MiB body limit");
        }
        Ok(Load {
            label: self.label.clone(),
            subscribers: self.subscribers,
            slow: self.slow,
            rate: self.rate,
            batch: self.batch,
            pad: self.pad,
            duration: Duration::from_secs_f64(self.duration),
            drain: Duration::from_secs_f64(self.drain.max(0.0)),
            connect_timeout: Duration::from_secs_f64(self.connect_timeout.max(1.0)),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    raise_open_files();
    let cli = Cli::parse();
    let (args, report) = match cli.command {
        Command::Run(run) => {
            let load = run.load.load()?;
            let target = sba_target(&run).await?;
            (run.load, driver::drive(&load, target).await?)
        }
        Command::Floor(args) => {
            let load = args.load()?;
            let target = floor_target(&args).await?;
            (args, driver::drive(&load, target).await?)
        }
    };
    emit(&args, &report)
}

/// Thousands of sockets need more than the usual 1,024 descriptors: the soft limit goes up
/// to the hard one.
fn raise_open_files() {
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        eprintln!("sba-load: could not raise the open-file limit to {hard}: {e}");
    }
}

async fn sba_target(args: &RunArgs) -> anyhow::Result<Target> {
    let secret = match (&args.secret, &args.token_file) {
        (Some(secret), _) => secret.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => bail!("--secret (or SBA_LOAD_SECRET) or --token-file is required"),
    };
    let tenant = args.tenant.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let signer = Signer::new(&secret, args.issuer.clone(), args.audience.clone(), tenant);
    let ttl = Duration::from_hours(6);
    let bearer = |sub: &str, role: &str| -> anyhow::Result<String> {
        Ok(format!("Bearer {}", signer.sign(sub, role, ttl).context("signing a token")?))
    };
    let nodes: Vec<String> = args.nodes.iter().map(|n| n.trim_end_matches('/').to_owned()).collect();
    let api = Api {
        http: reqwest::Client::builder().tcp_nodelay(true).http1_only().build().context("the HTTP client")?,
        nodes: nodes.clone(),
        user: bearer("sba-load-user", "authenticated")?,
        agent: bearer("sba-load-agent", "agent")?,
    };
    let mut runs = Vec::new();
    let mut ids = Vec::new();
    for run in 0..args.load.runs {
        let (id, last) = api.start_run(run % nodes.len()).await.context("starting a run")?;
        runs.push((format!("run:{id}"), last));
        ids.push(id);
    }
    let stream_urls = nodes
        .iter()
        .map(|n| {
            let ws = n.strip_prefix("https://").map_or_else(
                || format!("ws://{}", n.strip_prefix("http://").unwrap_or(n)),
                |rest| format!("wss://{rest}"),
            );
            format!("{ws}/v1/stream")
        })
        .collect();
    Ok(Target {
        name: "sba",
        stream_urls,
        authorization: Some(api.user.clone()),
        runs,
        producer: Producer::Api { api, runs: ids },
        server_pids: args.server_pid.clone(),
    })
}

async fn floor_target(args: &LoadArgs) -> anyhow::Result<Target> {
    let hub = Arc::new(floor::Hub::new(args.runs));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the floor server")?;
    let url = format!("ws://{}/v1/stream", listener.local_addr()?);
    tokio::spawn(floor::serve(listener, Arc::clone(&hub)));
    Ok(Target {
        name: "floor",
        stream_urls: vec![url],
        authorization: None,
        runs: hub.channels().into_iter().map(|c| (c, 0)).collect(),
        producer: Producer::Floor(hub),
        server_pids: Vec::new(),
    })
}

fn emit(args: &LoadArgs, report: &Report) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(report.markdown().as_bytes())?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
