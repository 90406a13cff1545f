//! In-process adapters for development mode and single-node deployments (the in-process
//! cache is with the rest of the cache, in [`crate::cache`]).

mod rate_limiter;
mod tenant_directory;

pub use rate_limiter::InMemoryRateLimiter;
pub use tenant_directory::StaticTenantDirectory;
