//! [`RateLimits`]: which quota a request falls under, and the decision, with the fault
//! handling ADR 0006 describes: a circuit breaker around the distributed limiter, an
//! in-process fallback with the same policies (`fail_mode = open`) or refusal
//! (`fail_mode = closed`), and a local memory of keys known to be over their limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sba_domain::ratelimit::{Decision, Quota};

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
    pub default: Quota,
    pub rules: Vec<Rule>,
    /// Route templates never limited (`/healthz`, `/readyz`, `/metrics`, docs).
    pub exempt: Vec<String>,
}

impl LimitPolicies {
    /// The policy name and quota for `method route`, or `None` when the route is exempt.
    pub fn quota_for(&self, method: &str, route: &str) -> Option<(&str, Quota)> {
        if self.exempt.iter().any(|r| r == route) {
            return None;
        }
        let rule = self.rules.iter().find(|rule| {
            rule.route == route && rule.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
        });
        Some(rule.map_or(("default", self.default), |rule| (rule.name.as_str(), rule.quota)))
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

/// Each key over its limit: until when, and when its quota is whole again.
type DeniedKeys = HashMap<String, (Instant, Instant)>;

/// How long the breaker keeps Redis out of the path after a failure before probing again.
const BREAKER_OPEN: Duration = Duration::from_secs(1);
/// Keys remembered as over their limit, at most.
const MAX_DENIED: usize = 10_000;

/// Decisions for HTTP requests and WebSocket operations.
#[derive(Clone)]
pub struct RateLimits {
    distributed: Arc<dyn RateLimiter>,
    fallback: Arc<dyn RateLimiter>,
    fail_mode: FailMode,
    started: Instant,
    /// Microseconds since `started` until which Redis is skipped (breaker open).
    breaker_until_us: Arc<AtomicU64>,
    fallback_active: Arc<AtomicBool>,
    /// Keys known to be over their limit until an instant: refused without a round trip.
    denied: Arc<Mutex<DeniedKeys>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("fail_mode", &self.fail_mode)
            .field("fallback_active", &self.fallback_active.load(Ordering::Relaxed))
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
            breaker_until_us: Arc::default(),
            fallback_active: Arc::default(),
            denied: Arc::default(),
        }
    }

    /// Whether decisions currently come from the in-process fallback.
    pub fn fallback_active(&self) -> bool {
        self.fallback_active.load(Ordering::Relaxed)
    }

    /// Decides `cost` units for `key` under `quota`.
    pub async fn check(&self, key: &str, quota: Quota, cost: u32) -> Verdict {
        if let Some(decision) = self.known_denied(key) {
            return Verdict::Decided(decision);
        }
        let now_us = self.elapsed_us();
        if now_us >= self.breaker_until_us.load(Ordering::Relaxed) {
            match self.distributed.check(key, quota, cost).await {
                Ok(decision) => {
                    if self.fallback_active.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limiter: Redis is back; distributed limits apply again");
                    }
                    self.remember(key, decision);
                    return Verdict::Decided(decision);
                }
                Err(error) => {
                    let until =
                        self.elapsed_us() + u64::try_from(BREAKER_OPEN.as_micros()).unwrap_or(u64::MAX);
                    self.breaker_until_us.store(until, Ordering::Relaxed);
                    if !self.fallback_active.swap(true, Ordering::Relaxed) {
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
        let mut denied = self.denied.lock().unwrap_or_else(PoisonError::into_inner);
        let (until, reset_at) = *denied.get(key)?;
        let now = Instant::now();
        if now >= until {
            denied.remove(key);
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
        let mut denied = self.denied.lock().unwrap_or_else(PoisonError::into_inner);
        if denied.len() >= MAX_DENIED {
            denied.retain(|_, (until, _)| *until > now);
            if denied.len() >= MAX_DENIED {
                return;
            }
        }
        denied.insert(key.to_owned(), (until, reset_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{MockRateLimiter, RateLimitError};

    fn quota() -> Quota {
        Quota::new(10, 60).unwrap()
    }

    fn allowed() -> Decision {
        Decision::Allowed { remaining: 9, reset_us: 6_000_000 }
    }

    fn unavailable() -> Result<Decision, RateLimitError> {
        Err(RateLimitError::Unavailable(anyhow::anyhow!("connection refused")))
    }

    #[test]
    fn rules_match_by_method_and_route_template_and_exempt_routes_are_not_limited() {
        let policies = LimitPolicies {
            default: quota(),
            rules: vec![Rule {
                name: "create-run".into(),
                method: Some("POST".into()),
                route: "/v1/runs".into(),
                quota: Quota::new(5, 60).unwrap(),
            }],
            exempt: vec!["/healthz".into()],
        };
        assert_eq!(policies.quota_for("post", "/v1/runs"), Some(("create-run", Quota::new(5, 60).unwrap())));
        assert_eq!(policies.quota_for("GET", "/v1/runs"), Some(("default", quota())));
        assert_eq!(policies.quota_for("GET", "/healthz"), None);
    }

    #[tokio::test]
    async fn redis_failures_fall_back_in_open_mode_and_skip_redis_while_the_breaker_is_open() {
        let mut distributed = MockRateLimiter::new();
        distributed.expect_check().times(1).returning(|_, _, _| unavailable());
        let mut fallback = MockRateLimiter::new();
        fallback.expect_check().times(3).returning(|_, _, _| Ok(allowed()));
        let limits = RateLimits::new(Arc::new(distributed), Arc::new(fallback), FailMode::Open);
        for _ in 0..3 {
            assert_eq!(limits.check("k", quota(), 1).await, Verdict::Decided(allowed()));
        }
        assert!(limits.fallback_active());
    }

    #[tokio::test]
    async fn closed_mode_refuses_while_redis_is_unreachable() {
        let mut distributed = MockRateLimiter::new();
        distributed.expect_check().returning(|_, _, _| unavailable());
        let limits =
            RateLimits::new(Arc::new(distributed), Arc::new(MockRateLimiter::new()), FailMode::Closed);
        assert_eq!(limits.check("k", quota(), 1).await, Verdict::Unavailable);
    }

    #[tokio::test]
    async fn a_key_known_to_be_over_its_limit_is_refused_without_asking_redis() {
        let mut distributed = MockRateLimiter::new();
        distributed
            .expect_check()
            .times(1)
            .returning(|_, _, _| Ok(Decision::Denied { retry_after_us: 30_000_000, reset_us: 60_000_000 }));
        let limits = RateLimits::new(Arc::new(distributed), Arc::new(MockRateLimiter::new()), FailMode::Open);
        for _ in 0..5 {
            let Verdict::Decided(Decision::Denied { retry_after_us, .. }) =
                limits.check("k", quota(), 1).await
            else {
                panic!("expected a denial");
            };
            assert!(retry_after_us > 29_000_000 && retry_after_us <= 30_000_000, "{retry_after_us}");
        }
    }

    #[tokio::test]
    async fn recovery_is_automatic_once_the_breaker_closes() {
        let mut distributed = MockRateLimiter::new();
        let mut calls = 0;
        distributed.expect_check().times(2).returning(move |_, _, _| {
            calls += 1;
            if calls == 1 { unavailable() } else { Ok(allowed()) }
        });
        let mut fallback = MockRateLimiter::new();
        fallback.expect_check().times(1).returning(|_, _, _| Ok(allowed()));
        let limits = RateLimits::new(Arc::new(distributed), Arc::new(fallback), FailMode::Open);
        limits.check("k", quota(), 1).await;
        assert!(limits.fallback_active());
        limits.breaker_until_us.store(0, Ordering::Relaxed); // the breaker's second has passed
        limits.check("k", quota(), 1).await;
        assert!(!limits.fallback_active());
    }
}
