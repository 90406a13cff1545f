//! [`InMemoryRateLimiter`]: the GCRA of `sba_domain::ratelimit` over a bounded in-process
//! map. It is the limiter of development mode and the fallback while Redis is unreachable;
//! it limits per node only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::policy::Expiry;
use moka::sync::Cache;
use sba_application::ports::{RateLimitError, RateLimiter};
use sba_domain::ratelimit::{Decision, Gcra, Quota};

/// Keys held at most by default: a flood of distinct keys (invented addresses, routes,
/// tenants) evicts the least used state instead of growing the map; an evicted key starts
/// with a whole quota again.
pub const DEFAULT_CAPACITY: u64 = 100_000;

/// Per-node GCRA state: each key's theoretical arrival time (TAT) in microseconds on a
/// monotonic clock. A key is forgotten when it has not been asked for during its quota's
/// window (by then its TAT has passed: an allowed request never sets a TAT more than a
/// window ahead, so its quota is whole again) or when the map is full and it is used
/// least. Keys are the bodies of `sba_domain::ratelimit` as given: the map is this
/// process's own, so it needs no namespace prefix.
///
/// The map only finds a key's cell; a decision updates the cell's TAT with a
/// compare-and-swap, so decisions on one key are serialised without a lock and a quota is
/// never overspent, and a hot key costs one map read per decision.
#[derive(Debug)]
pub struct InMemoryRateLimiter {
    cells: Cache<String, Arc<Cell>, ahash::RandomState>,
    started: Instant,
}

/// One key's state.
#[derive(Debug)]
struct Cell {
    /// The TAT in microseconds since the limiter started; 0 before the first decision.
    tat_us: AtomicU64,
    /// The longest quota window this key was decided with: how long it may stay unasked.
    window_us: AtomicU64,
}

impl Cell {
    fn idle_limit(&self) -> Duration {
        Duration::from_micros(self.window_us.load(Ordering::Relaxed))
    }
}

/// Each entry lives until it has not been asked for during its window.
struct UntilIdleForItsWindow;

impl Expiry<String, Arc<Cell>> for UntilIdleForItsWindow {
    fn expire_after_create(&self, _: &String, cell: &Arc<Cell>, _: Instant) -> Option<Duration> {
        Some(cell.idle_limit())
    }

    fn expire_after_read(
        &self,
        _: &String,
        cell: &Arc<Cell>,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        Some(cell.idle_limit())
    }

    fn expire_after_update(
        &self,
        _: &String,
        cell: &Arc<Cell>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(cell.idle_limit())
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
            cells: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilIdleForItsWindow)
                .build_with_hasher(ahash::RandomState::new()),
            started: Instant::now(),
        }
    }

    /// Microseconds since this limiter started (monotonic; wall-clock jumps do not matter).
    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Decides synchronously (no I/O); what [`RateLimiter::check`] does.
    pub fn decide(&self, key: &str, quota: Quota, cost: u32) -> Decision {
        let window_us = quota.window_us();
        let cell = self.cells.get_with_by_ref(key, || {
            Arc::new(Cell { tat_us: AtomicU64::new(0), window_us: AtomicU64::new(window_us) })
        });
        cell.window_us.fetch_max(window_us, Ordering::Relaxed);
        let now = self.now_us();
        let mut tat = cell.tat_us.load(Ordering::Acquire);
        loop {
            // A TAT in the past decides like no TAT at all.
            let (decision, next) = Gcra::decide(quota, Some(tat), now, cost);
            let Some(next) = next else { return decision };
            match cell.tat_us.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return decision,
                Err(current) => tat = current,
            }
        }
    }

    /// How many keys are held (for tests and metrics), after pending evictions ran.
    pub fn len(&self) -> usize {
        self.cells.run_pending_tasks();
        usize::try_from(self.cells.entry_count()).unwrap_or(usize::MAX)
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
    fn threads_deciding_one_key_at_once_never_overspend_its_quota() {
        let limiter = Arc::new(InMemoryRateLimiter::new());
        let quota = Quota::new(500, 3_600).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                std::thread::spawn(move || {
                    (0..200).filter(|_| limiter.decide("hot", quota, 1).is_allowed()).count()
                })
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(allowed, 500);
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
