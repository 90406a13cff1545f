//! Redis adapters on fred: the distributed rate limiter (one Lua script per decision), the
//! event bus between nodes (pub/sub), and
//! the one way every Redis adapter makes its connections ([`connection`]). The cache's
//! Redis tier lives with the rest of the cache, in [`crate::cache`].

pub mod connection;
mod event_bus;
mod limiter;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use connection::ConnectionOptions;
pub use event_bus::{FredEventBus, FredEventBusSettings};
pub use limiter::{FredRateLimiter, FredRateLimiterSettings};
