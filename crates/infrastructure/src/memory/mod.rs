//! In-process adapters for development mode and single-node deployments (the in-process
//! cache is with the rest of the cache, in [`crate::cache`]).

pub(crate) mod event_bus;
mod rate_limiter;
mod tenant_directory;

pub use event_bus::{DEFAULT_SUBSCRIBER_BUFFER, InMemoryEventBus};
pub use rate_limiter::InMemoryRateLimiter;
pub use tenant_directory::StaticTenantDirectory;
