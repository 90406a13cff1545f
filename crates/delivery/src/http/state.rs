//! What request handlers share: the application services, built once by `startup`.

use std::sync::Arc;

use sba_application::admission::TenantAdmission;
use sba_application::audit::AuditQueries;
use sba_application::cors::OriginPolicy;
use sba_application::demo::EchoAgent;
use sba_application::events::IngestService;
use sba_application::health::{HealthMonitor, SystemHealthQueries};
use sba_application::idempotency::Idempotency;
use sba_application::knowledge::KnowledgeService;
use sba_application::ports::TokenVerifier;
use sba_application::ratelimit::{LimitPolicies, RateLimits};
use sba_application::ratelimit_ws::WsPolicies;
use sba_application::runs::{RunQueries, RunService};
use sba_application::sessions::SessionService;
use sba_application::usage::UsageQueries;

use super::client_addr::TrustedProxies;
use super::playground::dev_token::DevTokenIssuer;
use super::stream::StreamGateway;

/// Everything request handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub runs: RunService,
    /// Agents' event batches (ADR 0017).
    pub ingest: IngestService,
    pub queries: RunQueries,
    pub audit: AuditQueries,
    pub idempotency: Idempotency,
    pub usage: UsageQueries,
    pub verifier: Arc<dyn TokenVerifier>,
    pub health: HealthMonitor,
    pub system_health: SystemHealthQueries,
    pub origins: OriginPolicy,
    /// Whether a caller's tenant may use the service (its settings come with the answer).
    pub admission: TenantAdmission,
    pub sessions: SessionService,
    pub knowledge: KnowledgeService,
    /// One permit per document upload being read (`SBA_KNOWLEDGE__MAX_CONCURRENT_UPLOADS`).
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// `None` when rate limiting is turned off.
    pub rate_policies: Option<Arc<LimitPolicies>>,
    pub rate_limits: RateLimits,
    /// WebSocket operation quotas, for the gateway's per-connection limiters.
    pub ws_policies: Arc<WsPolicies>,
    /// Whose `X-Forwarded-For` names the client ([`super::client_addr`]).
    pub trusted_proxies: TrustedProxies,
    /// The WebSocket gateway's shared parts (`GET /v1/stream`).
    pub stream: StreamGateway,
    /// The demo agent answering runs of agent `echo` (`SBA_DEMO__ECHO_AGENT`); `None` when off.
    pub echo: Option<EchoAgent>,
    /// Whether `GET /playground` serves the browser playground (`SBA_PLAYGROUND__ENABLED`).
    pub playground: bool,
    /// The signer of `POST /dev/token`; `None` (and the route absent) outside development or
    /// with the playground off.
    pub dev_tokens: Option<DevTokenIssuer>,
}
