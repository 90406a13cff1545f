//! The generic cell rate algorithm: a key's whole state is its *theoretical arrival time*
//! (TAT). A quota of `limit` requests per `window` emits one cell every `window / limit`
//! and tolerates a burst of `limit`. Denied requests leave the TAT alone, so they consume
//! nothing; a changed quota applies to the very next request, since the TAT is an instant.

/// `limit` requests (cost units) per `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u32,
    window_secs: u32,
}

/// A quota that cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a quota needs a limit and a window of at least 1 (and at most one day)")]
pub struct QuotaError;

/// The longest window accepted: one day.
const MAX_WINDOW_SECS: u32 = 86_400;
const MICROS: u64 = 1_000_000;

impl Quota {
    /// # Errors
    /// [`QuotaError`] when `limit` or `window_secs` is zero, or the window exceeds a day.
    pub fn new(limit: u32, window_secs: u32) -> Result<Self, QuotaError> {
        if limit == 0 || window_secs == 0 || window_secs > MAX_WINDOW_SECS {
            return Err(QuotaError);
        }
        Ok(Self { limit, window_secs })
    }

    /// `limit` requests per minute (always valid).
    pub const fn per_minute(limit: std::num::NonZeroU32) -> Self {
        Self { limit: limit.get(), window_secs: 60 }
    }

    /// `q` of the policy header.
    pub const fn limit(self) -> u32 {
        self.limit
    }

    /// `w` of the policy header.
    pub const fn window_secs(self) -> u32 {
        self.window_secs
    }

    /// The window in microseconds (the burst tolerance).
    pub const fn window_us(self) -> u64 {
        self.window_secs as u64 * MICROS
    }

    /// Microseconds between two cells (at least 1).
    pub const fn interval_us(self) -> u64 {
        let interval = self.window_us() / self.limit as u64;
        if interval == 0 { 1 } else { interval }
    }
}

/// The outcome of one request against a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let it through; `remaining` cost units are left now, and the quota is whole again
    /// in `reset_us`.
    Allowed { remaining: u32, reset_us: u64 },
    /// Refuse it; retrying after `retry_after_us` can succeed. `reset_us` as above.
    Denied { retry_after_us: u64, reset_us: u64 },
}

impl Decision {
    pub const fn is_allowed(self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// One GCRA step: what a request of `cost` at `now_us` decides, and the TAT to store
/// (`None`: leave the stored TAT as it is).
#[derive(Debug, Clone, Copy)]
pub struct Gcra;

impl Gcra {
    /// Decides a request of `cost` units at `now_us` for a key whose stored TAT is `tat_us`
    /// (`None` for a new or expired key). Returns the decision and the TAT to store when
    /// allowed; a cost above the limit can never pass and is denied for a full window.
    pub fn decide(quota: Quota, tat_us: Option<u64>, now_us: u64, cost: u32) -> (Decision, Option<u64>) {
        let interval = quota.interval_us();
        let window = quota.window_us();
        let tat = tat_us.unwrap_or(now_us).max(now_us);
        let reset_now = tat - now_us;
        if cost > quota.limit() {
            return (Decision::Denied { retry_after_us: window, reset_us: reset_now }, None);
        }
        let new_tat = tat + interval * u64::from(cost);
        let allow_at = new_tat.saturating_sub(window);
        if now_us < allow_at {
            return (Decision::Denied { retry_after_us: allow_at - now_us, reset_us: reset_now }, None);
        }
        let used = new_tat - now_us;
        let remaining = (window - used) / interval;
        let remaining = u32::try_from(remaining).unwrap_or(u32::MAX).min(quota.limit());
        (Decision::Allowed { remaining, reset_us: used }, Some(new_tat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = MICROS;

    fn run(quota: Quota, times: &[u64]) -> Vec<bool> {
        let mut tat = None;
        times
            .iter()
            .map(|&now| {
                let (decision, next) = Gcra::decide(quota, tat, now, 1);
                if next.is_some() {
                    tat = next;
                }
                decision.is_allowed()
            })
            .collect()
    }

    #[test]
    fn a_burst_of_exactly_the_limit_passes_then_requests_are_denied() {
        let quota = Quota::new(5, 10).unwrap();
        let now = 1_000 * SEC;
        assert_eq!(run(quota, &[now; 7]), [true, true, true, true, true, false, false]);
    }

    #[test]
    fn remaining_counts_down_and_retry_after_is_one_interval() {
        let quota = Quota::new(3, 3).unwrap();
        let now = 50 * SEC;
        let (first, tat) = Gcra::decide(quota, None, now, 1);
        assert_eq!(first, Decision::Allowed { remaining: 2, reset_us: SEC });
        let (second, tat) = Gcra::decide(quota, tat, now, 1);
        assert_eq!(second, Decision::Allowed { remaining: 1, reset_us: 2 * SEC });
        let (third, tat) = Gcra::decide(quota, tat, now, 1);
        assert_eq!(third, Decision::Allowed { remaining: 0, reset_us: 3 * SEC });
        let (fourth, stored) = Gcra::decide(quota, tat, now, 1);
        assert_eq!(fourth, Decision::Denied { retry_after_us: SEC, reset_us: 3 * SEC });
        assert_eq!(stored, None, "a denial stores nothing");
        let (later, _) = Gcra::decide(quota, tat, now + SEC, 1);
        assert!(later.is_allowed(), "one interval later one cell is back");
    }

    #[test]
    fn denied_requests_consume_nothing() {
        let quota = Quota::new(2, 2).unwrap();
        let now = 10 * SEC;
        let (_, tat) = Gcra::decide(quota, None, now, 2);
        for _ in 0..100 {
            assert!(!Gcra::decide(quota, tat, now, 1).0.is_allowed());
        }
        assert!(Gcra::decide(quota, tat, now + SEC, 1).0.is_allowed());
    }

    #[test]
    fn weighted_costs_take_that_many_units_and_oversized_costs_never_pass() {
        let quota = Quota::new(10, 10).unwrap();
        let now = 7 * SEC;
        let (decision, tat) = Gcra::decide(quota, None, now, 4);
        assert_eq!(decision, Decision::Allowed { remaining: 6, reset_us: 4 * SEC });
        assert!(!Gcra::decide(quota, tat, now, 7).0.is_allowed());
        assert!(Gcra::decide(quota, tat, now, 6).0.is_allowed());
        let (oversized, stored) = Gcra::decide(quota, None, now, 11);
        assert!(!oversized.is_allowed());
        assert_eq!(stored, None);
    }

    #[test]
    fn a_changed_limit_applies_to_the_next_request() {
        let now = 100 * SEC;
        let small = Quota::new(2, 60).unwrap();
        let (_, tat) = Gcra::decide(small, None, now, 2);
        assert!(!Gcra::decide(small, tat, now, 1).0.is_allowed());
        // Raised: the time already used stays used, and the new rate refills it, so the
        // next request passes within one new interval (0.6 s), not after the old window.
        let raised = Quota::new(100, 60).unwrap();
        let (decision, _) = Gcra::decide(raised, tat, now, 1);
        assert_eq!(decision, Decision::Denied { retry_after_us: 600_000, reset_us: 60 * SEC });
        assert!(Gcra::decide(raised, tat, now + 600_000, 1).0.is_allowed());
        // Lowered: applies at once.
        let (_, tat) = Gcra::decide(raised, None, now, 1);
        let lowered = Quota::new(1, 60).unwrap();
        assert!(!Gcra::decide(lowered, tat, now, 1).0.is_allowed());
    }

    #[test]
    fn an_old_tat_counts_as_a_fresh_key() {
        let quota = Quota::new(3, 60).unwrap();
        let (decision, _) = Gcra::decide(quota, Some(SEC), 1_000 * SEC, 1);
        assert_eq!(decision, Decision::Allowed { remaining: 2, reset_us: 20 * SEC });
    }

    #[test]
    fn quotas_need_a_limit_and_a_sane_window() {
        assert_eq!(Quota::new(0, 60), Err(QuotaError));
        assert_eq!(Quota::new(10, 0), Err(QuotaError));
        assert_eq!(Quota::new(10, 86_401), Err(QuotaError));
        assert_eq!(Quota::new(3, 1).unwrap().interval_us(), 333_333);
        assert_eq!(Quota::new(u32::MAX, 1).unwrap().interval_us(), 1);
    }

    #[test]
    fn a_quota_reports_the_limit_and_window_it_was_made_with() {
        let quota = Quota::new(100, 3_600).unwrap();
        assert_eq!((quota.limit(), quota.window_secs()), (100, 3_600));
        let per_minute = Quota::per_minute(std::num::NonZeroU32::new(5).unwrap());
        assert_eq!((per_minute.limit(), per_minute.window_secs()), (5, 60));
    }
}
