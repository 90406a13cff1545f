//! Rate limiting as pure policy: the GCRA decision (ADR 0006), quotas, the Redis key schema
//! of ARCHITECTURE §6 and the IETF `RateLimit`/`RateLimit-Policy` header values. The
//! adapters (Redis Lua script, in-process map) only store a key's state; the arithmetic is
//! here, in integer microseconds, so both decide identically.

mod gcra;
mod headers;
mod keys;

pub use gcra::{Decision, Gcra, Quota, QuotaError};
pub use headers::{policy_header, ratelimit_header, retry_after_secs};
pub use keys::{http_key, ws_key};
