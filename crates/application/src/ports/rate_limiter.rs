//! Distributed rate limiting: one atomic decision per request or WebSocket operation.

use async_trait::async_trait;
use sba_domain::ratelimit::{Decision, Quota};

/// Why no decision could be made. The caller applies its fail mode (or a fallback limiter).
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The backend (Redis) did not answer in time or failed.
    #[error("the rate-limit store is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

/// Decides requests against quotas, sharing state between every node that uses the same
/// backend. Implementations follow `sba_domain::ratelimit::Gcra` exactly.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RateLimiter: std::fmt::Debug + Send + Sync + 'static {
    /// Decides one request of `cost` units for `key` (a rendered key body of
    /// `sba_domain::ratelimit`; an adapter on a shared store adds its own prefix) under
    /// `quota`. A denied request consumes nothing.
    ///
    /// # Errors
    /// [`RateLimitError::Unavailable`] when the backend cannot decide.
    async fn check(&self, key: &str, quota: Quota, cost: u32) -> Result<Decision, RateLimitError>;
}
