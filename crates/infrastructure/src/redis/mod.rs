//! Redis adapters on fred: the distributed rate limiter (one Lua script per decision), the
//! shared cache tier (L2) with cross-node invalidation, and the one way every Redis adapter
//! makes its connections ([`connection`]).

mod cache;
pub mod connection;
mod limiter;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use cache::{BREAKER_OPEN, FredCache, INVALIDATION_CHANNEL, MAX_PENDING};
pub use connection::ConnectionOptions;
pub use limiter::{FredRateLimiter, FredRateLimiterSettings};
