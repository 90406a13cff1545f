//! The wiring of adapters: connects what the settings name and builds the application
//! services on it, with one clock and one id generator for the whole process.

use std::sync::Arc;

use anyhow::Context as _;
use sba_application::admission::TenantAdmission;
use sba_application::audit::{AuditQueries, Auditor};
use sba_application::cache::NamespacePolicy;
use sba_application::cors::{OriginPolicy, REGISTERED_ORIGIN_NAMESPACE};
use sba_application::demo::EchoAgent;
use sba_application::events::{EventPipeline, IngestService};
use sba_application::health::{HealthMonitor, SystemHealthQueries};
use sba_application::idempotency::Idempotency;
use sba_application::knowledge::KnowledgeService;
use sba_application::ports::{
    Cache, Clock, DependencyCheck, EventBus, EventSequencer, IdGenerator, KnowledgeStore, RateLimiter,
    SessionStore, TenantDirectory, TokenVerifier,
};
use sba_application::ratelimit::{LimitPolicies, RateLimits};
use sba_application::ratelimit_ws::WsPolicies;
use sba_application::runs::{RUN_ACCESS_NAMESPACE, RunAccess, RunQueries, RunService};
use sba_application::sessions::{SESSION_NAMESPACE, SessionService};
use sba_application::stream::authorize::StreamAuthorizer;
use sba_application::stream::subscription::FeedLimits;
use sba_application::tenants::{TENANT_NAMESPACE, TenantCache};
use sba_application::usage::UsageQueries;
use sba_infrastructure::auth::{
    HsJwtSigner, HsJwtVerifier, JwksSettings, JwksVerifier, JwtRules, JwtVerifier,
};
use sba_infrastructure::cache::{FredCache, InMemoryCache};
use sba_infrastructure::config::Settings;
use sba_infrastructure::embedded::EmbeddedStore;
use sba_infrastructure::internal_store::{InternalStore, PoolOptions};
use sba_infrastructure::memory::{
    DEFAULT_SUBSCRIBER_BUFFER, InMemoryEventBus, InMemoryRateLimiter, StaticTenantDirectory,
};
use sba_infrastructure::redis::{FredEventBus, FredEventSequencer, FredRateLimiter, FredRateLimiterSettings};
use sba_infrastructure::supabase::{PostgrestClient, PostgrestSettings, connect_sql};
use sba_infrastructure::system::{SystemClock, UuidV7Generator};

use crate::http::AppState;
use crate::http::client_addr::TrustedProxies;
use crate::http::playground::dev_token::DevTokenIssuer;
use crate::http::stream::{StreamConfig, StreamGateway};

/// What every service of a process is built on: its settings, the migrated internal store,
/// one clock and one id generator (shared by every service, so a test double or a change of
/// source is made in one place).
pub(super) struct Wiring<'a> {
    settings: &'a Settings,
    store: InternalStore,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    /// The sequencer and bus of run events (Redis with `REDIS_URL`, else in process).
    pipeline: EventPipeline,
    /// Readiness of live delivery between nodes (`event_bus`); `None` with the in-process
    /// bus, which has no other node to hear.
    bus_check: Option<Arc<dyn DependencyCheck>>,
}

impl<'a> Wiring<'a> {
    /// Opens the internal store with a pool of `max_connections` and migrates it.
    ///
    /// # Errors
    /// When the store is unreachable or a migration fails.
    pub(super) async fn connect(settings: &'a Settings, max_connections: u32) -> anyhow::Result<Self> {
        let store = open_store(settings, max_connections).await?;
        store.migrate_up().await?;
        let (pipeline, bus_check) = event_pipeline(settings, &store).await?;
        Ok(Self {
            settings,
            store,
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7Generator),
            pipeline,
            bus_check,
        })
    }

    pub(super) fn store(&self) -> &InternalStore {
        &self.store
    }

    /// The store, for closing it when the process stops.
    pub(super) fn into_store(self) -> InternalStore {
        self.store
    }

    /// Everything the HTTP handlers share: connects the cache, the tenant data and the rate
    /// limiter the settings name (Redis, Supabase or their embedded stand-ins).
    ///
    /// # Errors
    /// When a dependency's URL is unusable or a store cannot be reached.
    pub(super) async fn app_state(&self) -> anyhow::Result<AppState> {
        let settings = self.settings;
        let (cache, redis_check) = cache(settings).await?;
        let data = TenantData::connect(settings).await?;
        let mut checks = vec![self.store.dependency_check(), Arc::clone(&data.check)];
        checks.extend(redis_check);
        checks.extend(self.bus_check.clone());
        let tenants = self.tenant_cache(&cache, Arc::clone(&data.directory));
        let auditor = self.auditor();
        let sessions = SessionService::new(
            data.sessions,
            auditor.clone(),
            Arc::clone(&cache),
            Arc::clone(&self.clock),
            Arc::clone(&self.ids),
            namespace(settings, SESSION_NAMESPACE),
        );
        let stream = StreamGateway::new(
            stream_config(settings),
            StreamAuthorizer::new(self.run_access(&cache), sessions.clone()),
            Arc::clone(&self.pipeline.bus),
            settings.stream.throttle.clone(),
        );
        let ingest = IngestService::new(
            self.pipeline.clone(),
            self.store.run_repository(),
            auditor.clone(),
            Arc::clone(&self.clock),
        );
        Ok(AppState {
            runs: self.run_service(),
            ingest: ingest.clone(),
            queries: RunQueries::new(
                self.store.run_repository(),
                self.store.step_repository(),
                self.store.tool_call_repository(),
                self.store.event_log(),
                Arc::clone(&self.pipeline.sequencer),
                self.run_access(&cache),
            ),
            audit: AuditQueries::new(self.store.audit_log()),
            idempotency: self.idempotency(),
            usage: UsageQueries::new(self.store.usage_ledger()),
            verifier: token_verifier(settings).await?,
            health: self.health_monitor(checks.clone()),
            system_health: SystemHealthQueries::new(
                self.health_monitor(checks),
                settings.auth.platform_tenant,
            ),
            origins: self.origin_policy(Arc::clone(&data.directory)),
            admission: TenantAdmission::new(tenants),
            sessions,
            knowledge: KnowledgeService::new(
                data.knowledge,
                auditor,
                Arc::clone(&self.clock),
                Arc::clone(&self.ids),
            ),
            uploads: Arc::new(tokio::sync::Semaphore::new(settings.knowledge.max_concurrent_uploads)),
            rate_policies: settings.rate_limit.enabled.then(|| Arc::new(limit_policies(settings))),
            rate_limits: rate_limits(settings).await?,
            ws_policies: Arc::new(WsPolicies {
                quotas: settings.rate_limit.ws_quotas.clone(),
                close_after_refusals: settings.rate_limit.ws_close_after,
            }),
            trusted_proxies: TrustedProxies::new(settings.server.trusted_proxies.clone()),
            stream,
            echo: settings
                .demo
                .echo_agent
                .then(|| EchoAgent::new(ingest, settings.demo.words_per_second, settings.demo.max_runs)),
            playground: settings.playground.enabled,
            dev_tokens: dev_token_issuer(settings),
        })
    }

    /// The run use cases on the internal store.
    pub(super) fn run_service(&self) -> RunService {
        RunService::new(
            self.store.run_repository(),
            self.store.run_ledger(),
            self.pipeline.clone(),
            self.store.audit_log(),
            Arc::clone(&self.clock),
            Arc::clone(&self.ids),
        )
    }

    pub(super) fn idempotency(&self) -> Idempotency {
        Idempotency::new(self.store.idempotency_store(), Arc::clone(&self.clock))
    }

    /// Health checks of the dependencies this process uses (`checks`), with history in the
    /// internal store.
    pub(super) fn health_monitor(&self, checks: Vec<Arc<dyn DependencyCheck>>) -> HealthMonitor {
        HealthMonitor::new(checks, self.store.health_log(), Arc::clone(&self.clock), Arc::clone(&self.ids))
    }

    fn auditor(&self) -> Auditor {
        Auditor::new(self.store.audit_log(), Arc::clone(&self.clock), Arc::clone(&self.ids))
    }

    /// Tenant lookups through `directory`, cached.
    fn tenant_cache(&self, cache: &Arc<dyn Cache>, directory: Arc<dyn TenantDirectory>) -> TenantCache {
        TenantCache::with_policy(
            directory,
            Arc::clone(cache),
            Arc::clone(&self.clock),
            namespace(self.settings, TENANT_NAMESPACE),
        )
    }

    /// CORS decisions: the global allow-list plus the tenants' own origins, re-read from
    /// `directory` at the `cors_origin` interval.
    fn origin_policy(&self, directory: Arc<dyn TenantDirectory>) -> OriginPolicy {
        OriginPolicy::new(
            self.settings.cors.allowed_origins.clone(),
            directory,
            Arc::clone(&self.clock),
            namespace(self.settings, REGISTERED_ORIGIN_NAMESPACE).ttl,
        )
    }

    /// Run visibility checks, cached.
    fn run_access(&self, cache: &Arc<dyn Cache>) -> RunAccess {
        RunAccess::with_policy(
            self.store.run_repository(),
            Arc::clone(cache),
            Arc::clone(&self.clock),
            namespace(self.settings, RUN_ACCESS_NAMESPACE),
        )
    }
}

/// The event pipeline (ADR 0017): with `REDIS_URL` the Redis sequencer (shared by every
/// node, the worker persists) and Redis pub/sub, with the bus's readiness check (its
/// canary); without it the internal store's own sequencer (persisting synchronously, one
/// node) and an in-process bus, with no check.
///
/// # Errors
/// When the Redis URL is not usable (an unreachable Redis is not an error: calls answer
/// `event_store_unavailable` until it is back).
async fn event_pipeline(
    settings: &Settings,
    store: &InternalStore,
) -> anyhow::Result<(EventPipeline, Option<Arc<dyn DependencyCheck>>)> {
    let (sequencer, bus, check): (Arc<dyn EventSequencer>, Arc<dyn EventBus>, _) = match &settings.redis {
        None => (store.event_sequencer(), Arc::new(InMemoryEventBus::new(DEFAULT_SUBSCRIBER_BUFFER)), None),
        Some(redis) => {
            // Behind an `Arc` at once: held across the bus's connection, the future keeps a
            // pointer rather than the adapter (clippy's `large_futures` watches startup).
            let sequencer = Arc::new(
                FredEventSequencer::connect(&redis.url, super::pipeline::sequencer_settings(settings))
                    .await?,
            );
            let bus = FredEventBus::connect(&redis.url, super::pipeline::bus_settings(settings)).await?;
            let check = bus.dependency_check();
            (sequencer, Arc::new(bus), Some(check))
        }
    };
    Ok((EventPipeline::new(sequencer, bus, store.event_log()), check))
}

/// The gateway's settings (`SBA_STREAM__*`); a closing connection flushes for at most the
/// server's shutdown timeout.
fn stream_config(settings: &Settings) -> StreamConfig {
    let stream = &settings.stream;
    StreamConfig {
        max_frame_bytes: stream.max_frame_bytes,
        heartbeat_interval: stream.heartbeat_interval,
        heartbeat_timeout: stream.heartbeat_timeout,
        max_subscriptions: stream.max_subscriptions,
        outbound: stream.outbound,
        feed: FeedLimits::default(),
        flush_timeout: settings.server.shutdown_timeout,
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

/// The playground's token signer when the settings serve `POST /dev/token`: the first HS256
/// secret signs, as for `sba dev-token`. Without one (a JWKS-only development setup) the
/// route stays off, and the page says so.
fn dev_token_issuer(settings: &Settings) -> Option<DevTokenIssuer> {
    if !settings.playground.dev_tokens {
        return None;
    }
    match token_signer(settings) {
        Ok(signer) => Some(DevTokenIssuer::new(signer)),
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "POST /dev/token is off: no token can be signed");
            None
        }
    }
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
        tenant_aggregate_factor: settings.rate_limit.tenant_aggregate_factor,
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
    let cache_settings = settings.cache.adapter;
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

/// The token rules shared by verification and `sba dev-token`.
fn jwt_rules(settings: &Settings) -> JwtRules {
    JwtRules {
        issuer: settings.auth.issuer.clone(),
        audience: settings.auth.audience.clone(),
        leeway: settings.auth.leeway,
    }
}
