//! The `sba` command line: `serve` (the default), `worker` (and `worker dead-letters`),
//! `migrate`, `config check`, `dev-token` and `healthcheck`.

#![allow(clippy::print_stdout, reason = "a command line prints its results on stdout")]

use std::process::ExitCode;
use std::time::Duration;

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};

use clap::{Args, Parser, Subcommand};
use sba_application::ports::EventQueue;
use sba_domain::{Role, RunId, TenantId, UserId};
use sba_infrastructure::auth::DevTokenRequest;
use sba_infrastructure::config::{EnvSnapshot, Environment, LoadOptions, Settings, load};
use sba_infrastructure::redis::events::keys::PERSISTERS;

use crate::startup::{
    Application, Worker, event_queue, open_store, shutdown_signal, standalone_admin_server, token_signer,
};
use crate::telemetry;

/// The longest lifetime `sba dev-token` signs (24 h): a development token is a convenience
/// for a session at the keyboard, not a credential to keep.
pub const DEV_TOKEN_MAX_TTL_SECS: u64 = 24 * 60 * 60;

/// SBA: a multi-tenant backend for AI-agent runs.
#[derive(Debug, Parser)]
#[command(name = "sba", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default when no command is given).
    Serve,
    /// Run background work (the run-expiry sweep; with Redis, the event persister) until
    /// SIGTERM or Ctrl-C.
    Worker {
        #[command(subcommand)]
        action: Option<WorkerAction>,
    },
    /// Apply, revert or list migrations of the internal store.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print a development token signed with the first configured HS256 secret.
    DevToken {
        /// Tenant id (a UUID).
        #[arg(long)]
        tenant: String,
        /// User id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// One of authenticated, admin, agent, service.
        #[arg(long, default_value = "authenticated")]
        role: String,
        /// Lifetime of the token in seconds, at most 86400 (24 h).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=DEV_TOKEN_MAX_TTL_SECS))]
        ttl_secs: u64,
    },
    /// Exit 0 when the `sba serve` of this machine's configuration (`PORT`,
    /// `SBA_SERVER__HOST`) answers 200 on `/healthz` within 2 s, 1 otherwise: the container
    /// image's HEALTHCHECK, which has no curl.
    Healthcheck {
        /// Probe readiness (`/readyz`: the dependencies answer) instead of liveness.
        #[arg(long)]
        ready: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkerAction {
    /// List the event queue's dead letters (never their events), or replay them.
    DeadLetters(DeadLetterArgs),
}

/// `sba worker dead-letters`.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterArgs {
    /// The most dead letters listed.
    #[arg(long, default_value_t = 100, conflicts_with = "replay",
        value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub limit: u64,
    /// Put them back on their partition queues, in the order they were dead-lettered,
    /// instead of listing them (once the cause is fixed).
    #[arg(long)]
    pub replay: bool,
    /// With --replay: only this run's dead letters.
    #[arg(long, requires = "replay")]
    pub run: Option<RunId>,
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the last applied migrations.
    Down {
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied; exits 1 when some are pending.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration (secrets redacted) and every problem found.
    Check,
}

/// Runs the command and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let env = EnvSnapshot::from_process();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Config { action: ConfigAction::Check } => config_check(&env),
        Command::DevToken { tenant, user, role, ttl_secs } => {
            run_dev_token(&env, &tenant, &user, &role, ttl_secs)
        }
        Command::Migrate { action } => with_settings(&env, |settings| block_on(migrate(settings, action))),
        Command::Serve => with_settings(&env, |settings| block_on(serve(settings))),
        Command::Worker { action: None } => with_settings(&env, |settings| block_on(worker(settings))),
        Command::Worker { action: Some(WorkerAction::DeadLetters(args)) } => {
            with_settings(&env, |settings| block_on(dead_letters_command(&settings, &args)))
        }
        Command::Healthcheck { ready } => healthcheck(&env, ready),
    }
}

/// Loads the settings or prints every problem and fails, before anything else happens.
fn with_settings(env: &EnvSnapshot, then: impl FnOnce(Settings) -> anyhow::Result<ExitCode>) -> ExitCode {
    let settings = match load(env, &LoadOptions::default()) {
        Ok(settings) => settings,
        Err(problems) => {
            eprint!("sba: {problems}");
            return ExitCode::from(2);
        }
    };
    let telemetry = telemetry::init(&settings.log, settings.otlp_endpoint.as_ref());
    let code = match then(settings) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "sba failed");
            eprintln!("sba: {error:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

fn block_on<F: Future<Output = anyhow::Result<ExitCode>>>(future: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(future)
}

async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    let application = Application::build(settings).await?;
    application.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}

async fn worker(settings: Settings) -> anyhow::Result<ExitCode> {
    // First: the recorder must be installed before the worker registers its metrics.
    let admin = standalone_admin_server(&settings)?;
    let worker = Worker::build(&settings).await?;
    worker.run_until_stopped(shutdown_signal()).await;
    if let Some((admin, _)) = admin {
        admin.stop(true).await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn dead_letters_command(settings: &Settings, args: &DeadLetterArgs) -> anyhow::Result<ExitCode> {
    let Some(queue) = event_queue(settings, PERSISTERS).await? else {
        anyhow::bail!(
            "dead letters exist only with REDIS_URL: without it events are stored at ingest and there is no queue"
        );
    };
    print!("{}", dead_letters(queue.as_ref(), args).await?);
    Ok(ExitCode::SUCCESS)
}

/// What `sba worker dead-letters` prints: the dead letters of `queue` as a table
/// (partition, queue id, tenant, run, seq range, attempts, reason; never event data), or,
/// with `--replay`, how many it put back.
///
/// # Errors
/// When the queue fails.
pub async fn dead_letters(queue: &dyn EventQueue, args: &DeadLetterArgs) -> anyhow::Result<String> {
    let mut out = String::new();
    if args.replay {
        let replayed = queue.replay_dead_letters(args.run).await?;
        let _ = match args.run {
            Some(run) => writeln!(out, "replayed {replayed} dead letter(s) of run {run}"),
            None => writeln!(out, "replayed {replayed} dead letter(s)"),
        };
        return Ok(out);
    }
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let letters = queue.dead_letters(limit).await?;
    if letters.is_empty() {
        out.push_str("no dead letters\n");
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "{:<9} {:<20} {:<36} {:<36} {:<13} {:<8} reason",
        "partition", "queue id", "tenant", "run", "seqs", "attempts"
    );
    for letter in &letters {
        let seqs = format!("{}-{}", letter.first_seq, letter.last_seq);
        // One line per letter, whatever the reason holds.
        let reason: String = letter.reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let _ = writeln!(
            out,
            "{:<9} {:<20} {:<36} {:<36} {:<13} {:<8} {reason}",
            letter.partition,
            letter.entry_id,
            letter.tenant.to_string(),
            letter.run.to_string(),
            seqs,
            letter.attempts
        );
    }
    let _ = writeln!(out, "{} dead letter(s)", letters.len());
    if letters.len() >= limit {
        let _ = writeln!(out, "(the limit: there may be more; see --limit)");
    }
    Ok(out)
}

async fn migrate(settings: Settings, action: MigrateAction) -> anyhow::Result<ExitCode> {
    let store = open_store(&settings, 2).await?;
    let mut code = ExitCode::SUCCESS;
    match action {
        MigrateAction::Up => {
            store.migrate_up().await?;
            println!("migrations applied to {}", store.description());
        }
        MigrateAction::Down { steps } => {
            store.migrate_down(steps).await?;
            println!("reverted {steps} migration(s) on {}", store.description());
        }
        MigrateAction::Status => {
            let states = store.migration_status().await?;
            for state in &states {
                println!("{:<8} {}", if state.applied { "applied" } else { "pending" }, state.name);
            }
            let pending = states.iter().filter(|s| !s.applied).count();
            println!("{pending} pending migration(s) on {}", store.description());
            if pending > 0 {
                code = ExitCode::from(1);
            }
        }
    }
    store.close().await;
    Ok(code)
}

fn config_check(env: &EnvSnapshot) -> ExitCode {
    match load(env, &LoadOptions { create_dev_secret: false, ..LoadOptions::default() }) {
        Ok(settings) => {
            print!("{settings}");
            for warning in &settings.warnings {
                println!("warning: {warning}");
            }
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            print!("{problems}");
            ExitCode::from(2)
        }
    }
}

/// The bound of a whole `sba healthcheck` probe step (connecting, sending, reading).
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `sba healthcheck`: one `GET` to the local server, exit 0 on 200. Logs nothing.
fn healthcheck(env: &EnvSnapshot, ready: bool) -> ExitCode {
    let settings = match load(env, &LoadOptions { create_dev_secret: false, ..LoadOptions::default() }) {
        Ok(settings) => settings,
        Err(problems) => {
            eprint!("sba: {problems}");
            return ExitCode::from(2);
        }
    };
    let path = if ready { "/readyz" } else { "/healthz" };
    let address = SocketAddr::new(probe_host(settings.server.host), settings.server.port);
    match http_status(address, path, HEALTHCHECK_TIMEOUT) {
        Ok(200) => {
            println!("{path} on {address}: 200");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("sba: {path} on {address} answered {status}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("sba: {path} on {address}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Where a probe on this machine reaches a server bound to `host`: the loopback address of
/// its family when it listens on every address.
fn probe_host(host: IpAddr) -> IpAddr {
    match host {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// The status code of `GET path` at `address` (HTTP/1.1, connection closed after).
fn http_status(address: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: `write!` would send the request piecemeal.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    // "HTTP/1.1 200": the status line's first 12 bytes are all a probe needs.
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head)?;
    let status = head
        .strip_prefix(b"HTTP/1.")
        .and_then(|rest| rest.get(2..))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok());
    status.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP/1 status line"))
}

/// Refuses production before loading anything (its settings may not even load there), then
/// signs.
fn run_dev_token(env: &EnvSnapshot, tenant: &str, user: &str, role: &str, ttl_secs: u64) -> ExitCode {
    if let Err(refusal) = refuse_production(env.get("SBA_ENV").and_then(Environment::from_name)) {
        eprintln!("sba: {refusal}");
        return ExitCode::FAILURE;
    }
    with_settings(env, |settings| dev_token(&settings, tenant, user, role, ttl_secs))
}

fn dev_token(
    settings: &Settings,
    tenant: &str,
    user: &str,
    role: &str,
    ttl_secs: u64,
) -> anyhow::Result<ExitCode> {
    // Checked again on the loaded settings: a configuration file can name the environment too.
    refuse_production(Some(settings.environment))?;
    let request = DevTokenRequest {
        tenant_id: tenant.parse::<TenantId>().map_err(|e| anyhow::anyhow!("--tenant: {e}"))?,
        user_id: UserId::parse(user).map_err(|e| anyhow::anyhow!("--user: {e}"))?,
        role: role.parse::<Role>().map_err(|_| {
            anyhow::anyhow!("--role: `{role}` is not one of authenticated, admin, agent, service")
        })?,
        ttl: Duration::from_secs(ttl_secs),
    };
    let token = token_signer(settings)?.sign(&request)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// `sba dev-token` signs with the server's own secret whatever tenant and role it is given:
/// in production that would be a way around the real issuer.
fn refuse_production(environment: Option<Environment>) -> anyhow::Result<()> {
    if environment == Some(Environment::Production) {
        anyhow::bail!(
            "dev-token refuses to run in production (SBA_ENV=production): tokens there come from the \
             real issuer (Supabase Auth)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use clap::Parser as _;

    use super::*;

    const TENANT: &str = "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";

    fn dev_token_args(ttl_secs: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([
            "sba",
            "dev-token",
            "--tenant",
            TENANT,
            "--user",
            "alice",
            "--ttl-secs",
            ttl_secs,
        ])
    }

    #[test]
    fn dev_token_refuses_to_run_in_production() {
        for name in ["production", "prod"] {
            let env = EnvSnapshot::from_pairs([("SBA_ENV", name)]);
            let cli = dev_token_args("60").unwrap();
            let Some(Command::DevToken { tenant, user, role, ttl_secs }) = cli.command else {
                unreachable!()
            };
            assert_eq!(
                run_dev_token(&env, &tenant, &user, &role, ttl_secs),
                ExitCode::FAILURE,
                "SBA_ENV={name}"
            );
        }
        let refusal = refuse_production(Some(Environment::Production)).unwrap_err().to_string();
        assert!(refusal.contains("refuses to run in production"), "{refusal}");
        assert!(refuse_production(Some(Environment::Development)).is_ok());
        assert!(refuse_production(None).is_ok());
    }

    #[test]
    fn worker_without_a_subcommand_runs_the_worker_and_dead_letters_take_their_options() {
        let cli = Cli::try_parse_from(["sba", "worker"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Worker { action: None })));

        let cli = Cli::try_parse_from(["sba", "worker", "dead-letters"]).unwrap();
        let Some(Command::Worker { action: Some(WorkerAction::DeadLetters(args)) }) = cli.command else {
            unreachable!()
        };
        assert_eq!((args.limit, args.replay, args.run), (100, false, None));

        let run = "0192f1d2-8a3b-7c4d-9e5f-60718293a4b5";
        let cli = Cli::try_parse_from(["sba", "worker", "dead-letters", "--replay", "--run", run]).unwrap();
        let Some(Command::Worker { action: Some(WorkerAction::DeadLetters(args)) }) = cli.command else {
            unreachable!()
        };
        assert!(args.replay);
        assert_eq!(args.run, Some(run.parse().unwrap()));

        for refused in [
            &["sba", "worker", "dead-letters", "--run", run][..],
            &["sba", "worker", "dead-letters", "--replay", "--run", "not-a-uuid"],
            &["sba", "worker", "dead-letters", "--replay", "--limit", "5"],
            &["sba", "worker", "dead-letters", "--limit", "0"],
        ] {
            assert!(Cli::try_parse_from(refused).is_err(), "{refused:?}");
        }
    }

    #[tokio::test]
    async fn dead_letters_without_redis_say_they_need_it() {
        let dir = std::env::temp_dir().join(format!("sba-cli-unit-{}", uuid::Uuid::new_v4().simple()));
        let env = EnvSnapshot::from_pairs([("SBA_DATA_DIR", dir.display().to_string())]);
        let settings =
            load(&env, &LoadOptions { config_dir: dir.join("config"), create_dev_secret: false }).unwrap();
        let args = DeadLetterArgs { limit: 10, replay: false, run: None };
        let error = dead_letters_command(&settings, &args).await.unwrap_err().to_string();
        assert!(error.starts_with("dead letters exist only with REDIS_URL"), "{error}");
    }

    /// A one-shot server on a free local port answering `reply` to the first request.
    fn answering(reply: &'static [u8]) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // The whole request first: closing on unread bytes would reset the connection.
            let mut request = Vec::new();
            let mut buffer = [0_u8; 256];
            while !request.ends_with(b"\r\n\r\n") {
                let read = stream.read(&mut buffer).unwrap();
                assert!(read > 0, "the request ended early: {request:?}");
                request.extend_from_slice(&buffer[..read]);
            }
            // The client may close after the status line, before the rest is written.
            let _ = stream.write_all(reply);
        });
        address
    }

    #[test]
    fn healthcheck_probe_reads_the_status_code_and_refuses_what_is_not_http() {
        let timeout = Duration::from_secs(2);
        let ok = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(http_status(ok, "/healthz", timeout).unwrap(), 200);
        let down = answering(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert_eq!(http_status(down, "/readyz", timeout).unwrap(), 503);
        let other = answering(b"SSH-2.0-OpenSSH_9.2p1\r\n");
        assert!(http_status(other, "/healthz", timeout).is_err());
        assert_eq!(probe_host("0.0.0.0".parse().unwrap()), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(probe_host("::".parse().unwrap()), IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(probe_host("10.1.2.3".parse().unwrap()), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn dev_token_ttl_is_capped_at_24_hours() {
        assert!(dev_token_args("86400").is_ok());
        let error = dev_token_args("86401").unwrap_err().to_string();
        assert!(error.contains("86400"), "{error}");
        assert!(dev_token_args("0").is_err());
        assert!(dev_token_args("18446744073709551615").is_err());
    }
}
