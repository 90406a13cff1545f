//! The composition root: the only place that chooses adapters for the application's ports.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use sba_application::audit::{AuditQueries, Auditor};
use sba_application::cache::NamespacePolicy;
use sba_application::cors::{OriginPolicy, REGISTERED_ORIGIN_NAMESPACE};
use sba_application::health::{HealthMonitor, SystemHealthQueries};
use sba_application::idempotency::Idempotency;
use sba_application::knowledge::KnowledgeService;
use sba_application::ports::{
    Cache, DependencyCheck, KnowledgeStore, RateLimiter, SessionStore, TenantDirectory, TokenVerifier,
};
use sba_application::ratelimit::{LimitPolicies, RateLimits};
use sba_application::ratelimit_ws::WsPolicies;
use sba_application::runs::{RUN_ACCESS_NAMESPACE, RunAccess, RunQueries, RunService};
use sba_application::sessions::{SESSION_NAMESPACE, SessionService};
use sba_application::tenants::{TENANT_NAMESPACE, TenantCache};
use sba_application::usage::UsageQueries;
use sba_infrastructure::auth::{
    HsJwtSigner, HsJwtVerifier, JwksSettings, JwksVerifier, JwtRules, JwtVerifier,
};
use sba_infrastructure::cache::{CacheSettings, FredCache, InMemoryCache};
use sba_infrastructure::config::Settings;
use sba_infrastructure::embedded::EmbeddedStore;
use sba_infrastructure::memory::{InMemoryRateLimiter, StaticTenantDirectory};
use sba_infrastructure::postgres::{InternalStore, PoolOptions};
use sba_infrastructure::redis::{FredRateLimiter, FredRateLimiterSettings};
use sba_infrastructure::supabase::{PostgrestClient, PostgrestSettings, connect_sql};
use sba_infrastructure::system::{SystemClock, UuidV7Generator};

use crate::http;
use crate::http::AppState;

/// A built, bound, not yet running server.
pub struct Application {
    server: Server,
    port: u16,
    store: InternalStore,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("port", &self.port).finish_non_exhaustive()
    }
}

impl Application {
    /// Connects every adapter, migrates the internal store and binds `host:port`.
    ///
    /// # Errors
    /// When a dependency is unreachable or the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let address = (settings.server.host, settings.server.port);
        let listener =
            TcpListener::bind(address).with_context(|| format!("binding {}:{}", address.0, address.1))?;
        Self::build_with_listener(settings, listener, std::future::pending()).await
    }

    /// Like [`Self::build`] on an already bound listener (tests bind port 0); the server
    /// stops gracefully when `shutdown` completes, as it does on SIGTERM or Ctrl-C.
    ///
    /// # Errors
    /// When a dependency is unreachable or the server cannot start.
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        http::metrics::recorder();
        tokio::spawn(http::metrics::upkeep());
        let store = open_store(&settings, settings.store.max_connections).await?;
        store.migrate_up().await?;

        let (cache, redis_check) = cache(&settings).await?;
        let data = TenantData::connect(&settings).await?;
        let mut checks = vec![store.dependency_check(), Arc::clone(&data.check)];
        checks.extend(redis_check);
        let tenants = tenant_cache(&settings, &cache, Arc::clone(&data.directory));
        let auditor = Auditor::new(store.audit_log(), Arc::new(SystemClock), Arc::new(UuidV7Generator));
        let state = AppState {
            runs: run_service(&store),
            queries: RunQueries::new(
                store.run_repository(),
                store.step_repository(),
                store.tool_call_repository(),
                store.event_log(),
                run_access(&settings, &store, &cache),
            ),
            audit: AuditQueries::new(store.audit_log()),
            idempotency: idempotency(&store),
            usage: UsageQueries::new(store.usage_ledger()),
            verifier: token_verifier(&settings).await?,
            health: health_monitor(&store, checks.clone()),
            system_health: SystemHealthQueries::new(
                health_monitor(&store, checks),
                settings.auth.platform_tenant,
            ),
            origins: origin_policy(&settings, tenants.clone(), &cache),
            tenants,
            sessions: SessionService::new(
                data.sessions,
                auditor.clone(),
                Arc::clone(&cache),
                Arc::new(SystemClock),
                Arc::new(UuidV7Generator),
                namespace(&settings, SESSION_NAMESPACE),
            ),
            knowledge: KnowledgeService::new(
                data.knowledge,
                auditor,
                Arc::new(SystemClock),
                Arc::new(UuidV7Generator),
            ),
            rate_policies: settings.rate_limit.enabled.then(|| Arc::new(limit_policies(&settings))),
            rate_limits: rate_limits(&settings).await?,
            ws_policies: Arc::new(WsPolicies {
                quotas: settings.rate_limit.ws_quotas.clone(),
                close_after_refusals: settings.rate_limit.ws_close_after,
            }),
        };
        let port = listener.local_addr().context("reading the bound address")?.port();
        let limits = http::Limits { max_body_bytes: settings.server.max_body_bytes };
        let data = web::Data::new(state);
        let server =
            HttpServer::new(move || App::new().configure(|cfg| http::configure(cfg, data.clone(), limits)))
                .shutdown_timeout(settings.server.shutdown_timeout.as_secs())
                .listen(listener)
                .context("starting the HTTP server")?
                .run();
        let handle = server.handle();
        tokio::spawn(async move {
            shutdown.await;
            handle.stop(true).await;
        });

        tracing::info!(
            environment = settings.environment.as_str(),
            address = %format_args!("http://{}:{port}", settings.server.host),
            internal_store = store.description(),
            adapters = %settings.adapter_summary(),
            "sba is serving"
        );
        for warning in &settings.warnings {
            tracing::warn!("{warning}");
        }
        Ok(Self { server, port, store })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGTERM, Ctrl-C or the shutdown future), letting in-flight
    /// requests finish, then closes the store.
    ///
    /// # Errors
    /// When the server fails while running.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.store.close().await;
        tracing::info!("sba stopped");
        result
    }
}

/// `sba worker`: background work that no request triggers. Today that is the run-expiry
/// sweep, the recorded health history and the purge of expired idempotency keys; the event
/// persisters join it when the durable queue exists.
pub struct Worker {
    runs: RunService,
    health: HealthMonitor,
    idempotency: Idempotency,
    store: InternalStore,
    settings: sba_infrastructure::config::WorkerSettings,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// How many runs one sweep expires at most; the next tick takes the rest.
const SWEEP_BATCH: u64 = 500;

impl Worker {
    /// Connects the store and migrates it, like the server does.
    ///
    /// # Errors
    /// When the store is unreachable or a migration fails.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let store = open_store(settings, 4).await?;
        store.migrate_up().await?;
        Ok(Self {
            runs: run_service(&store),
            health: health_monitor(&store, vec![store.dependency_check()]),
            idempotency: idempotency(&store),
            store,
            settings: settings.worker.clone(),
        })
    }

    /// Expires overdue runs once, in batches until none is left; returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn sweep_once(&self) -> anyhow::Result<usize> {
        let max_age =
            chrono::Duration::from_std(self.settings.max_run_age).context("max run age is out of range")?;
        let mut total = 0;
        loop {
            let expired = self.runs.expire_overdue(max_age, SWEEP_BATCH).await?;
            total += expired;
            if (expired as u64) < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }

    /// One round of background work; failures are logged and retried at the next tick.
    async fn tick(&self) {
        match self.sweep_once().await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired overdue runs"),
            Err(error) => tracing::error!(error = format!("{error:#}"), "run-expiry sweep failed"),
        }
        if let Err(error) = self.record_health().await {
            tracing::error!(error = format!("{error:#}"), "recording health failed");
        }
        match self.idempotency.purge_expired().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired idempotency keys"),
            Err(error) => tracing::error!(error = format!("{error:#}"), "purging idempotency keys failed"),
        }
    }

    /// Checks every dependency and appends the results to the health history.
    ///
    /// # Errors
    /// When the history cannot be written.
    pub async fn record_health(&self) -> anyhow::Result<Vec<sba_application::ports::HealthRecord>> {
        Ok(self.health.check_and_record().await?)
    }

    /// Sweeps every interval until `shutdown` completes; a failed sweep is logged and retried
    /// at the next tick.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(
            sweep_interval_secs = self.settings.sweep_interval.as_secs(),
            max_run_age_secs = self.settings.max_run_age.as_secs(),
            internal_store = self.store.description(),
            "sba worker is running: run-expiry sweep"
        );
        let mut ticks = tokio::time::interval(self.settings.sweep_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticks.tick() => self.tick().await,
            }
        }
        self.store.close().await;
        tracing::info!("sba worker stopped");
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The internal store the settings name, with a pool of `max_connections`.
///
/// # Errors
/// When the store cannot be reached.
pub async fn open_store(settings: &Settings, max_connections: u32) -> anyhow::Result<InternalStore> {
    let pool = PoolOptions { max_connections, connect_timeout: settings.store.connect_timeout };
    InternalStore::connect(&settings.store.location, pool).await
}

fn idempotency(store: &InternalStore) -> Idempotency {
    Idempotency::new(store.idempotency_store(), Arc::new(SystemClock))
}

/// Health checks of the dependencies this process uses (`checks`), with history in the
/// internal store.
fn health_monitor(store: &InternalStore, checks: Vec<Arc<dyn DependencyCheck>>) -> HealthMonitor {
    HealthMonitor::new(checks, store.health_log(), Arc::new(SystemClock), Arc::new(UuidV7Generator))
}

/// The run use cases on the internal store, with the system clock and UUIDv7 ids.
fn run_service(store: &InternalStore) -> RunService {
    RunService::new(
        store.run_repository(),
        store.run_ledger(),
        store.audit_log(),
        Arc::new(SystemClock),
        Arc::new(UuidV7Generator),
    )
}

/// The signer of `sba dev-token`: the first configured HS256 secret, with the rules the
/// server verifies.
///
/// # Errors
/// When no HS256 secret is configured.
pub fn token_signer(settings: &Settings) -> anyhow::Result<HsJwtSigner> {
    let secret = settings
        .auth
        .secrets
        .first()
        .ok_or_else(|| anyhow::anyhow!("no HS256 secret is configured, so no token can be signed"))?;
    Ok(HsJwtSigner::new(secret, jwt_rules(settings)))
}

/// The bearer-token verifier the settings describe.
/// HS256 tokens verify against the configured secrets, RS256/ES256 tokens against the
/// JWKS (fetched once here, bounded by its timeout; a failure is logged and retried on the
/// first token).
async fn token_verifier(settings: &Settings) -> anyhow::Result<Arc<dyn TokenVerifier>> {
    let rules = jwt_rules(settings);
    let hs256 =
        (!settings.auth.secrets.is_empty()).then(|| HsJwtVerifier::new(&settings.auth.secrets, &rules));
    let jwks = match &settings.auth.jwks_url {
        None => None,
        Some(url) => {
            let verifier = JwksVerifier::new(JwksSettings::new(url.clone()), &rules)
                .context("building the JWKS client")?;
            verifier.prefetch().await;
            Some(verifier)
        }
    };
    Ok(Arc::new(JwtVerifier::new(hs256, jwks)))
}

/// The configured quotas; only `/v1/*` routes are limited.
fn limit_policies(settings: &Settings) -> LimitPolicies {
    LimitPolicies {
        default: settings.rate_limit.default,
        rules: settings.rate_limit.rules.clone(),
        plans: settings.rate_limit.plans.iter().cloned().collect(),
        exempt: Vec::new(),
    }
}

/// The rate limiter.
///
/// With `REDIS_URL` the limits are shared by every node through Redis, with the in-process
/// limiter as the fallback while Redis is unreachable (`fail_mode = open`); without it the
/// in-process limiter decides alone (development, one node).
///
/// # Errors
/// When the Redis URL is not usable (an unreachable Redis is not an error).
async fn rate_limits(settings: &Settings) -> anyhow::Result<RateLimits> {
    let local: Arc<dyn RateLimiter> = Arc::new(InMemoryRateLimiter::new());
    let distributed: Arc<dyn RateLimiter> = match &settings.redis {
        None => Arc::clone(&local),
        Some(redis) => {
            let limiter_settings =
                FredRateLimiterSettings { timeout: settings.rate_limit.redis_timeout, ..Default::default() };
            Arc::new(FredRateLimiter::connect(&redis.url, limiter_settings).await?)
        }
    };
    Ok(RateLimits::new(distributed, local, settings.rate_limit.fail_mode))
}

/// The cache (ADR 0007): Redis with an in-process tier when `REDIS_URL` is set (and the
/// readiness check of that Redis), in process only otherwise.
///
/// # Errors
/// When the Redis URL is not usable (an unreachable Redis is not an error).
async fn cache(settings: &Settings) -> anyhow::Result<(Arc<dyn Cache>, Option<Arc<dyn DependencyCheck>>)> {
    let cache_settings = CacheSettings {
        l1_max_bytes: settings.cache.l1_max_bytes,
        l1_max_ttl: settings.cache.l1_max_ttl,
        redis_timeout: settings.cache.redis_timeout,
        version_ttl: settings.cache.version_ttl,
    };
    Ok(match &settings.redis {
        None => (Arc::new(InMemoryCache::new(cache_settings)), None),
        Some(redis) => {
            let cache = FredCache::connect(&redis.url, cache_settings).await?;
            let check = cache.dependency_check();
            (Arc::new(cache), Some(check))
        }
    })
}

/// A namespace's policy with the TTLs `SBA_CACHE__TTLS` sets for it.
fn namespace(settings: &Settings, policy: NamespacePolicy) -> NamespacePolicy {
    settings
        .cache
        .ttls
        .iter()
        .find(|(name, _, _)| name == policy.name)
        .map_or(policy, |(_, ttl, max_ttl)| NamespacePolicy { ttl: *ttl, max_ttl: *max_ttl, ..policy })
}

/// The adapters of the tenant-facing data (ADR 0008): tenants, sessions, knowledge.
struct TenantData {
    /// Readiness of where the data lives (`supabase` or `embedded_store`).
    check: Arc<dyn DependencyCheck>,
    directory: Arc<dyn TenantDirectory>,
    sessions: Arc<dyn SessionStore>,
    knowledge: Arc<dyn KnowledgeStore>,
}

impl TenantData {
    /// Supabase over a direct PostgreSQL connection when `SUPABASE_DB_URL` is set, else
    /// Supabase's PostgREST when `SUPABASE_URL` is, else the embedded store (tenants from
    /// configuration, sessions and knowledge in `<data dir>/tenant-data.db`).
    ///
    /// # Errors
    /// When the database cannot be reached or the HTTP client cannot be built.
    async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let supabase = settings.supabase.as_ref();
        if let Some((db_url, timeout)) = supabase.and_then(|s| s.db_url.as_ref().map(|url| (url, s.timeout)))
        {
            let sql = connect_sql(db_url, timeout).await.context("connecting to SUPABASE_DB_URL")?;
            return Ok(Self {
                check: sql.dependency_check(),
                directory: Arc::new(sql.tenant_directory()),
                sessions: Arc::new(sql.session_store()),
                knowledge: Arc::new(sql.knowledge_store()),
            });
        }
        if let Some((rest, timeout)) = supabase.and_then(|s| s.rest.as_ref().map(|rest| (rest, s.timeout))) {
            let client = PostgrestClient::new(PostgrestSettings {
                anon_key: rest.anon_key.clone(),
                timeout,
                ..PostgrestSettings::new(rest.url.clone(), rest.service_role_key.clone())
            })
            .context("building the PostgREST client")?;
            return Ok(Self {
                check: client.dependency_check(),
                directory: Arc::new(client.tenant_directory()),
                sessions: Arc::new(client.session_store()),
                knowledge: Arc::new(client.knowledge_store()),
            });
        }
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating {}", settings.data_dir.display()))?;
        let path = settings.data_dir.join("tenant-data.db");
        let embedded = EmbeddedStore::open(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .with_context(|| format!("opening the embedded store {}", path.display()))?;
        Ok(Self {
            check: embedded.dependency_check(),
            directory: Arc::new(StaticTenantDirectory::from_settings(&settings.cors, &settings.tenants)),
            sessions: Arc::new(embedded.session_store()),
            knowledge: Arc::new(embedded.knowledge_store()),
        })
    }
}

/// Tenant lookups through `directory`, cached.
fn tenant_cache(
    settings: &Settings,
    cache: &Arc<dyn Cache>,
    directory: Arc<dyn TenantDirectory>,
) -> TenantCache {
    TenantCache::with_policy(
        directory,
        Arc::clone(cache),
        Arc::new(SystemClock),
        namespace(settings, TENANT_NAMESPACE),
    )
}

/// CORS decisions: the global allow-list plus the tenants' own origins.
fn origin_policy(settings: &Settings, tenants: TenantCache, cache: &Arc<dyn Cache>) -> OriginPolicy {
    OriginPolicy::with_policy(
        settings.cors.allowed_origins.clone(),
        tenants,
        Arc::clone(cache),
        Arc::new(SystemClock),
        namespace(settings, REGISTERED_ORIGIN_NAMESPACE),
    )
}

/// Run visibility checks, cached.
fn run_access(settings: &Settings, store: &InternalStore, cache: &Arc<dyn Cache>) -> RunAccess {
    RunAccess::with_policy(
        store.run_repository(),
        Arc::clone(cache),
        Arc::new(SystemClock),
        namespace(settings, RUN_ACCESS_NAMESPACE),
    )
}

/// The token rules shared by verification and `sba dev-token`.
fn jwt_rules(settings: &Settings) -> JwtRules {
    JwtRules {
        issuer: settings.auth.issuer.clone(),
        audience: settings.auth.audience.clone(),
        leeway: settings.auth.leeway,
    }
}
