//! Header values of the IETF httpapi rate-limit draft -11 (`RateLimit-Policy`,
//! `RateLimit`) and `Retry-After`.

use super::gcra::Quota;

const MICROS: u64 = 1_000_000;

/// `"<policy>";q=<limit>;w=<window secs>`.
pub fn policy_header(policy: &str, quota: Quota) -> String {
    format!("\"{policy}\";q={};w={}", quota.limit(), quota.window_secs())
}

/// `"<policy>";r=<remaining>;t=<secs until the quota is whole again>` (rounded up).
pub fn ratelimit_header(policy: &str, remaining: u32, reset_us: u64) -> String {
    format!("\"{policy}\";r={remaining};t={}", reset_us.div_ceil(MICROS))
}

/// `Retry-After` in whole seconds, rounded up and at least 1.
pub fn retry_after_secs(retry_after_us: u64) -> u64 {
    retry_after_us.div_ceil(MICROS).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_draft_11() {
        let quota = Quota::new(100, 60).unwrap();
        assert_eq!(policy_header("default", quota), "\"default\";q=100;w=60");
        assert_eq!(ratelimit_header("default", 42, 16_200_000), "\"default\";r=42;t=17");
        assert_eq!(ratelimit_header("default", 100, 0), "\"default\";r=100;t=0");
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(1_000_000), 1);
        assert_eq!(retry_after_secs(1_000_001), 2);
    }
}
