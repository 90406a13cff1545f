//! Loading: files, then environment, into raw strings; then parsing and validating every
//! setting, collecting every problem instead of stopping at the first.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sba_application::ratelimit::{FailMode, Rule};
use sba_application::ratelimit_ws::WsOp;
use sba_domain::TenantId;
use sba_domain::ratelimit::Quota;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::Url;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use super::dev_secret;
use super::env::EnvSnapshot;
use super::settings::{
    AuthSettings, CacheConfig, CorsSettings, Environment, LogFormat, LogSettings, RateLimitSettings,
    RedisSettings, SecretSource, ServerSettings, Settings, StoreSettings, SupabaseRest, SupabaseSettings,
    TenantSettings, WorkerSettings,
};
use crate::internal_store::StoreLocation;

/// Browser-side variables. Server code never reads them; their presence is only reported.
const PUBLIC_PREFIX: &str = "NEXT_PUBLIC_";

/// Variables read under their well-known names, and the setting each one fills.
/// Where two name the same setting, the first one present wins.
const WELL_KNOWN: [(&str, &str); 11] = [
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
    ("SUPABASE_URL", "supabase.url"),
    ("SUPABASE_SERVICE_ROLE_KEY", "supabase.service_role_key"),
    ("SUPABASE_SERVICE_KEY", "supabase.service_role_key"),
    ("SUPABASE_ANON_KEY", "supabase.anon_key"),
    ("SUPABASE_DB_URL", "supabase.db_url"),
    ("SUPABASE_JWT_SECRET", "auth.supabase_jwt_secret"),
    ("PORT", "server.port"),
    ("RUST_LOG", "log.filter"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
];

/// Every `SBA_*` variable this build understands (others are reported as unknown).
const KNOWN_SBA_VARS: [&str; 43] = [
    "SBA_ENV",
    "SBA_CONFIG_FILE",
    "SBA_DATA_DIR",
    "SBA_SERVER__HOST",
    "SBA_SERVER__PORT",
    "SBA_SERVER__SHUTDOWN_TIMEOUT_SECS",
    "SBA_SERVER__MAX_BODY_BYTES",
    "SBA_DATABASE__URL",
    "SBA_DATABASE__BACKEND",
    "SBA_DATABASE__MAX_CONNECTIONS",
    "SBA_DATABASE__CONNECT_TIMEOUT_SECS",
    "SBA_REDIS__URL",
    "SBA_SUPABASE__URL",
    "SBA_SUPABASE__SERVICE_ROLE_KEY",
    "SBA_SUPABASE__ANON_KEY",
    "SBA_SUPABASE__DB_URL",
    "SBA_SUPABASE__TIMEOUT_MS",
    "SBA_AUTH__JWT_SECRETS",
    "SBA_AUTH__JWKS_URL",
    "SBA_AUTH__ISSUER",
    "SBA_AUTH__AUDIENCE",
    "SBA_AUTH__LEEWAY_SECS",
    "SBA_AUTH__PLATFORM_TENANT_ID",
    "SBA_CORS__ALLOWED_ORIGINS",
    "SBA_CORS__TENANT_ORIGINS",
    "SBA_LOG__FORMAT",
    "SBA_RATE_LIMIT__ENABLED",
    "SBA_RATE_LIMIT__DEFAULT",
    "SBA_RATE_LIMIT__RULES",
    "SBA_RATE_LIMIT__PLANS",
    "SBA_RATE_LIMIT__WS",
    "SBA_RATE_LIMIT__WS_CLOSE_AFTER",
    "SBA_TENANTS__PLANS",
    "SBA_TENANTS__RATE_LIMITS",
    "SBA_RATE_LIMIT__FAIL_MODE",
    "SBA_RATE_LIMIT__REDIS_TIMEOUT_MS",
    "SBA_WORKER__SWEEP_INTERVAL_SECS",
    "SBA_WORKER__MAX_RUN_AGE_SECS",
    "SBA_CACHE__L1_MAX_MB",
    "SBA_CACHE__L1_MAX_TTL_SECS",
    "SBA_CACHE__REDIS_TIMEOUT_MS",
    "SBA_CACHE__VERSION_TTL_SECS",
    "SBA_CACHE__TTLS",
];

/// The cache namespaces whose TTLs `SBA_CACHE__TTLS` may set.
pub const CACHE_NAMESPACES: [&str; 4] = [
    sba_application::tenants::TENANT_NAMESPACE.name,
    sba_application::cors::REGISTERED_ORIGIN_NAMESPACE.name,
    sba_application::runs::RUN_ACCESS_NAMESPACE.name,
    sba_application::sessions::SESSION_NAMESPACE.name,
];

/// The shortest HS256 secret accepted: 256 bits, as RFC 7518 §3.2 requires.
const MIN_SECRET_BYTES: usize = 32;

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Directory of the optional `sba.toml` and `sba.<environment>.toml` files.
    pub config_dir: PathBuf,
    /// Whether development mode may create its secret file (`config check` only looks).
    pub create_dev_secret: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { config_dir: PathBuf::from("config"), create_dev_secret: true }
    }
}

/// One setting that is missing or invalid, named as the operator sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: String,
    pub message: String,
}

/// Every problem found while loading; startup prints them all and stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    fn push(&mut self, setting: &str, message: impl Into<String>) {
        self.0.push(Problem { setting: setting.to_owned(), message: message.into() });
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  - {}: {}", problem.setting, problem.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Raw {
    env: Option<String>,
    data_dir: Option<String>,
    server: RawServer,
    database: RawDatabase,
    redis: RawUrl,
    supabase: RawSupabase,
    auth: RawAuth,
    cors: RawCors,
    log: RawLog,
    telemetry: RawTelemetry,
    worker: RawWorker,
    rate_limit: RawRateLimit,
    tenants: RawTenants,
    cache: RawCache,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCache {
    l1_max_mb: Option<String>,
    l1_max_ttl_secs: Option<String>,
    redis_timeout_ms: Option<String>,
    version_ttl_secs: Option<String>,
    ttls: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTenants {
    plans: Option<String>,
    rate_limits: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRateLimit {
    enabled: Option<String>,
    default: Option<String>,
    rules: Option<String>,
    plans: Option<String>,
    ws: Option<String>,
    ws_close_after: Option<String>,
    fail_mode: Option<String>,
    redis_timeout_ms: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawWorker {
    sweep_interval_secs: Option<String>,
    max_run_age_secs: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawServer {
    host: Option<String>,
    port: Option<String>,
    shutdown_timeout_secs: Option<String>,
    max_body_bytes: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDatabase {
    backend: Option<String>,
    url: Option<SecretString>,
    max_connections: Option<String>,
    connect_timeout_secs: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawUrl {
    url: Option<SecretString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSupabase {
    url: Option<String>,
    service_role_key: Option<SecretString>,
    anon_key: Option<SecretString>,
    db_url: Option<SecretString>,
    timeout_ms: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAuth {
    jwt_secrets: Option<SecretString>,
    supabase_jwt_secret: Option<SecretString>,
    jwks_url: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: Option<String>,
    platform_tenant_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCors {
    allowed_origins: Option<String>,
    tenant_origins: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLog {
    filter: Option<String>,
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTelemetry {
    otlp_endpoint: Option<String>,
}

/// Loads and validates the settings of this process.
///
/// # Errors
/// [`Problems`] listing every missing or invalid setting.
pub fn load(env: &EnvSnapshot, options: &LoadOptions) -> Result<Settings, Problems> {
    let raw = read_raw(env, options)
        .map_err(|message| Problems(vec![Problem { setting: "configuration".into(), message }]))?;
    let mut problems = Problems::default();
    let environment = match raw.env.as_deref().map(str::trim) {
        None | Some("development" | "dev") => Environment::Development,
        Some("production" | "prod") => Environment::Production,
        Some(other) => {
            problems.push("SBA_ENV", format!("`{other}` is not `development` or `production`"));
            Environment::Production
        }
    };
    let mut ctx = Ctx { env, problems, production: environment == Environment::Production };
    let data_dir = PathBuf::from(raw.data_dir.as_deref().unwrap_or(".sba"));

    let server = server_settings(&mut ctx, &raw.server);
    let store = store_settings(&mut ctx, &raw.database, &data_dir);
    let redis = redis_settings(&mut ctx, raw.redis);
    let supabase = supabase_settings(&mut ctx, raw.supabase);
    let auth = auth_settings(&mut ctx, raw.auth, &data_dir, options);
    let cors = cors_settings(&mut ctx, &raw.cors);
    let log = log_settings(&mut ctx, raw.log);
    let worker = worker_settings(&mut ctx, &raw.worker);
    let rate_limit = rate_limit_settings(&mut ctx.problems, &raw.rate_limit);
    let tenants = tenant_settings(&mut ctx.problems, &raw.tenants);
    let cache = cache_settings(&mut ctx.problems, &raw.cache);
    let otlp_endpoint = raw
        .telemetry
        .otlp_endpoint
        .as_deref()
        .and_then(|url| http_url(&mut ctx.problems, "OTEL_EXPORTER_OTLP_ENDPOINT", url));

    if !ctx.problems.0.is_empty() {
        return Err(ctx.problems);
    }
    let mut warnings = ignored_variables(env);
    warnings.extend(unknown_variables(env));
    Ok(Settings {
        environment,
        data_dir,
        server,
        store,
        redis,
        supabase,
        auth,
        cors,
        log,
        worker,
        rate_limit,
        tenants,
        cache,
        otlp_endpoint,
        warnings,
    })
}

/// What every section needs while it is parsed.
struct Ctx<'a> {
    env: &'a EnvSnapshot,
    problems: Problems,
    production: bool,
}

impl Ctx<'_> {
    /// Records `setting` as missing when production requires it and it is absent.
    fn require(&mut self, present: bool, setting: &str, server_name: &str) {
        if self.production && !present {
            let hint = self.public_hint(server_name);
            self.problems.push(setting, format!("is required in production{hint}"));
        }
    }

    /// Points out a browser-side twin of a missing server variable, which is never read.
    fn public_hint(&self, name: &str) -> String {
        let public = format!("{PUBLIC_PREFIX}{name}");
        if self.env.get(&public).is_some() {
            format!(" ({public} is set, but server code never reads {PUBLIC_PREFIX}* variables)")
        } else {
            String::new()
        }
    }
}

fn server_settings(ctx: &mut Ctx<'_>, raw: &RawServer) -> ServerSettings {
    let default_host = if ctx.production { IpAddr::from([0, 0, 0, 0]) } else { IpAddr::from([127, 0, 0, 1]) };
    let p = &mut ctx.problems;
    let server = ServerSettings {
        host: parse_or(p, "SBA_SERVER__HOST", raw.host.as_deref(), default_host),
        port: parse_or(p, "PORT", raw.port.as_deref(), 8080),
        shutdown_timeout: Duration::from_secs(parse_or(
            p,
            "SBA_SERVER__SHUTDOWN_TIMEOUT_SECS",
            raw.shutdown_timeout_secs.as_deref(),
            30,
        )),
        max_body_bytes: parse_or(p, "SBA_SERVER__MAX_BODY_BYTES", raw.max_body_bytes.as_deref(), 1 << 20),
    };
    collect_validation(
        p,
        server.validate(),
        &[("port", "PORT"), ("max_body_bytes", "SBA_SERVER__MAX_BODY_BYTES")],
    );
    server
}

fn store_settings(ctx: &mut Ctx<'_>, raw: &RawDatabase, data_dir: &Path) -> StoreSettings {
    ctx.require(raw.url.is_some(), "DATABASE_URL", "DATABASE_URL");
    let location = match &raw.url {
        None => StoreLocation::Sqlite(data_dir.join("sba.db")),
        Some(url) => store_location(&mut ctx.problems, url, ctx.production),
    };
    // The storage switch: when set, it must agree with the URL, so a deployment cannot end
    // up on the other backend by accident.
    match (raw.backend.as_deref().map(str::trim), &location) {
        (None | Some("postgres"), StoreLocation::Postgres(_))
        | (None | Some("sqlite"), StoreLocation::Sqlite(_)) => {}
        (Some("postgres"), StoreLocation::Sqlite(_)) => {
            ctx.problems
                .push("DATABASE_URL", "a postgres:// URL is required by SBA_DATABASE__BACKEND=postgres");
        }
        (Some("sqlite"), StoreLocation::Postgres(_)) => {
            ctx.problems
                .push("SBA_DATABASE__BACKEND", "is `sqlite`, but DATABASE_URL names a PostgreSQL database");
        }
        (Some(other), _) => {
            ctx.problems.push("SBA_DATABASE__BACKEND", format!("`{other}` is not `postgres` or `sqlite`"));
        }
    }
    let p = &mut ctx.problems;
    let store = StoreSettings {
        location,
        max_connections: parse_or(p, "SBA_DATABASE__MAX_CONNECTIONS", raw.max_connections.as_deref(), 20),
        connect_timeout: Duration::from_secs(parse_or(
            p,
            "SBA_DATABASE__CONNECT_TIMEOUT_SECS",
            raw.connect_timeout_secs.as_deref(),
            5,
        )),
    };
    collect_validation(p, store.validate(), &[("max_connections", "SBA_DATABASE__MAX_CONNECTIONS")]);
    store
}

fn redis_settings(ctx: &mut Ctx<'_>, raw: RawUrl) -> Option<RedisSettings> {
    ctx.require(raw.url.is_some(), "REDIS_URL", "REDIS_URL");
    let url = raw.url?;
    if Url::parse(url.expose_secret()).is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss")) {
        Some(RedisSettings { url })
    } else {
        ctx.problems.push("REDIS_URL", "must be a redis:// or rediss:// URL");
        None
    }
}

fn supabase_settings(ctx: &mut Ctx<'_>, raw: RawSupabase) -> Option<SupabaseSettings> {
    let key_setting = "SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SERVICE_KEY)";
    ctx.require(raw.url.is_some(), "SUPABASE_URL", "SUPABASE_URL");
    ctx.require(raw.service_role_key.is_some(), key_setting, "SUPABASE_SERVICE_ROLE_KEY");
    // Outside production the two go together or not at all.
    if !ctx.production {
        match (&raw.url, &raw.service_role_key) {
            (Some(_), None) => ctx.problems.push(key_setting, "is required when SUPABASE_URL is set"),
            (None, Some(_)) => {
                ctx.problems.push("SUPABASE_URL", "is required when the service role key is set");
            }
            _ => {}
        }
    }
    let timeout_ms =
        bounded(&mut ctx.problems, "SBA_SUPABASE__TIMEOUT_MS", raw.timeout_ms.as_deref(), 5000, 100..=60_000);
    let db_url = raw.db_url.filter(|url| {
        let valid = Url::parse(url.expose_secret())
            .is_ok_and(|u| matches!(u.scheme(), "postgres" | "postgresql") && u.host_str().is_some());
        if !valid {
            ctx.problems.push("SUPABASE_DB_URL", "must be a postgres:// or postgresql:// URL");
        }
        valid
    });
    let url = raw.url.as_deref().and_then(|url| http_url(&mut ctx.problems, "SUPABASE_URL", url));
    let rest = url.zip(raw.service_role_key).map(|(url, service_role_key)| SupabaseRest {
        url,
        service_role_key,
        anon_key: raw.anon_key,
    });
    if rest.is_none() && db_url.is_none() {
        return None;
    }
    Some(SupabaseSettings { rest, db_url, timeout: Duration::from_millis(timeout_ms) })
}

fn cors_settings(ctx: &mut Ctx<'_>, raw: &RawCors) -> CorsSettings {
    let allowed_origins: Vec<String> = raw
        .allowed_origins
        .as_deref()
        .map(|list| list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    ctx.require(!allowed_origins.is_empty(), "SBA_CORS__ALLOWED_ORIGINS", "SBA_CORS__ALLOWED_ORIGINS");
    let tenant_origins = raw.tenant_origins.as_deref().map(|text| tenant_origins(&mut ctx.problems, text));
    let cors = CorsSettings { allowed_origins, tenant_origins: tenant_origins.unwrap_or_default() };
    collect_validation(
        &mut ctx.problems,
        cors.validate(),
        &[("allowed_origins", "SBA_CORS__ALLOWED_ORIGINS")],
    );
    cors
}

/// `<tenant uuid>=<origin> <origin>;<tenant uuid>=<origin>`: each tenant's own origins.
fn tenant_origins(problems: &mut Problems, text: &str) -> Vec<(TenantId, Vec<String>)> {
    const SETTING: &str = "SBA_CORS__TENANT_ORIGINS";
    let mut parsed = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((tenant, origins)) = entry.split_once('=') else {
            problems.push(SETTING, "each entry must look like `<tenant uuid>=<origin> <origin>`");
            continue;
        };
        let Ok(tenant) = tenant.trim().parse::<TenantId>() else {
            let shown: String = tenant.trim().chars().take(40).collect();
            problems.push(SETTING, format!("`{shown}` is not a tenant UUID"));
            continue;
        };
        let origins: Vec<String> = origins.split_whitespace().map(str::to_owned).collect();
        if let Err(error) = super::settings::origins_are_exact(&origins) {
            problems.push(SETTING, error.message.map_or_else(|| error.code.to_string(), |m| m.to_string()));
            continue;
        }
        parsed.push((tenant, origins));
    }
    parsed
}

/// The default quota when none is configured: 600 requests a minute per tenant, IP, method
/// and route.
const DEFAULT_QUOTA: Quota = Quota::per_minute(match std::num::NonZeroU32::new(600) {
    Some(limit) => limit,
    None => std::num::NonZeroU32::MIN,
});

/// A whole number in `range`, or the default (with a problem when out of range).
fn bounded(
    problems: &mut Problems,
    setting: &str,
    value: Option<&str>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> u64 {
    let parsed = parse_or(problems, setting, value, default);
    if range.contains(&parsed) {
        parsed
    } else {
        problems.push(setting, format!("must be between {} and {}", range.start(), range.end()));
        default
    }
}

fn cache_settings(problems: &mut Problems, raw: &RawCache) -> CacheConfig {
    const TTLS: &str = "SBA_CACHE__TTLS";
    const MIB: u64 = 1024 * 1024;
    let defaults = CacheConfig::default();
    let secs = |d: Duration| d.as_secs();
    let l1_max_mb = bounded(
        problems,
        "SBA_CACHE__L1_MAX_MB",
        raw.l1_max_mb.as_deref(),
        defaults.l1_max_bytes / MIB,
        1..=65_536,
    );
    let l1_max_ttl = bounded(
        problems,
        "SBA_CACHE__L1_MAX_TTL_SECS",
        raw.l1_max_ttl_secs.as_deref(),
        secs(defaults.l1_max_ttl),
        1..=86_400,
    );
    let timeout_ms = bounded(
        problems,
        "SBA_CACHE__REDIS_TIMEOUT_MS",
        raw.redis_timeout_ms.as_deref(),
        u64::try_from(defaults.redis_timeout.as_millis()).unwrap_or(u64::MAX),
        1..=5_000,
    );
    let version_ttl = bounded(
        problems,
        "SBA_CACHE__VERSION_TTL_SECS",
        raw.version_ttl_secs.as_deref(),
        secs(defaults.version_ttl),
        1..=3_600,
    );
    let ttls = raw
        .ttls
        .as_deref()
        .map(|text| {
            entries(problems, TTLS, text, |problems, namespace, value| {
                if !CACHE_NAMESPACES.contains(&namespace) {
                    problems.push(TTLS, format!("`{namespace}` is not a cache namespace ({})", CACHE_NAMESPACES.join(", ")));
                    return None;
                }
                let parsed = value.split_once('/').and_then(|(base, max)| {
                    Some((base.trim().parse::<u64>().ok()?, max.trim().parse::<u64>().ok()?))
                });
                match parsed {
                    Some((base, max)) if base >= 1 && max >= base && max <= 86_400 => {
                        Some((namespace.to_owned(), Duration::from_secs(base), Duration::from_secs(max)))
                    }
                    _ => {
                        problems.push(TTLS, format!("`{namespace}={value}` is not `<base secs>/<max secs>` with 1 ≤ base ≤ max ≤ 86400"));
                        None
                    }
                }
            })
        })
        .unwrap_or_default();
    CacheConfig {
        l1_max_bytes: l1_max_mb * MIB,
        l1_max_ttl: Duration::from_secs(l1_max_ttl),
        redis_timeout: Duration::from_millis(timeout_ms),
        version_ttl: Duration::from_secs(version_ttl),
        ttls,
    }
}

fn rate_limit_settings(problems: &mut Problems, raw: &RawRateLimit) -> RateLimitSettings {
    let default = raw.default.as_deref().and_then(|text| quota(problems, "SBA_RATE_LIMIT__DEFAULT", text));
    let rules = raw.rules.as_deref().map(|text| limit_rules(problems, text)).unwrap_or_default();
    let plans = raw
        .plans
        .as_deref()
        .map(|text| {
            entries(problems, "SBA_RATE_LIMIT__PLANS", text, |problems, plan, value| {
                let valid = !plan.is_empty()
                    && plan.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !valid {
                    problems.push(
                        "SBA_RATE_LIMIT__PLANS",
                        format!("`{plan}` is not a plan name ([A-Za-z0-9._-])"),
                    );
                    return None;
                }
                Some((plan.to_owned(), quota(problems, "SBA_RATE_LIMIT__PLANS", value)?))
            })
        })
        .unwrap_or_default();
    let fail_mode = match raw.fail_mode.as_deref().map(str::trim) {
        None | Some("open") => FailMode::Open,
        Some("closed") => FailMode::Closed,
        Some(other) => {
            problems.push("SBA_RATE_LIMIT__FAIL_MODE", format!("`{other}` is not `open` or `closed`"));
            FailMode::Open
        }
    };
    let timeout_ms =
        bounded(problems, "SBA_RATE_LIMIT__REDIS_TIMEOUT_MS", raw.redis_timeout_ms.as_deref(), 50, 1..=5_000);
    let mut ws_quotas = default_ws_quotas();
    if let Some(text) = raw.ws.as_deref() {
        for (op, quota) in entries(problems, "SBA_RATE_LIMIT__WS", text, |problems, op, value| {
            let Some(op) = WsOp::parse(op) else {
                problems.push(
                    "SBA_RATE_LIMIT__WS",
                    format!("`{op}` is not subscribe, unsubscribe, ping or auth"),
                );
                return None;
            };
            Some((op, quota(problems, "SBA_RATE_LIMIT__WS", value)?))
        }) {
            ws_quotas.insert(op, quota);
        }
    }
    let ws_close_after: u32 =
        parse_or(problems, "SBA_RATE_LIMIT__WS_CLOSE_AFTER", raw.ws_close_after.as_deref(), 10);
    if ws_close_after == 0 {
        problems.push("SBA_RATE_LIMIT__WS_CLOSE_AFTER", "must be at least 1");
    }
    RateLimitSettings {
        ws_quotas,
        ws_close_after,
        enabled: parse_or(problems, "SBA_RATE_LIMIT__ENABLED", raw.enabled.as_deref(), true),
        default: default.unwrap_or(DEFAULT_QUOTA),
        rules,
        plans,
        fail_mode,
        redis_timeout: Duration::from_millis(timeout_ms),
    }
}

/// `<key>=<value>; <key>=<value>`, each pair parsed by `parse` (which reports its own
/// problems and returns `None` to skip the entry).
fn entries<T>(
    problems: &mut Problems,
    setting: &str,
    text: &str,
    mut parse: impl FnMut(&mut Problems, &str, &str) -> Option<T>,
) -> Vec<T> {
    let mut parsed = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('=') {
            Some((key, value)) => parsed.extend(parse(problems, key.trim(), value.trim())),
            None => problems.push(setting, format!("`{entry}` is not `<key>=<value>`")),
        }
    }
    parsed
}

fn tenant_id(problems: &mut Problems, setting: &str, text: &str) -> Option<TenantId> {
    let parsed = text.parse::<TenantId>().ok();
    if parsed.is_none() {
        let shown: String = text.chars().take(40).collect();
        problems.push(setting, format!("`{shown}` is not a tenant UUID"));
    }
    parsed
}

fn tenant_settings(problems: &mut Problems, raw: &RawTenants) -> TenantSettings {
    const PLANS: &str = "SBA_TENANTS__PLANS";
    const LIMITS: &str = "SBA_TENANTS__RATE_LIMITS";
    let plans = raw
        .plans
        .as_deref()
        .map(|text| {
            entries(problems, PLANS, text, |problems, tenant, plan| {
                Some((tenant_id(problems, PLANS, tenant)?, plan.to_owned()))
            })
        })
        .unwrap_or_default();
    let rate_limits = raw
        .rate_limits
        .as_deref()
        .map(|text| {
            entries(problems, LIMITS, text, |problems, tenant, value| {
                let tenant = tenant_id(problems, LIMITS, tenant);
                Some((tenant?, quota(problems, LIMITS, value)?))
            })
        })
        .unwrap_or_default();
    TenantSettings { plans, rate_limits }
}

/// Per minute: 60 subscribes and unsubscribes, 120 pings, 10 token refreshes.
fn default_ws_quotas() -> std::collections::HashMap<WsOp, Quota> {
    [(WsOp::Subscribe, 60), (WsOp::Unsubscribe, 60), (WsOp::Ping, 120), (WsOp::Auth, 10)]
        .into_iter()
        .filter_map(|(op, limit)| Some((op, Quota::per_minute(std::num::NonZeroU32::new(limit)?))))
        .collect()
}

/// `<limit>/<window secs>`, e.g. `100/60`.
fn quota(problems: &mut Problems, setting: &str, text: &str) -> Option<Quota> {
    let parsed = text
        .trim()
        .split_once('/')
        .and_then(|(limit, window)| Some((limit.trim().parse().ok()?, window.trim().parse().ok()?)))
        .and_then(|(limit, window)| Quota::new(limit, window).ok());
    if parsed.is_none() {
        let shown: String = text.chars().take(40).collect();
        problems.push(
            setting,
            format!("`{shown}` is not a quota like `100/60` (requests per seconds, window at most a day)"),
        );
    }
    parsed
}

/// `<name> <METHOD|*> <route template> <limit>/<window>; ...`.
fn limit_rules(problems: &mut Problems, text: &str) -> Vec<Rule> {
    const SETTING: &str = "SBA_RATE_LIMIT__RULES";
    let mut rules = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split_whitespace().collect();
        let [name, method, route, limit] = parts.as_slice() else {
            problems.push(
                SETTING,
                "each rule must look like `<name> <METHOD|*> <route template> <limit>/<secs>`",
            );
            continue;
        };
        let valid_name = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid_name || !route.starts_with('/') {
            problems.push(
                SETTING,
                format!("rule `{name}`: the name must be [A-Za-z0-9._-] and the route start with /"),
            );
            continue;
        }
        let Some(quota) = quota(problems, SETTING, limit) else { continue };
        let method = (*method != "*").then(|| method.to_ascii_uppercase());
        rules.push(Rule { name: (*name).to_owned(), method, route: (*route).to_owned(), quota });
    }
    rules
}

fn worker_settings(ctx: &mut Ctx<'_>, raw: &RawWorker) -> WorkerSettings {
    let p = &mut ctx.problems;
    let worker = WorkerSettings {
        sweep_interval: Duration::from_secs(parse_or(
            p,
            "SBA_WORKER__SWEEP_INTERVAL_SECS",
            raw.sweep_interval_secs.as_deref(),
            60,
        )),
        max_run_age: Duration::from_secs(parse_or(
            p,
            "SBA_WORKER__MAX_RUN_AGE_SECS",
            raw.max_run_age_secs.as_deref(),
            86_400,
        )),
    };
    collect_validation(
        p,
        worker.validate(),
        &[
            ("sweep_interval", "SBA_WORKER__SWEEP_INTERVAL_SECS"),
            ("max_run_age", "SBA_WORKER__MAX_RUN_AGE_SECS"),
        ],
    );
    worker
}

fn log_settings(ctx: &mut Ctx<'_>, raw: RawLog) -> LogSettings {
    let format = match raw.format.as_deref() {
        None if ctx.production => LogFormat::Json,
        None | Some("pretty" | "text") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            ctx.problems.push("SBA_LOG__FORMAT", format!("`{other}` is not `json` or `pretty`"));
            LogFormat::Json
        }
    };
    LogSettings { filter: raw.filter.unwrap_or_else(|| "info".to_owned()), format }
}

fn read_raw(env: &EnvSnapshot, options: &LoadOptions) -> Result<Raw, String> {
    let dir = &options.config_dir;
    let mut builder = config::Config::builder()
        .add_source(config::File::with_name(&dir.join("sba").to_string_lossy()).required(false));
    if let Some(name) = env.get("SBA_ENV") {
        let file = dir.join(format!("sba.{}", name.trim()));
        builder = builder.add_source(config::File::with_name(&file.to_string_lossy()).required(false));
    }
    if let Some(file) = env.get("SBA_CONFIG_FILE") {
        builder = builder.add_source(config::File::with_name(file).required(true));
    }
    let sba_vars: config::Map<String, String> = env
        .map()
        .iter()
        .filter(|(k, _)| k.starts_with("SBA_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("SBA").prefix_separator("_").separator("__").source(Some(sba_vars)),
    );
    let mut filled = std::collections::HashSet::new();
    for (var, key) in WELL_KNOWN {
        if let Some(value) = env.get(var).filter(|_| filled.insert(key)) {
            builder = builder.set_override(key, value).map_err(|e| e.to_string())?;
        }
    }
    builder
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| format!("cannot read the configuration: {e}"))
}

fn auth_settings(ctx: &mut Ctx<'_>, raw: RawAuth, data_dir: &Path, options: &LoadOptions) -> AuthSettings {
    let mut secrets: Vec<SecretString> = Vec::new();
    if let Some(secret) = raw.supabase_jwt_secret {
        secrets.push(secret);
    }
    if let Some(list) = raw.jwt_secrets {
        secrets.extend(
            list.expose_secret()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| SecretString::from(s.to_owned())),
        );
    }
    let secrets = dedup_secrets(secrets);
    if secrets.iter().any(|s| s.expose_secret().len() < MIN_SECRET_BYTES) {
        ctx.problems.push(
            "SUPABASE_JWT_SECRET / SBA_AUTH__JWT_SECRETS",
            format!("every HS256 secret must be at least {MIN_SECRET_BYTES} bytes long"),
        );
    }
    let jwks_url =
        raw.jwks_url.as_deref().and_then(|url| http_url(&mut ctx.problems, "SBA_AUTH__JWKS_URL", url));
    let configured = !secrets.is_empty() || jwks_url.is_some();
    if ctx.production {
        if !configured {
            let hint = ctx.public_hint("SUPABASE_JWT_SECRET");
            ctx.problems.push(
                "SUPABASE_JWT_SECRET or SBA_AUTH__JWT_SECRETS",
                format!("a JWT verification key is required in production{hint}"),
            );
        }
        ctx.require(raw.issuer.is_some(), "SBA_AUTH__ISSUER", "SBA_AUTH__ISSUER");
        ctx.require(raw.audience.is_some(), "SBA_AUTH__AUDIENCE", "SBA_AUTH__AUDIENCE");
    }
    let leeway = Duration::from_secs(parse_or(
        &mut ctx.problems,
        "SBA_AUTH__LEEWAY_SECS",
        raw.leeway_secs.as_deref(),
        30,
    ));

    let (secrets, secret_source, issuer, audience) = if configured || ctx.production {
        (secrets, SecretSource::Configured, raw.issuer, raw.audience)
    } else {
        let path = dev_secret::path_in(data_dir);
        let secret = if options.create_dev_secret {
            dev_secret::read_or_create(&path).map(Some)
        } else {
            dev_secret::read(&path)
        };
        let secrets = match secret {
            Ok(secret) => secret.into_iter().collect(),
            Err(e) => {
                ctx.problems.push("development JWT secret", format!("{e:#}"));
                Vec::new()
            }
        };
        let issuer = raw.issuer.or_else(|| Some("sba-dev".to_owned()));
        let audience = raw.audience.or_else(|| Some("sba".to_owned()));
        (secrets, SecretSource::GeneratedFile(path), issuer, audience)
    };
    let platform_tenant = raw.platform_tenant_id.as_deref().and_then(|text| {
        text.trim()
            .parse::<TenantId>()
            .map_err(|_| ctx.problems.push("SBA_AUTH__PLATFORM_TENANT_ID", "must be a tenant UUID"))
            .ok()
    });
    let auth = AuthSettings { secrets, secret_source, jwks_url, issuer, audience, leeway, platform_tenant };
    collect_validation(&mut ctx.problems, auth.validate(), &[("leeway", "SBA_AUTH__LEEWAY_SECS")]);
    auth
}

/// Distinct secrets only, in their given order: verifying twice with one key proves nothing.
fn dedup_secrets(secrets: Vec<SecretString>) -> Vec<SecretString> {
    let mut seen = std::collections::HashSet::new();
    secrets.into_iter().filter(|s| seen.insert(s.expose_secret().to_owned())).collect()
}

fn store_location(problems: &mut Problems, url: &SecretString, production: bool) -> StoreLocation {
    let text = url.expose_secret();
    if let Some(rest) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
        if production {
            problems
                .push("DATABASE_URL", "must be a PostgreSQL URL in production (SQLite is for development)");
        }
        let path = rest.split('?').next().unwrap_or_default();
        return StoreLocation::Sqlite(PathBuf::from(path));
    }
    match Url::parse(text) {
        Ok(parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") && parsed.host_str().is_some() => {
        }
        _ => problems
            .push("DATABASE_URL", "must be a postgres:// URL with a host (or sqlite:<path> in development)"),
    }
    StoreLocation::Postgres(url.clone())
}

fn http_url(problems: &mut Problems, setting: &str, value: &str) -> Option<Url> {
    match Url::parse(value.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Some(url),
        _ => {
            problems.push(setting, "must be an http:// or https:// URL");
            None
        }
    }
}

/// Parses `value` when present, else returns `default`; records a problem (and returns the
/// default, so later checks still run) when it does not parse.
fn parse_or<T: FromStr>(problems: &mut Problems, setting: &str, value: Option<&str>, default: T) -> T {
    let Some(text) = value else { return default };
    text.trim().parse().unwrap_or_else(|_| {
        let shown: String = text.chars().take(40).collect();
        problems.push(setting, format!("`{shown}` is not a valid value"));
        default
    })
}

/// Turns `validator` errors into problems named by the setting's variable.
fn collect_validation(problems: &mut Problems, result: Result<(), ValidationErrors>, names: &[(&str, &str)]) {
    let Err(errors) = result else { return };
    for (field, kind) in errors.errors() {
        let setting =
            names.iter().find(|(f, _)| *f == field.as_ref()).map_or(field.as_ref(), |(_, name)| name);
        if let ValidationErrorsKind::Field(list) = kind {
            for error in list {
                let message =
                    error.message.as_ref().map_or_else(|| error.code.to_string(), ToString::to_string);
                problems.push(setting, message);
            }
        }
    }
}

fn ignored_variables(env: &EnvSnapshot) -> Vec<String> {
    env.names()
        .filter(|name| name.starts_with(PUBLIC_PREFIX))
        .map(|name| {
            format!("{name} is set and ignored: server configuration never reads {PUBLIC_PREFIX}* variables")
        })
        .collect()
}

fn unknown_variables(env: &EnvSnapshot) -> Vec<String> {
    env.names()
        .filter(|name| name.starts_with("SBA_") && !KNOWN_SBA_VARS.contains(name))
        .map(|name| format!("{name} is not a known setting and is ignored (misspelt?)"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LoadOptions {
        let dir = std::env::temp_dir().join(format!("sba-config-test-{}", uuid::Uuid::new_v4().simple()));
        LoadOptions { config_dir: dir.join("config"), create_dev_secret: true }
    }

    fn dev_env(pairs: &[(&str, &str)]) -> (EnvSnapshot, LoadOptions) {
        let options = options();
        let data_dir = options.config_dir.parent().unwrap().join("data");
        let mut all: Vec<(String, String)> = vec![("SBA_DATA_DIR".into(), data_dir.display().to_string())];
        all.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        (EnvSnapshot::from_pairs(all), options)
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef-prod";

    fn production_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("SBA_ENV", "production"),
            ("DATABASE_URL", "postgres://sba:pw@db.internal:5432/sba"),
            ("REDIS_URL", "redis://cache.internal:6379"),
            ("SUPABASE_URL", "https://abc.supabase.co"),
            ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key"),
            ("SUPABASE_JWT_SECRET", SECRET),
            ("SBA_AUTH__ISSUER", "https://abc.supabase.co/auth/v1"),
            ("SBA_AUTH__AUDIENCE", "authenticated"),
            ("SBA_CORS__ALLOWED_ORIGINS", "https://app.example.com, https://admin.example.com"),
        ]
    }

    fn settings_of(pairs: &[(&str, &str)]) -> Result<Settings, Problems> {
        let (env, options) = dev_env(pairs);
        load(&env, &options)
    }

    fn problem_settings(problems: &Problems) -> Vec<&str> {
        problems.0.iter().map(|p| p.setting.as_str()).collect()
    }

    #[test]
    fn development_with_an_empty_environment_uses_embedded_defaults() {
        let settings = settings_of(&[]).unwrap();
        assert_eq!(settings.environment, Environment::Development);
        assert_eq!(settings.server.host.to_string(), "127.0.0.1");
        assert_eq!(settings.server.port, 8080);
        assert!(matches!(&settings.store.location, StoreLocation::Sqlite(p) if p.ends_with("sba.db")));
        assert!(settings.redis.is_none() && settings.supabase.is_none());
        assert!(matches!(settings.auth.secret_source, SecretSource::GeneratedFile(_)));
        assert_eq!(settings.auth.secrets.len(), 1);
    }

    #[test]
    fn port_overrides_the_default_port() {
        assert_eq!(settings_of(&[("PORT", "9191")]).unwrap().server.port, 9191);
    }

    #[test]
    fn production_with_an_empty_environment_lists_every_missing_setting() {
        let problems = settings_of(&[("SBA_ENV", "production")]).unwrap_err();
        let names = problem_settings(&problems);
        for required in [
            "DATABASE_URL",
            "REDIS_URL",
            "SUPABASE_URL",
            "SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SERVICE_KEY)",
            "SUPABASE_JWT_SECRET or SBA_AUTH__JWT_SECRETS",
            "SBA_AUTH__ISSUER",
            "SBA_AUTH__AUDIENCE",
            "SBA_CORS__ALLOWED_ORIGINS",
        ] {
            assert!(names.contains(&required), "{required} missing from {names:?}");
        }
    }

    #[test]
    fn complete_production_settings_load() {
        let settings = settings_of(&production_env()).unwrap();
        assert_eq!(settings.environment, Environment::Production);
        assert_eq!(settings.server.host.to_string(), "0.0.0.0");
        assert_eq!(settings.auth.secret_source, SecretSource::Configured);
        assert_eq!(settings.cors.allowed_origins, ["https://app.example.com", "https://admin.example.com"]);
        assert_eq!(settings.log.format, LogFormat::Json);
    }

    #[test]
    fn next_public_supabase_url_does_not_stand_in_for_supabase_url() {
        let mut env: Vec<_> = production_env().into_iter().filter(|(k, _)| *k != "SUPABASE_URL").collect();
        env.push(("NEXT_PUBLIC_SUPABASE_URL", "https://abc.supabase.co"));
        let problems = settings_of(&env).unwrap_err();
        let problem = problems.0.iter().find(|p| p.setting == "SUPABASE_URL").unwrap();
        assert!(problem.message.contains("NEXT_PUBLIC_SUPABASE_URL is set"), "{}", problem.message);
    }

    #[test]
    fn next_public_variables_are_reported_as_ignored() {
        let settings = settings_of(&[("NEXT_PUBLIC_SUPABASE_ANON_KEY", "x")]).unwrap();
        assert!(
            settings
                .warnings
                .iter()
                .any(|w| w.starts_with("NEXT_PUBLIC_SUPABASE_ANON_KEY is set and ignored"))
        );
    }

    #[test]
    fn service_key_alias_is_accepted() {
        let mut env: Vec<_> =
            production_env().into_iter().filter(|(k, _)| *k != "SUPABASE_SERVICE_ROLE_KEY").collect();
        env.push(("SUPABASE_SERVICE_KEY", "alias-key"));
        let settings = settings_of(&env).unwrap();
        assert_eq!(settings.supabase.unwrap().rest.unwrap().service_role_key.expose_secret(), "alias-key");
    }

    #[test]
    fn a_supabase_database_url_alone_selects_the_sql_adapters_in_development() {
        let settings =
            settings_of(&[("SUPABASE_DB_URL", "postgres://sba:pw@pooler.test:6543/postgres")]).unwrap();
        let supabase = settings.supabase.unwrap();
        assert!(supabase.rest.is_none());
        assert!(supabase.db_url.is_some());
        assert_eq!(supabase.timeout, Duration::from_secs(5));
        let problems = settings_of(&[("SUPABASE_DB_URL", "https://not-a-database")]).unwrap_err();
        assert!(problems.0.iter().any(|p| p.setting == "SUPABASE_DB_URL"), "{problems}");
    }

    #[test]
    fn the_anon_key_and_timeout_are_read_with_the_rest_settings() {
        let mut env = production_env();
        env.extend([("SUPABASE_ANON_KEY", "anon-key"), ("SBA_SUPABASE__TIMEOUT_MS", "800")]);
        let supabase = settings_of(&env).unwrap().supabase.unwrap();
        assert_eq!(supabase.rest.unwrap().anon_key.unwrap().expose_secret(), "anon-key");
        assert_eq!(supabase.timeout, Duration::from_millis(800));
    }

    #[test]
    fn invalid_values_are_all_reported_together() {
        let mut env = production_env();
        env.extend([
            ("PORT", "http"),
            ("REDIS_URL", "http://not-redis"),
            ("SBA_CORS__ALLOWED_ORIGINS", "*"),
            ("SBA_AUTH__LEEWAY_SECS", "3600"),
            ("SBA_DATABASE__MAX_CONNECTIONS", "0"),
        ]);
        env.retain(|(k, v)| *k != "REDIS_URL" || *v == "http://not-redis");
        env.retain(|(k, v)| *k != "SBA_CORS__ALLOWED_ORIGINS" || *v == "*");
        let problems = settings_of(&env).unwrap_err();
        let names = problem_settings(&problems);
        for setting in [
            "PORT",
            "REDIS_URL",
            "SBA_CORS__ALLOWED_ORIGINS",
            "SBA_AUTH__LEEWAY_SECS",
            "SBA_DATABASE__MAX_CONNECTIONS",
        ] {
            assert!(names.contains(&setting), "{setting} missing from {names:?}");
        }
    }

    #[test]
    fn short_secrets_and_sqlite_in_production_are_rejected() {
        let mut env = production_env();
        env.retain(|(k, _)| *k != "SUPABASE_JWT_SECRET" && *k != "DATABASE_URL");
        env.extend([("SBA_AUTH__JWT_SECRETS", "short"), ("DATABASE_URL", "sqlite://x.db")]);
        let names = problem_settings(&settings_of(&env).unwrap_err()).join("|");
        assert!(names.contains("SBA_AUTH__JWT_SECRETS"), "{names}");
        assert!(names.contains("DATABASE_URL"), "{names}");
    }

    #[test]
    fn secrets_from_both_variables_are_combined_first_signing() {
        let settings = settings_of(&[
            ("SUPABASE_JWT_SECRET", "supabase-secret-supabase-secret-123"),
            (
                "SBA_AUTH__JWT_SECRETS",
                "next-secret-next-secret-next-secret, old-secret-old-secret-old-secret-1",
            ),
        ])
        .unwrap();
        let secrets: Vec<_> = settings.auth.secrets.iter().map(|s| s.expose_secret().to_owned()).collect();
        assert_eq!(
            secrets,
            [
                "supabase-secret-supabase-secret-123",
                "next-secret-next-secret-next-secret",
                "old-secret-old-secret-old-secret-1"
            ]
        );
        assert_eq!(settings.auth.secret_source, SecretSource::Configured);
    }

    #[test]
    fn unknown_sba_variables_are_warned_about() {
        let settings = settings_of(&[("SBA_AUTH__JWT_SECRET", "typo")]).unwrap();
        assert!(
            settings.warnings.iter().any(|w| w.starts_with("SBA_AUTH__JWT_SECRET is not a known setting"))
        );
    }

    #[test]
    fn settings_files_are_layered_under_the_environment() {
        let (env, options) = dev_env(&[("PORT", "7000")]);
        std::fs::create_dir_all(&options.config_dir).unwrap();
        std::fs::write(
            options.config_dir.join("sba.toml"),
            "[server]\nport = 6000\nshutdown_timeout_secs = 5\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        let settings = load(&env, &options).unwrap();
        assert_eq!(settings.server.port, 7000, "the environment wins over files");
        assert_eq!(settings.server.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(settings.log.format, LogFormat::Json);
    }

    #[test]
    fn the_storage_switch_must_agree_with_the_database_url() {
        let sqlite = settings_of(&[("SBA_DATABASE__BACKEND", "sqlite")]).unwrap();
        assert!(matches!(sqlite.store.location, StoreLocation::Sqlite(_)));
        let postgres =
            settings_of(&[("SBA_DATABASE__BACKEND", "postgres"), ("DATABASE_URL", "postgres://db:5432/sba")])
                .unwrap();
        assert!(matches!(postgres.store.location, StoreLocation::Postgres(_)));
        for (env, setting) in [
            (vec![("SBA_DATABASE__BACKEND", "postgres")], "DATABASE_URL"),
            (
                vec![("SBA_DATABASE__BACKEND", "sqlite"), ("DATABASE_URL", "postgres://db/sba")],
                "SBA_DATABASE__BACKEND",
            ),
            (vec![("SBA_DATABASE__BACKEND", "mysql")], "SBA_DATABASE__BACKEND"),
        ] {
            let problems = settings_of(&env).unwrap_err();
            assert!(problem_settings(&problems).contains(&setting), "{env:?}: {problems}");
        }
    }

    #[test]
    fn unknown_environment_name_is_a_problem() {
        let problems = settings_of(&[("SBA_ENV", "staging")]).unwrap_err();
        assert!(problem_settings(&problems).contains(&"SBA_ENV"));
    }

    #[test]
    fn a_jwks_url_alone_is_a_valid_production_key() {
        let mut env = production_env();
        env.retain(|(k, _)| *k != "SUPABASE_JWT_SECRET");
        env.push(("SBA_AUTH__JWKS_URL", "https://abc.supabase.co/auth/v1/.well-known/jwks.json"));
        let settings = settings_of(&env).unwrap();
        assert!(settings.auth.secrets.is_empty());
        assert_eq!(settings.auth.jwks_url.unwrap().path(), "/auth/v1/.well-known/jwks.json");
        let problems = settings_of(&[("SBA_AUTH__JWKS_URL", "ftp://keys")]).unwrap_err();
        assert_eq!(problem_settings(&problems), ["SBA_AUTH__JWKS_URL"]);
    }

    #[test]
    fn tenant_origins_and_the_platform_tenant_are_parsed_and_validated() {
        let a = "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";
        let b = "1b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";
        let origins = format!("{a}=https://a.example https://admin.a.example; {b}=http://localhost:3000");
        let settings =
            settings_of(&[("SBA_CORS__TENANT_ORIGINS", &origins), ("SBA_AUTH__PLATFORM_TENANT_ID", a)])
                .unwrap();
        let parsed: Vec<(String, Vec<String>)> =
            settings.cors.tenant_origins.iter().map(|(t, o)| (t.to_string(), o.clone())).collect();
        assert_eq!(
            parsed,
            [
                (a.to_owned(), vec!["https://a.example".to_owned(), "https://admin.a.example".to_owned()]),
                (b.to_owned(), vec!["http://localhost:3000".to_owned()]),
            ]
        );
        assert_eq!(settings.auth.platform_tenant.map(|t| t.to_string()).as_deref(), Some(a));

        for bad in [
            format!("{a}=*"),
            format!("{a}=https://a.example/"),
            "acme=https://a.example".to_owned(),
            "x".to_owned(),
        ] {
            let problems = settings_of(&[("SBA_CORS__TENANT_ORIGINS", &bad)]).unwrap_err();
            assert_eq!(problem_settings(&problems), ["SBA_CORS__TENANT_ORIGINS"], "{bad}");
        }
        let problems = settings_of(&[("SBA_AUTH__PLATFORM_TENANT_ID", "acme")]).unwrap_err();
        assert_eq!(problem_settings(&problems), ["SBA_AUTH__PLATFORM_TENANT_ID"]);
    }

    #[test]
    fn cache_settings_have_defaults_and_reject_out_of_range_values() {
        let defaults = settings_of(&[]).unwrap().cache;
        assert_eq!(defaults, CacheConfig::default());
        let cache = settings_of(&[
            ("SBA_CACHE__L1_MAX_MB", "8"),
            ("SBA_CACHE__L1_MAX_TTL_SECS", "30"),
            ("SBA_CACHE__REDIS_TIMEOUT_MS", "20"),
            ("SBA_CACHE__VERSION_TTL_SECS", "5"),
            ("SBA_CACHE__TTLS", "tenant=30/300; cors_origin=10/10"),
        ])
        .unwrap()
        .cache;
        assert_eq!(cache.l1_max_bytes, 8 * 1024 * 1024);
        assert_eq!(cache.l1_max_ttl, Duration::from_secs(30));
        assert_eq!(cache.redis_timeout, Duration::from_millis(20));
        assert_eq!(cache.version_ttl, Duration::from_secs(5));
        assert_eq!(
            cache.ttls,
            [
                ("tenant".to_owned(), Duration::from_secs(30), Duration::from_mins(5)),
                ("cors_origin".to_owned(), Duration::from_secs(10), Duration::from_secs(10))
            ]
        );
        for (var, bad) in [
            ("SBA_CACHE__L1_MAX_MB", "0"),
            ("SBA_CACHE__REDIS_TIMEOUT_MS", "9000"),
            ("SBA_CACHE__TTLS", "sessions=10/20"),
            ("SBA_CACHE__TTLS", "tenant=30/10"),
            ("SBA_CACHE__TTLS", "tenant=30"),
        ] {
            let problems = settings_of(&[(var, bad)]).unwrap_err();
            assert!(problems.0.iter().any(|p| p.setting == var), "{var}={bad}: {problems}");
        }
    }

    #[test]
    fn rate_limit_settings_parse_quotas_rules_plans_and_tenant_quotas() {
        let a = "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";
        let plans = format!("{a}=pro");
        let limits = format!("{a}=1000/60");
        let settings = settings_of(&[
            ("SBA_RATE_LIMIT__DEFAULT", "100/60"),
            ("SBA_RATE_LIMIT__RULES", "create-run POST /v1/runs 20/60; any * /v1/usage 5/1"),
            ("SBA_RATE_LIMIT__PLANS", "pro=600/60; free=60/60"),
            ("SBA_RATE_LIMIT__FAIL_MODE", "closed"),
            ("SBA_TENANTS__PLANS", &plans),
            ("SBA_TENANTS__RATE_LIMITS", &limits),
        ])
        .unwrap();
        let limit = &settings.rate_limit;
        assert_eq!(limit.default, Quota::new(100, 60).unwrap());
        assert_eq!(limit.rules.len(), 2);
        assert_eq!(limit.rules[0].method.as_deref(), Some("POST"));
        assert_eq!(limit.rules[1].method, None);
        assert_eq!(
            limit.plans,
            [
                ("pro".to_owned(), Quota::new(600, 60).unwrap()),
                ("free".to_owned(), Quota::new(60, 60).unwrap())
            ]
        );
        assert_eq!(limit.fail_mode, FailMode::Closed);
        assert_eq!(settings.tenants.plans[0].1, "pro");
        assert_eq!(limit.ws_quotas[&WsOp::Auth], Quota::new(10, 60).unwrap(), "defaults");
        assert_eq!(limit.ws_close_after, 10);
        let ws = settings_of(&[("SBA_RATE_LIMIT__WS", "ping=5/1"), ("SBA_RATE_LIMIT__WS_CLOSE_AFTER", "3")])
            .unwrap();
        assert_eq!(ws.rate_limit.ws_quotas[&WsOp::Ping], Quota::new(5, 1).unwrap());
        assert_eq!(ws.rate_limit.ws_quotas[&WsOp::Subscribe], Quota::new(60, 60).unwrap());
        assert_eq!(ws.rate_limit.ws_close_after, 3);
        assert_eq!(settings.tenants.rate_limits[0].1, Quota::new(1000, 60).unwrap());

        for (var, bad) in [
            ("SBA_RATE_LIMIT__DEFAULT", "100"),
            ("SBA_RATE_LIMIT__DEFAULT", "0/60"),
            ("SBA_RATE_LIMIT__RULES", "POST /v1/runs 20/60"),
            ("SBA_RATE_LIMIT__RULES", "x POST v1/runs 20/60"),
            ("SBA_RATE_LIMIT__PLANS", "pro"),
            ("SBA_RATE_LIMIT__FAIL_MODE", "maybe"),
            ("SBA_RATE_LIMIT__REDIS_TIMEOUT_MS", "0"),
            ("SBA_TENANTS__PLANS", "acme=pro"),
            ("SBA_RATE_LIMIT__WS", "publish=5/1"),
            ("SBA_RATE_LIMIT__WS_CLOSE_AFTER", "0"),
            ("SBA_TENANTS__RATE_LIMITS", "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e=fast"),
        ] {
            let problems = settings_of(&[(var, bad)]).unwrap_err();
            assert_eq!(problem_settings(&problems), [var], "{var}={bad}");
        }
    }
}
