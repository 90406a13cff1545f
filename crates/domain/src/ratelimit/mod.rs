//! Rate limiting as pure policy: the GCRA decision (ADR 0006), quotas and the typed key
//! bodies of docs/architecture.md, "Redis key schema" (ADR 0012). The adapters (Redis Lua
//! script, in-process map) only store a key's state; the arithmetic is here, in integer
//! microseconds, so both decide identically. The HTTP header values live with the HTTP
//! delivery.

mod gcra;
mod keys;

pub use gcra::{Decision, Gcra, Quota, QuotaError};
pub use keys::{HttpLimitKey, RateLimitKey, TenantAggregateKey, WsLimitKey};
