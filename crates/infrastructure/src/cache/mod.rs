//! The cache of ADR 0007 behind the application's [`Cache`](sba_application::ports::Cache)
//! port, in two adapters that share their parts:
//!
//! - [`InMemoryCache`] (`memory.rs`): development mode and single-node deployments, an L1
//!   only;
//! - [`FredCache`] (`redis/`): an L1 in front of Redis (L2), with the namespace version
//!   table (`redis/versions.rs`), cross-node invalidation over pub/sub
//!   (`redis/invalidation.rs`), and the fallback to L1 while Redis fails, with replay of
//!   the invalidations it missed (`redis/fallback.rs`).
//!
//! Shared: the key layout ([`keys`]), the in-process tier and its doorkeeper (`l1.rs`), the
//! stored form of an entry in Redis ([`envelope`]), the metrics (`metrics.rs`) and the
//! settings ([`CacheSettings`]). Redis connections come from [`crate::redis::connection`].

pub mod envelope;
pub mod keys;
mod l1;
mod memory;
mod metrics;
mod redis;
mod settings;

use std::time::{SystemTime, UNIX_EPOCH};

pub use keys::{entry_key, version_key};
pub use memory::InMemoryCache;
pub use redis::{BREAKER_OPEN, FredCache, INVALIDATION_CHANNEL, MAX_PENDING};
pub use settings::CacheSettings;

/// Unix milliseconds now, the clock of `EntryMeta`'s times.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}
