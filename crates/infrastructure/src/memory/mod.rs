//! In-process adapters for development mode and single-node deployments.

mod rate_limiter;
mod tenant_directory;

pub use rate_limiter::InMemoryRateLimiter;
pub use tenant_directory::StaticTenantDirectory;
