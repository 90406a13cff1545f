//! In-process adapters for development mode and single-node deployments, and the cache's
//! in-process tier (L1) that the Redis cache builds on.

mod cache;
pub(crate) mod l1;
mod rate_limiter;
mod tenant_directory;

pub use cache::{CacheSettings, InMemoryCache};
pub use l1::{entry_key, version_key};
pub use rate_limiter::InMemoryRateLimiter;
pub use tenant_directory::StaticTenantDirectory;
