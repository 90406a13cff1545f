//! A human-readable rendering of the effective settings, secrets redacted, for
//! `sba config check` and the startup log. Every URL goes through the one URL redaction
//! (user info and credential query values replaced).

use std::fmt::{self, Write as _};
use std::time::Duration;

use secrecy::ExposeSecret as _;

use super::settings::{LogFormat, SecretSource, Settings};
use crate::internal_store::StoreLocation;
use crate::sql::redact_url;

const REDACTED: &str = "[redacted]";

impl Settings {
    /// One line per adapter choice, for the single startup log line.
    pub fn adapter_summary(&self) -> String {
        let store = match &self.store.location {
            StoreLocation::Postgres(_) => "postgres (sea-orm)",
            StoreLocation::Sqlite(_) => "sqlite file (sea-orm)",
        };
        let mut tokens = match &self.auth.secret_source {
            SecretSource::Configured if self.auth.secrets.is_empty() => String::new(),
            SecretSource::Configured => format!("hs256 ({} secret(s))", self.auth.secrets.len()),
            SecretSource::GeneratedFile(_) => "hs256 (generated development secret)".to_owned(),
        };
        if self.auth.jwks_url.is_some() {
            if !tokens.is_empty() {
                tokens.push_str(" + ");
            }
            tokens.push_str("rs256/es256 (jwks)");
        }
        let limiter = match (&self.redis, self.rate_limit.enabled) {
            (_, false) => "off",
            (Some(_), true) => "redis (fred, in-process fallback)",
            (None, true) => "in-process",
        };
        let cache =
            if self.redis.is_some() { "redis with in-process l1 (fred, moka)" } else { "in-process (moka)" };
        let (tenants, tenant_data) = match &self.supabase {
            Some(supabase) if supabase.db_url.is_some() => {
                ("supabase sql", "supabase sql (row-level security)")
            }
            Some(_) => ("supabase postgrest", "supabase postgrest (row-level security, user jwt)"),
            None => ("embedded (configuration)", "embedded sqlite"),
        };
        format!(
            "internal_store={store} token_verifier={tokens} tenant_directory={tenants} \
             tenant_data={tenant_data} rate_limiter={limiter} cache={cache}"
        )
    }
}

impl fmt::Display for Settings {
    /// Every effective setting; secrets show only whether they are set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let mut line = |key: &str, value: &dyn fmt::Display| {
            let _ = writeln!(out, "{key:<28} = {value}");
        };
        line("environment", &self.environment.as_str());
        line("data_dir", &self.data_dir.display());
        line("server.host", &self.server.host);
        line("server.port", &self.server.port);
        line("server.shutdown_timeout", &format_args!("{}s", self.server.shutdown_timeout.as_secs()));
        line("server.max_body_bytes", &self.server.max_body_bytes);
        let proxies: Vec<String> = self.server.trusted_proxies.iter().map(ToString::to_string).collect();
        line(
            "server.trusted_proxies",
            &if proxies.is_empty() {
                "(none: the socket peer is the client)".to_owned()
            } else {
                proxies.join(", ")
            },
        );
        match self.server.admin_port {
            Some(port) => line("server.admin_port", &format_args!("{port} (/metrics, /openapi.json, /docs)")),
            None => line("server.admin_port", &"(unset: the public port serves /metrics and /docs)"),
        }
        match &self.store.location {
            StoreLocation::Postgres(url) => line("database.url", &redact_url(url.expose_secret())),
            StoreLocation::Sqlite(path) => {
                line("database.url", &format_args!("sqlite file {}", path.display()));
            }
        }
        let backend = match &self.store.location {
            StoreLocation::Postgres(_) => "postgres",
            StoreLocation::Sqlite(_) => "sqlite",
        };
        line("database.backend", &backend);
        line("database.max_connections", &self.store.max_connections);
        line("database.connect_timeout", &format_args!("{}s", self.store.connect_timeout.as_secs()));
        match &self.redis {
            Some(redis) => line("redis.url", &redact_url(redis.url.expose_secret())),
            None => line("redis.url", &"(not set: in-process adapters)"),
        }
        match &self.supabase {
            Some(supabase) => {
                if let Some(rest) = &supabase.rest {
                    line("supabase.url", &redact_url(rest.url.as_str()));
                    line("supabase.service_role_key", &REDACTED);
                    line("supabase.anon_key", if rest.anon_key.is_some() { &REDACTED } else { &"(not set)" });
                }
                let db_url = supabase.db_url.as_ref().map(|url| redact_url(url.expose_secret()));
                line("supabase.db_url", &OrNone(db_url.as_ref()));
                line("supabase.timeout", &format_args!("{}ms", supabase.timeout.as_millis()));
            }
            None => line("supabase", &"(not set: embedded store)"),
        }
        match &self.auth.secret_source {
            SecretSource::Configured => {
                line("auth.jwt_secrets", &format_args!("{} secret(s) {REDACTED}", self.auth.secrets.len()));
            }
            SecretSource::GeneratedFile(path) => {
                line("auth.jwt_secrets", &format_args!("generated development secret in {}", path.display()));
            }
        }
        line(
            "auth.jwks_url",
            &OrNone(self.auth.jwks_url.as_ref().map(|url| redact_url(url.as_str())).as_ref()),
        );
        line("auth.issuer", &OrNone(self.auth.issuer.as_ref()));
        line("auth.audience", &OrNone(self.auth.audience.as_ref()));
        line("auth.leeway", &format_args!("{}s", self.auth.leeway.as_secs()));
        line("auth.platform_tenant_id", &OrNone(self.auth.platform_tenant.as_ref()));
        line("cors.allowed_origins", &format_args!("[{}]", self.cors.allowed_origins.join(", ")));
        line("cors.tenant_origins", &format_args!("{} tenant(s)", self.cors.tenant_origins.len()));
        match self.rate_limit.tenant_aggregate_factor {
            Some(factor) => {
                line("rate_limit.tenant_aggregate_factor", &format_args!("{factor} x the request's quota"));
            }
            None => line("rate_limit.tenant_aggregate_factor", &"(not set: no tenant aggregate bucket)"),
        }
        line("log.filter", &self.log.filter);
        line("log.format", &if self.log.format == LogFormat::Json { "json" } else { "pretty" });
        line("demo.echo_agent", &self.demo.echo_agent);
        line("demo.words_per_second", &self.demo.words_per_second);
        line("demo.max_runs", &self.demo.max_runs);
        line(
            "playground.enabled",
            &match (self.playground.enabled, self.playground.dev_tokens) {
                (true, true) => "true (GET /playground, and POST /dev/token mints development tokens)",
                (true, false) => "true (GET /playground; no POST /dev/token outside development)",
                (false, _) => "false",
            },
        );
        line("knowledge.max_concurrent_uploads", &self.knowledge.max_concurrent_uploads);
        self.worker_lines(&mut line);
        self.stream_lines(&mut line);
        line(
            "telemetry.otlp_endpoint",
            &OrNone(self.otlp_endpoint.as_ref().map(|url| redact_url(url.as_str())).as_ref()),
        );
        f.write_str(&out)
    }
}

impl Settings {
    /// The worker's and the event pipeline's lines of the rendering.
    fn worker_lines(&self, line: &mut dyn FnMut(&str, &dyn fmt::Display)) {
        line("worker.sweep_interval", &format_args!("{}s", self.worker.sweep_interval.as_secs()));
        line("worker.max_run_age", &format_args!("{}s", self.worker.max_run_age.as_secs()));
        let worker = &self.worker;
        line(
            "worker.in_process",
            &if worker.in_process { "true (sba serve runs the worker too)" } else { "false" },
        );
        line("worker.batch", &worker.batch);
        line("worker.poll_interval", &duration_text(worker.poll_interval));
        line("worker.claim_idle", &duration_text(worker.claim_idle));
        line("worker.lease_ttl", &duration_text(worker.lease_ttl));
        line("worker.max_partitions", &worker.max_partitions);
        line("worker.max_attempts", &worker.max_attempts);
        let events = &self.events;
        line("events.partitions", &format_args!("{} (fixed per deployment)", events.partitions));
        line("events.history_max_len", &events.history_max_len);
        line("events.history_ttl", &duration_text(events.history_ttl));
        line("events.timeout", &duration_text(events.timeout));
        line("events.canary_timeout", &duration_text(events.canary_timeout));
        line("events.reorder_window", &duration_text(events.reorder_window));
    }
}

impl Settings {
    /// The WebSocket gateway's lines of the rendering.
    fn stream_lines(&self, line: &mut dyn FnMut(&str, &dyn fmt::Display)) {
        let stream = &self.stream;
        line("stream.max_frame_bytes", &stream.max_frame_bytes);
        line("stream.heartbeat_interval", &duration_text(stream.heartbeat_interval));
        line("stream.heartbeat_timeout", &duration_text(stream.heartbeat_timeout));
        line("stream.max_subscriptions", &stream.max_subscriptions);
        line("stream.outbound_queue", &format_args!("{:?}", stream.outbound));
        let rates = stream.throttle.default;
        line(
            "stream.events_per_second",
            &format_args!("tenant {} / user {}", rates.tenant_per_second, rates.user_per_second),
        );
        let mut plans: Vec<String> = stream
            .throttle
            .plans
            .iter()
            .map(|(plan, rates)| format!("{plan}={}/{}", rates.tenant_per_second, rates.user_per_second))
            .collect();
        plans.sort();
        line("stream.plans", &if plans.is_empty() { "(none)".to_owned() } else { plans.join("; ") });
    }
}

/// A duration in the largest unit that shows it exactly: `250ms`, `30s`, `10m`, `24h` (the
/// way duration settings are written).
pub(super) fn duration_text(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        0 => "0s".to_owned(),
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1_000 == 0 => format!("{}s", m / 1_000),
        m => format!("{m}ms"),
    }
}

struct OrNone<'a, T>(Option<&'a T>);

impl<T: fmt::Display> fmt::Display for OrNone<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("(not set)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EnvSnapshot, LoadOptions, load};

    #[test]
    fn rendering_never_shows_secrets() {
        let dir = std::env::temp_dir().join(format!("sba-report-{}", uuid::Uuid::new_v4().simple()));
        let env = EnvSnapshot::from_pairs([
            ("SBA_DATA_DIR", dir.display().to_string().as_str()),
            ("DATABASE_URL", "postgres://sba:db-password-1@db:5432/sba"),
            ("REDIS_URL", "redis://:redis-password-2@cache:6379"),
            ("SUPABASE_URL", "https://abc.supabase.co"),
            ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key-3"),
            ("SUPABASE_JWT_SECRET", "jwt-secret-4-jwt-secret-4-jwt-secret-4"),
        ]);
        let settings =
            load(&env, &LoadOptions { config_dir: dir.join("config"), create_dev_secret: false }).unwrap();
        let text = format!("{settings}\n{settings:?}\n{}", settings.adapter_summary());
        for secret in ["db-password-1", "redis-password-2", "service-role-key-3", "jwt-secret-4"] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        assert!(text.contains("supabase.url"));
    }

    #[test]
    fn config_check_redacts_credentials_in_every_url_it_prints() {
        let dir = std::env::temp_dir().join(format!("sba-report-{}", uuid::Uuid::new_v4().simple()));
        let env = EnvSnapshot::from_pairs([
            ("SBA_DATA_DIR", dir.display().to_string().as_str()),
            ("DATABASE_URL", "postgres://sba:db-password-1@db:5432/sba?password=db-query-2"),
            ("REDIS_URL", "redis://user:redis-password-3@cache:6379"),
            ("SUPABASE_URL", "https://abc:supabase-password-4@abc.supabase.co"),
            ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key"),
            ("SUPABASE_DB_URL", "postgres://pooler.test:6543/postgres?user=sba&password=supabase-db-5"),
            (
                "SBA_AUTH__JWKS_URL",
                "https://keys:jwks-password-6@abc.supabase.co/jwks.json?apikey=jwks-key-7",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:otlp-password-8@collector:4318"),
        ]);
        let settings =
            load(&env, &LoadOptions { config_dir: dir.join("config"), create_dev_secret: false }).unwrap();
        let text = settings.to_string();
        for secret in [
            "db-password-1",
            "db-query-2",
            "redis-password-3",
            "supabase-password-4",
            "supabase-db-5",
            "jwks-password-6",
            "jwks-key-7",
            "otlp-password-8",
        ] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        for shown in [
            "postgres://REDACTED@db:5432/sba?password=REDACTED",
            "redis://REDACTED@cache:6379",
            "https://REDACTED@abc.supabase.co/",
            "postgres://pooler.test:6543/postgres?user=sba&password=REDACTED",
            "https://REDACTED@abc.supabase.co/jwks.json?apikey=REDACTED",
            "http://REDACTED@collector:4318/",
        ] {
            assert!(text.contains(shown), "{shown} missing:\n{text}");
        }
    }
}
