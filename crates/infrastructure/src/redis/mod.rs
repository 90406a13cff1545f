//! Redis adapters on fred: the distributed rate limiter (one Lua script per decision), the
//! event bus between nodes (sharded pub/sub), the event sequencer (one Lua script per batch,
//! [`events`]), and
//! the one way every Redis adapter makes its connections ([`connection`]). The cache's
//! Redis tier lives with the rest of the cache, in [`crate::cache`].

pub mod connection;
mod event_bus;
pub mod events;
mod limiter;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use connection::ConnectionOptions;
pub use event_bus::{FredEventBus, FredEventBusSettings};
pub use events::{FredEventQueue, FredEventQueueSettings, FredEventSequencer, FredEventSequencerSettings};
pub use limiter::{FredRateLimiter, FredRateLimiterSettings};
