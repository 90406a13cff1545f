//! [`InMemoryRateLimiter`]: the GCRA of `sba_domain::ratelimit` over a sharded in-process
//! map. It is the limiter of development mode and the fallback while Redis is unreachable;
//! it limits per node only.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use sba_application::ports::{RateLimitError, RateLimiter};
use sba_domain::ratelimit::{Decision, Gcra, Quota};

const SHARDS: usize = 32;
/// A shard sweeps out expired keys after this many inserts.
const SWEEP_EVERY: u32 = 1024;

/// Per-node GCRA state: each key's theoretical arrival time in microseconds on a monotonic
/// clock. Keys are the bodies of `sba_domain::ratelimit` as given: the map is this
/// process's own, so it needs no namespace prefix.
#[derive(Debug)]
pub struct InMemoryRateLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    started: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    tats: HashMap<String, u64>,
    inserts: u32,
}

impl Default for InMemoryRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryRateLimiter {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            started: Instant::now(),
        }
    }

    /// Microseconds since this limiter started (monotonic; wall-clock jumps do not matter).
    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Decides synchronously (no I/O); what [`RateLimiter::check`] does.
    pub fn decide(&self, key: &str, quota: Quota, cost: u32) -> Decision {
        let now = self.now_us();
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        let mut shard = self.shards[index].lock().unwrap_or_else(PoisonError::into_inner);
        let (decision, next) = Gcra::decide(quota, shard.tats.get(key).copied(), now, cost);
        if let Some(tat) = next
            && shard.tats.insert(key.to_owned(), tat).is_none()
        {
            shard.inserts += 1;
            if shard.inserts >= SWEEP_EVERY {
                shard.inserts = 0;
                // A TAT in the past means the key's quota is whole again: forget it.
                shard.tats.retain(|_, tat| *tat > now);
            }
        }
        decision
    }

    /// How many keys are held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RateLimiter for InMemoryRateLimiter {
    async fn check(&self, key: &str, quota: Quota, cost: u32) -> Result<Decision, RateLimitError> {
        Ok(self.decide(key, quota, cost))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn exactly_the_limit_passes_among_concurrent_requests() {
        let limiter = Arc::new(InMemoryRateLimiter::new());
        let quota = Quota::new(50, 60).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move { limiter.check("k", quota, 1).await.unwrap().is_allowed() })
            })
            .collect();
        let mut allowed = 0;
        for task in tasks {
            allowed += usize::from(task.await.unwrap());
        }
        assert_eq!(allowed, 50);
    }

    #[test]
    fn keys_are_independent() {
        let limiter = InMemoryRateLimiter::new();
        let quota = Quota::new(1, 60).unwrap();
        assert!(limiter.decide("a|ip|GET|/v1/runs", quota, 1).is_allowed());
        assert!(!limiter.decide("a|ip|GET|/v1/runs", quota, 1).is_allowed());
        assert!(limiter.decide("b|ip|GET|/v1/runs", quota, 1).is_allowed());
    }

    #[test]
    fn expired_keys_are_swept_so_memory_stays_bounded() {
        let limiter = InMemoryRateLimiter::new();
        let quota = Quota::new(1_000_000, 1).unwrap(); // 1 µs per cell: expires at once
        let per_sweep = SHARDS * SWEEP_EVERY as usize;
        for i in 0..per_sweep * 3 {
            limiter.decide(&format!("k{i}"), quota, 1);
        }
        assert!(limiter.len() < per_sweep * 2, "{}", limiter.len());
    }
}
