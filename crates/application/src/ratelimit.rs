//! [`RateLimits`]: which quota a request falls under, and the decision, with the fault
//! handling ADR 0006 describes: a circuit breaker around the distributed limiter, an
//! in-process fallback with the same policies (`fail_mode = open`) or refusal
//! (`fail_mode = closed`), and a local memory of keys known to be over their limit, bounded
//! by size and by each denial's end.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use sba_domain::Tenant;
use sba_domain::ratelimit::{Decision, Quota, RateLimitKey};

use crate::breaker::Breaker;
use crate::ports::RateLimiter;

/// What to do while the distributed limiter is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Decide with the in-process limiter (per node) until Redis is back.
    Open,
    /// Refuse limited requests until Redis is back.
    Closed,
}

/// One rule: requests with `method` (or any, when `None`) on `route` (a route template)
/// get `quota` under the policy `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub method: Option<String>,
    pub route: String,
    pub quota: Quota,
}

/// The configured policies.
#[derive(Debug, Clone)]
pub struct LimitPolicies {
    /// The quota of a route without a rule, for callers without a plan or override.
    pub default: Quota,
    /// Route rules: they apply to every caller.
    pub rules: Vec<Rule>,
    /// The default quota per tenant plan (`Tenant::plan`).
    pub plans: HashMap<String, Quota>,
    /// Route templates never limited.
    pub exempt: Vec<String>,
    /// When set, each request of a known tenant is also charged to the tenant's aggregate
    /// bucket (all its addresses, per method and route) whose quota is the request's quota
    /// times this factor, so using many addresses cannot multiply a tenant's quota. `None`:
    /// off (`SBA_RATE_LIMIT__TENANT_AGGREGATE_FACTOR` unset).
    pub tenant_aggregate_factor: Option<NonZeroU32>,
}

/// The policy name of a tenant's aggregate bucket, in `RateLimit-Policy` and metrics.
pub const TENANT_AGGREGATE_POLICY: &str = "tenant_aggregate";

impl LimitPolicies {
    /// The policy name and quota for `method route` of a caller of `tenant`, or `None` when
    /// the route is exempt. A route rule wins; otherwise the tenant's own quota (policy
    /// `tenant`), then its plan's (policy = the plan's name), then `default`.
    pub fn quota_for<'a>(
        &'a self,
        method: &str,
        route: &str,
        tenant: Option<&'a Tenant>,
    ) -> Option<(&'a str, Quota)> {
        if self.exempt.iter().any(|r| r == route) {
            return None;
        }
        let rule = self.rules.iter().find(|rule| {
            rule.route == route && rule.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
        });
        if let Some(rule) = rule {
            return Some((rule.name.as_str(), rule.quota));
        }
        if let Some(quota) = tenant.and_then(|t| t.rate_limit) {
            return Some(("tenant", quota));
        }
        let plan = tenant
            .and_then(|t| t.plan.as_deref())
            .and_then(|plan| self.plans.get_key_value(plan))
            .map(|(name, quota)| (name.as_str(), *quota));
        Some(plan.unwrap_or(("default", self.default)))
    }

    /// The quota of the tenant's aggregate bucket for a request under `quota`: the same
    /// window, `factor` times the limit; `None` when the aggregate is off.
    pub fn aggregate_quota(&self, quota: Quota) -> Option<Quota> {
        let factor = self.tenant_aggregate_factor?;
        Quota::new(quota.limit().saturating_mul(factor.get()), quota.window_secs()).ok()
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Decided (allowed or denied) by a limiter.
    Decided(Decision),
    /// No limiter could decide and `fail_mode = closed`.
    Unavailable,
}

/// A key over its limit: until when, and when its quota is whole again.
#[derive(Debug, Clone, Copy)]
struct Denial {
    until: Instant,
    reset_at: Instant,
}

/// Each remembered denial lives until the key may pass again.
struct UntilAllowed;

impl moka::Expiry<String, Denial> for UntilAllowed {
    fn expire_after_create(&self, _: &String, denial: &Denial, created_at: Instant) -> Option<Duration> {
        Some(denial.until.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _: &String,
        denial: &Denial,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(denial.until.saturating_duration_since(updated_at))
    }
}

/// Keys known to be over their limit, bounded by [`MAX_DENIED`] entries and by each
/// denial's own end.
type DeniedKeys = moka::sync::Cache<String, Denial, ahash::RandomState>;

fn denied_keys(capacity: u64) -> DeniedKeys {
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .expire_after(UntilAllowed)
        .build_with_hasher(ahash::RandomState::new())
}

/// How long the breaker keeps Redis out of the path after a failure before probing again.
const BREAKER_OPEN: Duration = Duration::from_secs(1);
/// Keys remembered as over their limit, at most.
const MAX_DENIED: u64 = 10_000;

/// The metric handles of one policy, registered once (a registry lookup per decision, with
/// its label allocations, costs more than the decision's own bookkeeping).
struct PolicyMetrics {
    allowed: metrics::Counter,
    denied: metrics::Counter,
    unavailable: metrics::Counter,
    near_limit: metrics::Counter,
}

impl PolicyMetrics {
    fn new(policy: &str) -> Self {
        let decisions = |outcome: &'static str| metrics::counter!("sba_ratelimit_decisions_total", "policy" => policy.to_owned(), "outcome" => outcome);
        Self {
            allowed: decisions("allowed"),
            denied: decisions("denied"),
            unavailable: decisions("unavailable"),
            near_limit: metrics::counter!("sba_ratelimit_near_limit_total", "policy" => policy.to_owned()),
        }
    }
}

/// Policy names come from configuration (rules, plans, `tenant`, `default`), so this map
/// stays small.
#[derive(Default)]
struct Metrics {
    policies: RwLock<HashMap<String, Arc<PolicyMetrics>>>,
    decision_seconds: OnceLock<metrics::Histogram>,
}

impl Metrics {
    fn policy(&self, policy: &str) -> Arc<PolicyMetrics> {
        if let Some(known) = self.policies.read().unwrap_or_else(PoisonError::into_inner).get(policy) {
            return Arc::clone(known);
        }
        let mut policies = self.policies.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(policies.entry(policy.to_owned()).or_insert_with(|| Arc::new(PolicyMetrics::new(policy))))
    }

    fn decision_seconds(&self) -> &metrics::Histogram {
        self.decision_seconds.get_or_init(|| metrics::histogram!("sba_ratelimit_decision_seconds"))
    }
}

/// Decisions for HTTP requests and WebSocket operations.
#[derive(Clone)]
pub struct RateLimits {
    distributed: Arc<dyn RateLimiter>,
    fallback: Arc<dyn RateLimiter>,
    fail_mode: FailMode,
    started: Instant,
    /// Keeps Redis out of the path after a failure; open while the fallback is active.
    breaker: Arc<Breaker>,
    /// When the last denial was logged (microseconds since `started`), and how many since.
    last_denial_log_us: Arc<AtomicU64>,
    suppressed_denials: Arc<AtomicU64>,
    /// Keys known to be over their limit until an instant: refused without a round trip.
    denied: DeniedKeys,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("fail_mode", &self.fail_mode)
            .field("fallback_active", &self.fallback_active())
            .finish_non_exhaustive()
    }
}

impl RateLimits {
    pub fn new(
        distributed: Arc<dyn RateLimiter>,
        fallback: Arc<dyn RateLimiter>,
        fail_mode: FailMode,
    ) -> Self {
        Self {
            distributed,
            fallback,
            fail_mode,
            started: Instant::now(),
            breaker: Arc::new(Breaker::new(BREAKER_OPEN)),
            last_denial_log_us: Arc::default(),
            suppressed_denials: Arc::default(),
            denied: denied_keys(MAX_DENIED),
            metrics: Arc::default(),
        }
    }

    /// Whether decisions currently come from the in-process fallback.
    pub fn fallback_active(&self) -> bool {
        self.breaker.is_open()
    }

    /// Decides `cost` units for `key` under `quota` (named `policy` in metrics and logs).
    /// The limiters see the key's rendered body (ADR 0012).
    ///
    /// Metrics: `sba_ratelimit_decisions_total{policy,outcome}` (allowed, denied,
    /// unavailable), `sba_ratelimit_near_limit_total{policy}` (allowed with at most 20 %
    /// left), `sba_ratelimit_decision_seconds`, `sba_ratelimit_redis_errors_total`,
    /// `sba_ratelimit_fallback_active` (0 or 1). Denials are logged, at most one line a
    /// second with the number left out.
    pub async fn check(&self, key: RateLimitKey<'_>, policy: &str, quota: Quota, cost: u32) -> Verdict {
        let started = Instant::now();
        let key = key.to_string();
        let verdict = self.decide(&key, quota, cost).await;
        self.metrics.decision_seconds().record(started.elapsed().as_secs_f64());
        let counters = self.metrics.policy(policy);
        match verdict {
            Verdict::Decided(Decision::Allowed { remaining, .. }) => {
                if u64::from(remaining) * 5 <= u64::from(quota.limit()) {
                    counters.near_limit.increment(1);
                }
                counters.allowed.increment(1);
            }
            Verdict::Decided(Decision::Denied { retry_after_us, .. }) => {
                self.log_denial(&key, policy, retry_after_us);
                counters.denied.increment(1);
            }
            Verdict::Unavailable => counters.unavailable.increment(1),
        }
        verdict
    }

    /// Decides one request under its own key and, when `aggregate` is given, under its
    /// tenant's aggregate key too ([`TENANT_AGGREGATE_POLICY`]): it passes only if both pass.
    /// Returns the verdict and, when the aggregate is what the caller should report (it
    /// refused, or it has fewer requests left), its quota.
    ///
    /// The own key is decided first, so a client refused under its own quota never uses up
    /// its tenant's aggregate; an aggregate known to be exhausted refuses at once, without
    /// charging the own key. When the own key passes and the aggregate refuses, the own
    /// key's unit stays spent (the limiter port has no refund): the client pays for a
    /// refused request, never the other tenants' clients. Costs a second decision (a second
    /// Redis call, coalesced with others under load) per request while the aggregate is on.
    pub async fn check_with_aggregate(
        &self,
        key: RateLimitKey<'_>,
        policy: &str,
        quota: Quota,
        aggregate: Option<(RateLimitKey<'_>, Quota)>,
    ) -> (Verdict, Option<Quota>) {
        let Some((aggregate_key, aggregate_quota)) = aggregate else {
            return (self.check(key, policy, quota, 1).await, None);
        };
        if let Some(denied) = self.known_denied(&aggregate_key.to_string()) {
            self.metrics.policy(TENANT_AGGREGATE_POLICY).denied.increment(1);
            return (Verdict::Decided(denied), Some(aggregate_quota));
        }
        let own = self.check(key, policy, quota, 1).await;
        let Verdict::Decided(Decision::Allowed { remaining, .. }) = own else {
            return (own, None);
        };
        match self.check(aggregate_key, TENANT_AGGREGATE_POLICY, aggregate_quota, 1).await {
            Verdict::Decided(Decision::Allowed { remaining: left, .. }) if left >= remaining => (own, None),
            all => (all, Some(aggregate_quota)),
        }
    }

    /// Logs a denial unless one was logged within the last second (floods stay readable).
    fn log_denial(&self, key: &str, policy: &str, retry_after_us: u64) {
        let now = self.elapsed_us();
        let last = self.last_denial_log_us.load(Ordering::Relaxed);
        if (last != 0 && now.saturating_sub(last) < 1_000_000)
            || self
                .last_denial_log_us
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed_denials.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed_denials.swap(0, Ordering::Relaxed);
        tracing::info!(key, policy, retry_after_us, suppressed, "rate limited");
    }

    async fn decide(&self, key: &str, quota: Quota, cost: u32) -> Verdict {
        if let Some(decision) = self.known_denied(key) {
            return Verdict::Decided(decision);
        }
        if self.breaker.allows() {
            match self.distributed.check(key, quota, cost).await {
                Ok(decision) => {
                    if self.breaker.record_success() {
                        metrics::gauge!("sba_ratelimit_fallback_active").set(0.0);
                        tracing::info!("rate limiter: Redis is back; distributed limits apply again");
                    }
                    self.remember(key, decision);
                    return Verdict::Decided(decision);
                }
                Err(error) => {
                    metrics::counter!("sba_ratelimit_redis_errors_total").increment(1);
                    if self.breaker.record_failure() {
                        metrics::gauge!("sba_ratelimit_fallback_active").set(1.0);
                        tracing::warn!(
                            error = format!("{error:#}"),
                            fail_mode = ?self.fail_mode,
                            "rate limiter: Redis is unreachable; falling back until it returns"
                        );
                    }
                }
            }
        }
        match self.fail_mode {
            FailMode::Closed => Verdict::Unavailable,
            FailMode::Open => match self.fallback.check(key, quota, cost).await {
                Ok(decision) => Verdict::Decided(decision),
                Err(_) => Verdict::Unavailable,
            },
        }
    }

    fn elapsed_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn known_denied(&self, key: &str) -> Option<Decision> {
        let Denial { until, reset_at } = self.denied.get(key)?;
        let now = Instant::now();
        if now >= until {
            return None;
        }
        let micros = |later: Instant| u64::try_from((later - now).as_micros()).unwrap_or(u64::MAX).max(1);
        let left = micros(until);
        Some(Decision::Denied { retry_after_us: left, reset_us: micros(reset_at.max(until)) })
    }

    fn remember(&self, key: &str, decision: Decision) {
        let Decision::Denied { retry_after_us, reset_us } = decision else { return };
        let now = Instant::now();
        let until = now + Duration::from_micros(retry_after_us);
        let reset_at = now + Duration::from_micros(reset_us);
        self.denied.insert(key.to_owned(), Denial { until, reset_at });
    }
}

#[cfg(test)]
mod tests;
