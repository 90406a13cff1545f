//! The typed, validated configuration of a process.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::collections::HashMap;

use ipnet::IpNet;
use sba_application::ratelimit::{FailMode, Rule};
use sba_application::ratelimit_ws::WsOp;
use sba_application::stream::outbound::OutboundLimits;
use sba_application::stream::throttle::ThrottlePolicy;
use sba_domain::ratelimit::Quota;
use sba_domain::{TenantId, WebOrigin};
use secrecy::SecretString;
use url::Url;
use validator::{Validate, ValidationError};

use crate::cache::CacheSettings;
use crate::internal_store::StoreLocation;

/// Which rules apply: development needs nothing, production requires every external service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    /// The environment `SBA_ENV` names (`development`/`dev`, `production`/`prod`); `None` for
    /// any other name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim() {
            "development" | "dev" => Some(Self::Development),
            "production" | "prod" => Some(Self::Production),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

/// Everything a process needs to know, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: Environment,
    /// Where development mode keeps its SQLite file and generated secret.
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub store: StoreSettings,
    /// `None`: in-process adapters (development only).
    pub redis: Option<RedisSettings>,
    /// `None`: the embedded store (development only).
    pub supabase: Option<SupabaseSettings>,
    pub auth: AuthSettings,
    pub cors: CorsSettings,
    pub log: LogSettings,
    pub worker: WorkerSettings,
    /// The event pipeline's partitions and Redis bounds (used with `REDIS_URL`).
    pub events: EventsSettings,
    pub rate_limit: RateLimitSettings,
    pub tenants: TenantSettings,
    pub cache: CacheConfig,
    pub knowledge: KnowledgeSettings,
    pub demo: DemoSettings,
    /// The WebSocket gateway (`GET /v1/stream`).
    pub stream: StreamSettings,
    pub playground: PlaygroundSettings,
    pub otlp_endpoint: Option<Url>,
    /// Things worth telling the operator that do not stop startup.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Validate)]
pub struct ServerSettings {
    pub host: IpAddr,
    #[validate(range(min = 1, message = "must be a TCP port between 1 and 65535"))]
    pub port: u16,
    pub shutdown_timeout: Duration,
    #[validate(range(min = 1024, max = 67_108_864, message = "must be between 1 KiB and 64 MiB"))]
    pub max_body_bytes: usize,
    /// Peers whose `X-Forwarded-For` is believed (`SBA_SERVER__TRUSTED_PROXIES`); empty: the
    /// socket peer is the client.
    pub trusted_proxies: Vec<IpNet>,
    /// The internal port serving `/metrics`, `/openapi.json` and `/docs` instead of the public
    /// one (`SBA_SERVER__ADMIN_PORT`); `None`: the public port serves them.
    pub admin_port: Option<u16>,
}

#[derive(Debug, Clone, Validate)]
pub struct StoreSettings {
    pub location: StoreLocation,
    #[validate(range(min = 1, max = 1000, message = "must be between 1 and 1000"))]
    pub max_connections: u32,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: SecretString,
}

/// Where tenants, sessions and knowledge live (ADR 0008): `db_url` set → the direct-SQL
/// adapters; else `rest` → the PostgREST adapters.
#[derive(Debug, Clone)]
pub struct SupabaseSettings {
    /// `SUPABASE_URL` with its keys (always set in production).
    pub rest: Option<SupabaseRest>,
    /// `SUPABASE_DB_URL`: a direct PostgreSQL connection (Supabase's pooler, or a
    /// self-hosted database).
    pub db_url: Option<SecretString>,
    /// Bound of every request or statement (`SBA_SUPABASE__TIMEOUT_MS`, default 5000).
    pub timeout: Duration,
}

/// Supabase's HTTP API.
#[derive(Debug, Clone)]
pub struct SupabaseRest {
    pub url: Url,
    /// Platform work only (tenant lookups); never sent on a user's behalf.
    pub service_role_key: SecretString,
    /// `SUPABASE_ANON_KEY`: the `apikey` of requests on a user's behalf (Supabase's gateway
    /// wants one; a bare PostgREST does not).
    pub anon_key: Option<SecretString>,
}

/// Where the HS256 secrets came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `SUPABASE_JWT_SECRET` and/or `SBA_AUTH__JWT_SECRETS`.
    Configured,
    /// Development mode without any JWT setting: a secret generated once and kept here.
    GeneratedFile(PathBuf),
}

#[derive(Debug, Clone, Validate)]
pub struct AuthSettings {
    /// HS256 secrets: the first signs, all verify.
    pub secrets: Vec<SecretString>,
    pub secret_source: SecretSource,
    pub jwks_url: Option<Url>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[validate(custom(function = "leeway_is_small"))]
    pub leeway: Duration,
    /// Admins and services of this tenant are platform administrators
    /// (`GET /v1/system/health`); `None`: nobody is.
    pub platform_tenant: Option<TenantId>,
}

fn leeway_is_small(leeway: &Duration) -> Result<(), ValidationError> {
    if leeway.as_secs() <= 300 {
        Ok(())
    } else {
        Err(ValidationError::new("leeway").with_message("must be at most 300 seconds".into()))
    }
}

#[derive(Debug, Clone, Validate)]
pub struct CorsSettings {
    /// Exact origins (`scheme://host[:port]`, each a valid [`WebOrigin`]) allowed for every
    /// tenant.
    #[validate(custom(function = "origins_are_exact"))]
    pub allowed_origins: Vec<String>,
    /// Each tenant's own origins for the embedded tenant directory
    /// (`SBA_CORS__TENANT_ORIGINS`); the Supabase `tenants` table replaces it.
    pub tenant_origins: Vec<(TenantId, Vec<String>)>,
}

/// Every origin is a [`WebOrigin`]: exact, lower case, nothing after the host and port.
pub(super) fn origins_are_exact(origins: &[String]) -> Result<(), ValidationError> {
    for origin in origins {
        if let Err(error) = WebOrigin::parse(origin) {
            let shown: String = origin.chars().take(80).collect();
            return Err(ValidationError::new("origin").with_message(
                format!("`{shown}` is not an origin like https://app.example.com: {}", error.message).into(),
            ));
        }
    }
    Ok(())
}

/// The built-in demo agent `echo` (`SBA_DEMO__*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSettings {
    /// Whether runs of agent `echo` are answered by the demo agent.
    pub echo_agent: bool,
    /// Words streamed per second (1–1000).
    pub words_per_second: u32,
    /// Demo runs answered at once; more fail at once as `demo_agent_busy`.
    pub max_runs: usize,
}

/// The WebSocket gateway (`SBA_STREAM__*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// The largest client frame (or message of continuation frames); larger closes 1009.
    pub max_frame_bytes: usize,
    /// How often the server pings each connection.
    pub heartbeat_interval: Duration,
    /// A connection from which nothing (pong or any frame) arrived for this long is closed.
    pub heartbeat_timeout: Duration,
    /// Subscriptions one connection may hold at once.
    pub max_subscriptions: usize,
    /// Each connection's outbound queue bounds and high-water marks.
    pub outbound: OutboundLimits,
    /// Event frames per second per tenant and per user, on each node.
    pub throttle: ThrottlePolicy,
}

/// The browser playground (`SBA_PLAYGROUND__*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaygroundSettings {
    /// Whether `GET /playground` serves the page.
    pub enabled: bool,
    /// Whether `POST /dev/token` mints development tokens for it: the playground is enabled
    /// and the environment is development (never in production).
    pub dev_tokens: bool,
}

/// The knowledge API's own bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnowledgeSettings {
    /// Document uploads read at once; more are refused (503 `server_busy`) before their
    /// body is read.
    pub max_concurrent_uploads: usize,
}

/// Background work of `sba worker` (or of `sba serve` with `in_process`).
#[derive(Debug, Clone, Validate)]
pub struct WorkerSettings {
    /// How often the run-expiry sweep runs.
    #[validate(custom(function = "at_least_one_second"))]
    pub sweep_interval: Duration,
    /// A run that has not ended this long after its creation is expired.
    #[validate(custom(function = "at_least_one_second"))]
    pub max_run_age: Duration,
    /// `sba serve` runs the worker in its own process too (`SBA_WORKER__IN_PROCESS`;
    /// default: in development only).
    pub in_process: bool,
    /// The most queue entries one persist pass takes.
    pub batch: usize,
    /// How long the persister sleeps after a pass that found the queues empty.
    pub poll_interval: Duration,
    /// An entry delivered and not acknowledged for this long is claimed again (a dead
    /// worker's).
    pub claim_idle: Duration,
    /// A partition lease not renewed for this long lapses and another worker takes it.
    pub lease_ttl: Duration,
    /// The most partitions one worker leases at once (at most
    /// [`EventsSettings::partitions`]; with W workers, ⌈P / W⌉ spreads them).
    pub max_partitions: u16,
    /// The delivery count at which an entry the ledger refuses goes to the dead letters.
    pub max_attempts: u64,
}

/// The event pipeline on Redis (ADR 0017): how runs are partitioned, how long their
/// history is kept, the bound on one Redis call, and the live bus's readiness canary.
/// Without `REDIS_URL` the embedded sequencer persists synchronously and none of this
/// applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsSettings {
    /// P: runs are spread over this many partitions. Fixed for a deployment: changing it
    /// moves every run's keys.
    pub partitions: u16,
    /// The events a run's history keeps at least (entries go, `MINID ~`, once their last event is this far behind).
    pub history_max_len: u64,
    /// How long an ended run's keys are kept.
    pub history_ttl: Duration,
    /// The bound on one sequencer or queue call.
    pub timeout: Duration,
    /// How long the `event_bus` readiness check waits for its canary to come back through
    /// Redis pub/sub.
    pub canary_timeout: Duration,
    /// How long a node holds a run's batch that reached a live channel before the batch
    /// preceding it (published by another node), so that subscribers get them in order;
    /// zero delivers every batch as it comes.
    pub reorder_window: Duration,
}

fn at_least_one_second(value: &Duration) -> Result<(), ValidationError> {
    if value.as_secs() >= 1 {
        Ok(())
    } else {
        Err(ValidationError::new("duration").with_message("must be at least 1 second".into()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A `tracing` filter directive (`RUST_LOG` syntax).
    pub filter: String,
    pub format: LogFormat,
}

/// HTTP (and WebSocket) rate limits (ADR 0006).
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// `false` turns limiting off (benchmarks, trusted internal deployments).
    pub enabled: bool,
    /// The quota of every `/v1/*` route without a rule.
    pub default: Quota,
    /// Quotas by method and route template.
    pub rules: Vec<Rule>,
    /// The default quota per tenant plan.
    pub plans: Vec<(String, Quota)>,
    /// What happens while Redis is unreachable.
    pub fail_mode: FailMode,
    /// The bound on one Redis decision.
    pub redis_timeout: Duration,
    /// Quotas of WebSocket operations, per `ws:tenant:user:ip:event`.
    pub ws_quotas: HashMap<WsOp, Quota>,
    /// Refusals in a row after which a WebSocket client is closed with 1008.
    pub ws_close_after: u32,
    /// The tenant aggregate bucket's quota as a multiple of the request's quota; `None`: off.
    pub tenant_aggregate_factor: Option<std::num::NonZeroU32>,
}

/// The cache (ADR 0007): the adapters' own settings (its in-process tier, its Redis calls),
/// and TTLs per namespace. The default is the adapters' defaults, no TTL overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheConfig {
    /// What the cache adapters are built with, as they take it.
    pub adapter: CacheSettings,
    /// `(namespace, base TTL, maximum TTL)` overrides.
    pub ttls: Vec<(String, Duration, Duration)>,
}

/// Tenant settings of the embedded tenant directory (the Supabase `tenants` table replaces
/// them); CORS origins are in [`CorsSettings::tenant_origins`].
#[derive(Debug, Clone, Default)]
pub struct TenantSettings {
    /// `SBA_TENANTS__PLANS`: each tenant's plan.
    pub plans: Vec<(TenantId, String)>,
    /// `SBA_TENANTS__RATE_LIMITS`: quotas set for one tenant.
    pub rate_limits: Vec<(TenantId, Quota)>,
}
