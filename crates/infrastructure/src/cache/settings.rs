//! [`CacheSettings`]: how the tiers of both adapters are sized and bounded.

use std::time::Duration;

/// How the cache tiers are sized and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// The memory bound of L1 (keys, payloads and a fixed overhead per entry). Default: 64 MiB.
    pub l1_max_bytes: u64,
    /// The longest an entry stays in L1, whatever its own TTL: it bounds how long a node
    /// serves an entry whose invalidation it missed. Default: 60 s.
    pub l1_max_ttl: Duration,
    /// The bound on one Redis call; past it the call counts as a failure. Default: 50 ms.
    pub redis_timeout: Duration,
    /// How long a node trusts its copy of a namespace's version before reading it again: it
    /// bounds staleness when an invalidation message is lost. Default: 10 s.
    pub version_ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            l1_max_bytes: 64 * 1024 * 1024,
            l1_max_ttl: Duration::from_mins(1),
            redis_timeout: Duration::from_millis(50),
            version_ttl: Duration::from_secs(10),
        }
    }
}
