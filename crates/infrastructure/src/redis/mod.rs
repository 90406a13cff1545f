//! Redis adapters on fred: the distributed rate limiter (one Lua script per decision) and
//! the shared cache tier (L2) with cross-node invalidation.

mod cache;
mod limiter;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use cache::{BREAKER_OPEN, FredCache, INVALIDATION_CHANNEL, MAX_PENDING};
pub use limiter::{FredRateLimiter, FredRateLimiterSettings};
