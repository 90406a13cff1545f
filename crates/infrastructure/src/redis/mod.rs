//! Redis adapters on fred: the distributed rate limiter (one Lua script per decision).

mod limiter;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use limiter::{FredRateLimiter, FredRateLimiterSettings};
