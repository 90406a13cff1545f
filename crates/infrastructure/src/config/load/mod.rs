//! Loading: files, then environment, into raw strings; then parsing and validating every
//! setting, collecting every problem instead of stopping at the first.
//!
//! Each settings section has its module: its raw form (what files and variables give) and
//! how it becomes its typed settings. The `SBA_*` variables this build understands are
//! derived from the raw forms' fields.

use std::fmt;
use std::path::PathBuf;

use super::env::EnvSnapshot;
use super::settings::{Environment, Settings};

/// Declares a section's raw form: a struct of optional strings (or secrets) that files and
/// `SBA_<SECTION>__<KEY>` variables fill, and `KEYS`, the names of its fields, from which
/// the known variables are derived (a field added here is known at once).
macro_rules! raw_section {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default)]
        $vis struct $name {
            $(pub(super) $field: $ty,)*
        }

        impl $name {
            /// The file keys of this section, in declaration order.
            // `Raw`'s own keys are read only by the test that checks `SECTIONS` against them.
            #[allow(dead_code)]
            pub(super) const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}

mod auth;
mod cache;
mod cors;
mod database;
mod demo;
mod events;
mod knowledge;
mod log;
mod parse;
mod playground;
mod rate_limit;
mod redis;
mod server;
mod stream;
mod supabase;
mod telemetry;
mod tenants;
#[cfg(test)]
mod testing;
mod worker;

pub use cache::CACHE_NAMESPACES;

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

/// `SBA_*` variables outside any section: the top-level keys of [`Raw`] and the optional
/// configuration file.
const TOP_LEVEL_VARS: [&str; 3] = ["SBA_ENV", "SBA_DATA_DIR", "SBA_CONFIG_FILE"];

/// Every section and its keys: `SBA_<SECTION>__<KEY>` names a setting.
const SECTIONS: [(&str, &[&str]); 17] = [
    ("server", server::RawServer::KEYS),
    ("database", database::RawDatabase::KEYS),
    ("redis", redis::RawRedis::KEYS),
    ("supabase", supabase::RawSupabase::KEYS),
    ("auth", auth::RawAuth::KEYS),
    ("cors", cors::RawCors::KEYS),
    ("log", log::RawLog::KEYS),
    ("telemetry", telemetry::RawTelemetry::KEYS),
    ("worker", worker::RawWorker::KEYS),
    ("events", events::RawEvents::KEYS),
    ("rate_limit", rate_limit::RawRateLimit::KEYS),
    ("tenants", tenants::RawTenants::KEYS),
    ("cache", cache::RawCache::KEYS),
    ("knowledge", knowledge::RawKnowledge::KEYS),
    ("demo", demo::RawDemo::KEYS),
    ("stream", stream::RawStream::KEYS),
    ("playground", playground::RawPlayground::KEYS),
];

/// Every `SBA_*` variable this build understands (others are reported as unknown).
fn known_sba_vars() -> Vec<String> {
    let sections = SECTIONS.iter().flat_map(|(section, keys)| {
        keys.iter().map(move |key| format!("SBA_{}__{}", section.to_uppercase(), key.to_uppercase()))
    });
    TOP_LEVEL_VARS.iter().map(|name| (*name).to_owned()).chain(sections).collect()
}

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

raw_section! {
    struct Raw {
        env: Option<String>,
        data_dir: Option<String>,
        server: server::RawServer,
        database: database::RawDatabase,
        redis: redis::RawRedis,
        supabase: supabase::RawSupabase,
        auth: auth::RawAuth,
        cors: cors::RawCors,
        log: log::RawLog,
        telemetry: telemetry::RawTelemetry,
        worker: worker::RawWorker,
        events: events::RawEvents,
        rate_limit: rate_limit::RawRateLimit,
        tenants: tenants::RawTenants,
        cache: cache::RawCache,
        knowledge: knowledge::RawKnowledge,
        demo: demo::RawDemo,
        stream: stream::RawStream,
        playground: playground::RawPlayground,
    }
}

/// Loads and validates the settings of this process.
///
/// # Errors
/// [`Problems`] listing every missing or invalid setting.
pub fn load(env: &EnvSnapshot, options: &LoadOptions) -> Result<Settings, Problems> {
    let raw = read_raw(env, options)
        .map_err(|message| Problems(vec![Problem { setting: "configuration".into(), message }]))?;
    let mut problems = Problems::default();
    let environment = match raw.env.as_deref() {
        None => Environment::Development,
        Some(name) => Environment::from_name(name).unwrap_or_else(|| {
            problems.push("SBA_ENV", format!("`{}` is not `development` or `production`", name.trim()));
            Environment::Production
        }),
    };
    let mut ctx = Ctx { env, problems, production: environment == Environment::Production };
    let data_dir = PathBuf::from(raw.data_dir.as_deref().unwrap_or(".sba"));

    let server = server::server_settings(&mut ctx, &raw.server);
    let store = database::store_settings(&mut ctx, &raw.database, &data_dir);
    let redis = redis::redis_settings(&mut ctx, raw.redis);
    let supabase = supabase::supabase_settings(&mut ctx, raw.supabase);
    let auth = auth::auth_settings(&mut ctx, raw.auth, &data_dir, options);
    let cors = cors::cors_settings(&mut ctx, &raw.cors);
    let log = log::log_settings(&mut ctx, raw.log);
    let events = events::events_settings(&mut ctx.problems, &raw.events);
    let worker = worker::worker_settings(&mut ctx, &raw.worker, &events);
    let rate_limit = rate_limit::rate_limit_settings(&mut ctx.problems, &raw.rate_limit);
    let tenants = tenants::tenant_settings(&mut ctx.problems, &raw.tenants);
    let cache = cache::cache_settings(&mut ctx.problems, &raw.cache);
    let knowledge = knowledge::knowledge_settings(&mut ctx.problems, &raw.knowledge);
    let demo = demo::demo_settings(&mut ctx, &raw.demo);
    let stream = stream::stream_settings(&mut ctx.problems, &raw.stream);
    let playground = playground::playground_settings(&mut ctx, &raw.playground);
    let otlp_endpoint = telemetry::otlp_endpoint(&mut ctx.problems, &raw.telemetry);

    if !ctx.problems.0.is_empty() {
        return Err(ctx.problems);
    }
    let mut warnings = ignored_variables(env);
    warnings.extend(unknown_variables(env));
    warnings.extend(playground::exposure_warning(playground, &server));
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
        events,
        rate_limit,
        tenants,
        cache,
        knowledge,
        demo,
        stream,
        playground,
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

/// A parser's message without the lines it quotes from the file (a TOML error shows the
/// offending line, which may hold a password): its first line ("TOML parse error at line 2,
/// column 20") and where the file is named (" in <file>", at the end).
fn without_quoted_lines(message: &str) -> String {
    let mut lines = message.lines();
    let first = lines.next().unwrap_or_default();
    match lines.last() {
        None => first.to_owned(),
        Some(last) => match last.rfind(" in ") {
            Some(at) => format!("{first} (the quoted lines are left out){}", &last[at..]),
            None => format!("{first} (the quoted lines are left out)"),
        },
    }
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
        // An empty variable counts as unset (docs/configuration.md), here too.
        .filter(|(k, v)| k.starts_with("SBA_") && !v.trim().is_empty())
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
        .map_err(|e| format!("cannot read the configuration: {}", without_quoted_lines(&e.to_string())))
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
    let known = known_sba_vars();
    env.names()
        .filter(|name| name.starts_with("SBA_") && !known.iter().any(|k| k == name))
        .map(|name| format!("{name} is not a known setting and is ignored (misspelt?)"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::*;
    use super::*;
    use crate::config::settings::{LogFormat, SecretSource};
    use crate::internal_store::StoreLocation;

    #[test]
    fn a_parse_error_keeps_its_position_and_file_but_not_the_quoted_line() {
        let message = "TOML parse error at line 2, column 20\n  |\n2 | url = \"postgres://app:hunter2@db\n  |  ^\nexpected `\"` in /etc/sba.toml";
        let shown = without_quoted_lines(message);
        assert_eq!(
            shown,
            "TOML parse error at line 2, column 20 (the quoted lines are left out) in /etc/sba.toml"
        );
        assert!(!shown.contains("hunter2"));
        assert_eq!(without_quoted_lines("missing field `x`"), "missing field `x`");
    }

    #[test]
    fn empty_sba_variables_count_as_unset() {
        let settings = settings_of(&[
            ("SBA_SERVER__ADMIN_PORT", ""),
            ("SBA_AUTH__JWKS_URL", " "),
            ("SBA_EVENTS__REORDER_WINDOW", ""),
        ])
        .unwrap();
        assert_eq!(settings.server.admin_port, None);
        assert_eq!(settings.auth.jwks_url, None);
        assert_eq!(settings.events.reorder_window, std::time::Duration::from_millis(500));
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
    fn unknown_environment_name_is_a_problem() {
        let problems = settings_of(&[("SBA_ENV", "staging")]).unwrap_err();
        assert!(problem_settings(&problems).contains(&"SBA_ENV"));
    }

    #[test]
    fn known_variables_are_every_key_of_every_section() {
        let sections: Vec<&str> = SECTIONS.iter().map(|(section, _)| *section).collect();
        let top_level: Vec<&str> = Raw::KEYS.iter().copied().filter(|key| !sections.contains(key)).collect();
        assert_eq!(top_level, ["env", "data_dir"], "a top-level key is missing from TOP_LEVEL_VARS");
        assert_eq!(Raw::KEYS.len(), top_level.len() + SECTIONS.len(), "a section is missing from SECTIONS");
        let known = known_sba_vars();
        for name in [
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
            "SBA_WORKER__IN_PROCESS",
            "SBA_WORKER__BATCH",
            "SBA_WORKER__POLL_INTERVAL",
            "SBA_WORKER__CLAIM_IDLE",
            "SBA_WORKER__LEASE_TTL",
            "SBA_WORKER__MAX_PARTITIONS",
            "SBA_WORKER__MAX_ATTEMPTS",
            "SBA_EVENTS__PARTITIONS",
            "SBA_EVENTS__HISTORY_MAX_LEN",
            "SBA_EVENTS__HISTORY_TTL",
            "SBA_EVENTS__TIMEOUT",
            "SBA_EVENTS__CANARY_TIMEOUT",
            "SBA_CACHE__L1_MAX_MB",
            "SBA_CACHE__L1_MAX_TTL_SECS",
            "SBA_CACHE__REDIS_TIMEOUT_MS",
            "SBA_CACHE__VERSION_TTL_SECS",
            "SBA_CACHE__TTLS",
            "SBA_KNOWLEDGE__MAX_CONCURRENT_UPLOADS",
            "SBA_STREAM__MAX_FRAME_BYTES",
            "SBA_STREAM__HEARTBEAT_INTERVAL",
            "SBA_STREAM__PLANS",
            "SBA_PLAYGROUND__ENABLED",
        ] {
            assert!(known.iter().any(|k| k == name), "{name} is no longer known");
        }
    }
}
