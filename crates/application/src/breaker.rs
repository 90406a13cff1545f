//! [`Breaker`]: the circuit breaker that keeps a failing shared store (Redis) out of the
//! request path for a while, used by the rate limiter ([`crate::ratelimit::RateLimits`],
//! ADR 0006) and the Redis cache (ADR 0007).
//!
//! A failure opens it for a fixed period, during which callers skip the store and use
//! their fallback; after the period one call probes the store again, and a success closes
//! it. The breaker only keeps the state: what a caller logs and measures on a transition
//! (each has its own metrics and messages) is told by the return values of
//! [`Breaker::record_failure`] and [`Breaker::record_success`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A lock-free circuit breaker (see the module documentation).
#[derive(Debug)]
pub struct Breaker {
    open_for_us: u64,
    started: Instant,
    /// Microseconds since `started` until which the store is skipped.
    open_until_us: AtomicU64,
    /// Whether the last outcome was a failure (the caller's fallback is active).
    open: AtomicBool,
}

impl Breaker {
    /// A closed breaker that stays open for `open_for` after each failure.
    pub fn new(open_for: Duration) -> Self {
        Self {
            open_for_us: u64::try_from(open_for.as_micros()).unwrap_or(u64::MAX),
            started: Instant::now(),
            open_until_us: AtomicU64::new(0),
            open: AtomicBool::new(false),
        }
    }

    /// Whether a call may go to the store: the breaker is closed, or its open period has
    /// passed (the call probes). The clock is read only while open: this runs on every call.
    pub fn allows(&self) -> bool {
        !self.open.load(Ordering::Relaxed) || self.elapsed_us() >= self.open_until_us.load(Ordering::Relaxed)
    }

    /// Whether the store is being skipped after a failure (no success since).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// A call failed: the store is skipped for the open period from now. `true` when this
    /// failure opened the breaker (it was closed): the caller announces its fallback once.
    pub fn record_failure(&self) -> bool {
        let until = self.elapsed_us().saturating_add(self.open_for_us);
        self.open_until_us.store(until, Ordering::Relaxed);
        !self.open.swap(true, Ordering::AcqRel)
    }

    /// A call succeeded. `true` when this success closed the breaker (it was open): the
    /// caller announces the recovery once.
    pub fn record_success(&self) -> bool {
        // A load first: the common case (closed) writes nothing to the shared cache line.
        self.open.load(Ordering::Relaxed) && self.open.swap(false, Ordering::AcqRel)
    }

    /// Ends the open period now, as if it had passed (tests of callers).
    #[cfg(test)]
    pub(crate) fn end_open_period(&self) {
        self.open_until_us.store(0, Ordering::Relaxed);
    }

    fn elapsed_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_breaker_allows_every_call() {
        let breaker = Breaker::new(Duration::from_mins(1));
        assert!(breaker.allows());
        assert!(!breaker.is_open());
        assert!(!breaker.record_success(), "closing a closed breaker is no transition");
        assert!(breaker.allows());
    }

    #[test]
    fn a_failure_opens_it_once_and_skips_the_store_for_the_open_period() {
        let breaker = Breaker::new(Duration::from_mins(1));
        assert!(breaker.record_failure(), "the first failure opens it");
        assert!(breaker.is_open());
        assert!(!breaker.allows());
        assert!(!breaker.record_failure(), "a failure while open is no transition");
        assert!(!breaker.allows());
    }

    #[test]
    fn after_the_open_period_a_call_probes_and_a_success_closes_it_once() {
        let breaker = Breaker::new(Duration::from_millis(20));
        breaker.record_failure();
        assert!(!breaker.allows());
        std::thread::sleep(Duration::from_millis(30));
        assert!(breaker.allows(), "the open period has passed: probe");
        assert!(breaker.is_open(), "still open until a call succeeds");
        assert!(breaker.record_success(), "the probe's success closes it");
        assert!(!breaker.is_open());
        assert!(!breaker.record_success());
        assert!(breaker.allows());
    }

    #[test]
    fn a_failed_probe_opens_it_for_another_period() {
        let breaker = Breaker::new(Duration::from_millis(20));
        breaker.record_failure();
        std::thread::sleep(Duration::from_millis(30));
        assert!(breaker.allows());
        assert!(!breaker.record_failure(), "still the same outage");
        assert!(!breaker.allows());
    }

    #[test]
    fn ending_the_open_period_lets_the_next_call_probe() {
        let breaker = Breaker::new(Duration::from_mins(1));
        breaker.record_failure();
        breaker.end_open_period();
        assert!(breaker.allows());
    }
}
