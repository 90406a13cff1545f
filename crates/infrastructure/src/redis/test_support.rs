//! Test helpers: the Redis that `scripts/test.sh` starts. A test that needs it fails loudly
//! when it is missing instead of being skipped; tests share it, so each uses its own keys.
#![allow(clippy::panic)]

/// The environment variable naming the test Redis URL.
pub const REDIS_URL_VAR: &str = "SBA_TEST_REDIS_URL";

/// The URL of the test Redis.
///
/// # Panics
/// With instructions, when the variable is unset: a test that needs Redis must fail loudly
/// rather than be skipped.
pub fn redis_url() -> String {
    std::env::var(REDIS_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{REDIS_URL_VAR} is not set: run scripts/test.sh, or set SBA_TEST_REDIS_URL \
             (scripts/services-up.sh starts a private Redis and exports it)"
        )
    })
}
