//! Use cases of SBA and the ports (traits) they need from the outside world.
//!
//! Services here only see ports; adapters live in `sba-infrastructure` and are chosen in
//! `sba-delivery`'s `startup` module.

pub mod admission;
pub mod audit;
pub mod authorization;
pub mod breaker;
pub mod cache;
pub mod context;
pub mod cors;
pub mod demo;
pub mod error;
pub mod events;
pub mod health;
pub mod idempotency;
pub mod knowledge;
pub mod pagination;
pub mod ports;
pub mod ratelimit;
pub mod ratelimit_ws;
pub mod runs;
pub mod sessions;
pub mod stream;
pub mod tenants;
#[cfg(test)]
pub(crate) mod testing;
pub mod usage;

pub use context::RequestContext;
