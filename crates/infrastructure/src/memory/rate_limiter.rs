//! [`InMemoryRateLimiter`]: the GCRA of `sba_domain::ratelimit` over a bounded in-process
//! map. It is the limiter of development mode and the fallback while Redis is unreachable;
//! it limits per node only.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::ops::compute::Op;
use moka::policy::Expiry;
use moka::sync::Cache;
use sba_application::ports::{RateLimitError, RateLimiter};
use sba_domain::ratelimit::{Decision, Gcra, Quota};

/// Keys held at most by default: a flood of distinct keys (invented addresses, routes,
/// tenants) evicts the least used state instead of growing the map; an evicted key starts
/// with a whole quota again.
pub const DEFAULT_CAPACITY: u64 = 100_000;

/// Per-node GCRA state: each key's theoretical arrival time (TAT) in microseconds on a
/// monotonic clock. A key is forgotten when its TAT passes (its quota is whole again) or
/// when the map is full and it is used least. Keys are the bodies of
/// `sba_domain::ratelimit` as given: the map is this process's own, so it needs no
/// namespace prefix.
#[derive(Debug)]
pub struct InMemoryRateLimiter {
    tats: Cache<String, Tat>,
    started: Instant,
}

/// A key's TAT, and the instant it stands for (when the entry expires).
#[derive(Debug, Clone, Copy)]
struct Tat {
    micros: u64,
    at: Instant,
}

/// Each entry lives until its TAT.
struct UntilTat;

impl Expiry<String, Tat> for UntilTat {
    fn expire_after_create(&self, _: &String, tat: &Tat, created_at: Instant) -> Option<Duration> {
        Some(tat.at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _: &String,
        tat: &Tat,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(tat.at.saturating_duration_since(updated_at))
    }
}

impl Default for InMemoryRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryRateLimiter {
    /// A limiter holding at most [`DEFAULT_CAPACITY`] keys.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A limiter holding at most `capacity` keys.
    pub fn with_capacity(capacity: u64) -> Self {
        Self {
            tats: Cache::builder().max_capacity(capacity).expire_after(UntilTat).build(),
            started: Instant::now(),
        }
    }

    /// Microseconds since this limiter started (monotonic; wall-clock jumps do not matter).
    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Decides synchronously (no I/O); what [`RateLimiter::check`] does. Decisions on one
    /// key are serialised (the map's per-key compute), so a quota is never overspent.
    pub fn decide(&self, key: &str, quota: Quota, cost: u32) -> Decision {
        let now = self.now_us();
        let mut decided = None;
        self.tats.entry_by_ref(key).and_compute_with(|entry| {
            // A TAT in the past (an entry not yet evicted) decides like no entry at all.
            let (decision, next) = Gcra::decide(quota, entry.map(|e| e.into_value().micros), now, cost);
            decided = Some(decision);
            match next {
                Some(micros) => Op::Put(Tat { micros, at: self.started + Duration::from_micros(micros) }),
                None => Op::Nop,
            }
        });
        // The closure always runs; a refusal is the safe answer were it not to.
        decided.unwrap_or(Decision::Denied { retry_after_us: 1_000_000, reset_us: 1_000_000 })
    }

    /// How many keys are held (for tests and metrics), after pending evictions ran.
    pub fn len(&self) -> usize {
        self.tats.run_pending_tasks();
        usize::try_from(self.tats.entry_count()).unwrap_or(usize::MAX)
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
    fn keys_whose_quota_is_whole_again_are_forgotten() {
        let limiter = InMemoryRateLimiter::new();
        let quota = Quota::new(1_000_000, 1).unwrap(); // 1 µs per cell: expires at once
        for i in 0..10_000 {
            limiter.decide(&format!("k{i}"), quota, 1);
        }
        // The map's timer wheel removes expired entries on its next tick (about a second).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !limiter.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(limiter.len(), 0);
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_capacity() {
        let limiter = InMemoryRateLimiter::with_capacity(1_000);
        let quota = Quota::new(1, 3_600).unwrap(); // every key lives an hour
        for i in 0..20_000 {
            limiter.decide(&format!("-|198.51.100.{}|GET|/v1/runs{i}", i % 250), quota, 1);
        }
        assert!(limiter.len() <= 1_000, "{}", limiter.len());
    }
}
