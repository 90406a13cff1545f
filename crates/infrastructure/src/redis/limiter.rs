//! `FredRateLimiter`: the distributed GCRA of ADR 0006, one atomic Lua script per decision
//! on the Redis server clock, bounded by a short timeout so a slow or absent Redis turns into
//! [`RateLimitError::Unavailable`] instead of a waiting request.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike as _, LuaInterface as _};
use fred::types::config::{Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy, UnresponsiveConfig};
use fred::types::scripts::Script;
use fred::types::{Builder, Key};
use sba_application::ports::{RateLimitError, RateLimiter};
use sba_domain::ratelimit::{Decision, Quota};
use secrecy::{ExposeSecret as _, SecretString};

const GCRA_LUA: &str = include_str!("gcra.lua");

/// How the limiter talks to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FredRateLimiterSettings {
    /// The bound on one decision, reloading the script included. Default: 50 ms
    /// (`SBA_RATE_LIMIT__REDIS_TIMEOUT_MS`).
    pub timeout: Duration,
    /// How long [`FredRateLimiter::connect`] waits for the first connection before it returns
    /// anyway (and the bound on opening one TCP connection). Default: 1 s.
    pub connect_timeout: Duration,
}

impl Default for FredRateLimiterSettings {
    fn default() -> Self {
        Self { timeout: Duration::from_millis(50), connect_timeout: Duration::from_secs(1) }
    }
}

/// The [`RateLimiter`] on Redis: every decision is one `EVALSHA` of a script that mirrors
/// `sba_domain::ratelimit::Gcra::decide` on the Redis clock, so all nodes sharing the Redis
/// share every limit exactly.
#[derive(Clone)]
pub struct FredRateLimiter {
    client: Client,
    script: Script,
    timeout: Duration,
}

impl fmt::Debug for FredRateLimiter {
    // The client's configuration holds the password of the URL: only the timeout is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FredRateLimiter").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl FredRateLimiter {
    /// Connects to the Redis at `url` (`redis://` or `rediss://`, never logged).
    ///
    /// A Redis that is down at startup is not an error: `connect` waits at most
    /// `settings.connect_timeout`, logs a warning and returns a limiter whose calls fail fast
    /// with [`RateLimitError::Unavailable`] (so the service starts and applies its fail mode)
    /// while the client keeps reconnecting in the background.
    ///
    /// # Errors
    /// When `url` is not a usable Redis URL.
    pub async fn connect(url: &SecretString, settings: FredRateLimiterSettings) -> anyhow::Result<Self> {
        // fred's parse errors may quote the URL, password included: only the kind is kept.
        let mut config = Config::from_url(url.expose_secret())
            .map_err(|e| anyhow!("the Redis URL is not usable ({:?})", e.kind()))?;
        // Reconnect in the background instead of failing the first connection.
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .set_connection_config(ConnectionConfig {
                connection_timeout: settings.connect_timeout,
                internal_command_timeout: settings.connect_timeout,
                // A decision is never resent on a new connection: it may have been applied.
                max_command_attempts: 1,
                // A Redis that stops answering is dropped and reconnected, not waited on.
                unresponsive: UnresponsiveConfig {
                    max_timeout: Some(settings.connect_timeout.max(Duration::from_secs(1))),
                    interval: Duration::from_millis(250),
                },
                ..ConnectionConfig::default()
            })
            .set_performance_config(PerformanceConfig {
                default_command_timeout: settings.timeout,
                ..PerformanceConfig::default()
            })
            .build()
            .map_err(|e| anyhow!("cannot build the Redis client ({:?})", e.kind()))?;
        match tokio::time::timeout(settings.connect_timeout, client.init()).await {
            Ok(Ok(_connection_task)) => {}
            Ok(Err(e)) => return Err(e).context("cannot connect to Redis"),
            Err(_elapsed) => tracing::warn!(
                timeout_ms = settings.connect_timeout.as_millis(),
                "no Redis connection yet (down, or refusing the credentials): rate-limit decisions are \
                 unavailable until it connects"
            ),
        }
        let limiter = Self::from_client(client, settings);
        if let Err(e) = limiter.load_script().await {
            tracing::warn!(error = %e, "cannot load the rate-limit script yet: it is loaded on first use");
        }
        Ok(limiter)
    }

    /// A limiter on an existing fred client, which the caller connects and configures (see
    /// [`Self::connect`] for the settings that keep callers from waiting). Decisions are
    /// bounded by `settings.timeout` and fail at once while the client is disconnected; the
    /// script is loaded on first use.
    pub fn from_client(client: Client, settings: FredRateLimiterSettings) -> Self {
        Self { client, script: Script::from_lua(GCRA_LUA), timeout: settings.timeout }
    }

    async fn load_script(&self) -> Result<(), FredError> {
        tokio::time::timeout(self.timeout, self.client.script_load::<(), _>(GCRA_LUA))
            .await
            .unwrap_or_else(|_| Err(FredError::new(ErrorKind::Timeout, "SCRIPT LOAD timed out")))
    }

    /// One `EVALSHA`; when Redis has lost the script (restart, `SCRIPT FLUSH`), it is loaded
    /// again and run once more.
    async fn evaluate(&self, key: &str, quota: Quota, cost: u32) -> Result<Vec<i64>, FredError> {
        // fred would queue the command until it reconnects; the caller needs an answer now.
        // (`Options::fail_fast` would do this, but fred's `WithOptions` has no Lua interface.)
        if !self.client.is_connected() {
            return Err(FredError::new(ErrorKind::IO, "not connected to Redis"));
        }
        let args = vec![
            quota.interval_us().to_string(),
            quota.window_us().to_string(),
            quota.limit().to_string(),
            cost.to_string(),
        ];
        match self.script.evalsha(&self.client, Key::from(key), args.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                self.load_script().await?;
                self.script.evalsha(&self.client, Key::from(key), args).await
            }
            result => result,
        }
    }
}

#[async_trait]
impl RateLimiter for FredRateLimiter {
    async fn check(&self, key: &str, quota: Quota, cost: u32) -> Result<Decision, RateLimitError> {
        let reply = tokio::time::timeout(self.timeout, self.evaluate(key, quota, cost))
            .await
            .map_err(|_| anyhow!("no rate-limit decision from Redis within {} ms", self.timeout.as_millis()))
            .and_then(|reply| reply.context("the rate-limit script failed"))
            .map_err(RateLimitError::Unavailable)?;
        decision(&reply).map_err(RateLimitError::Unavailable)
    }
}

/// Reads the script's `{allowed, remaining, retry_after_us, reset_us}`.
fn decision(reply: &[i64]) -> anyhow::Result<Decision> {
    let &[allowed, remaining, retry_after_us, reset_us] = reply else {
        return Err(anyhow!("the rate-limit script returned {} values instead of 4", reply.len()));
    };
    let reset_us = u64::try_from(reset_us).context("negative reset from the rate-limit script")?;
    Ok(if allowed == 1 {
        Decision::Allowed {
            remaining: u32::try_from(remaining)
                .context("remaining out of range from the rate-limit script")?,
            reset_us,
        }
    } else {
        Decision::Denied {
            retry_after_us: u64::try_from(retry_after_us)
                .context("negative retry-after from the rate-limit script")?,
            reset_us,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_replies_become_decisions() {
        assert_eq!(
            decision(&[1, 4, 0, 2_000_000]).unwrap(),
            Decision::Allowed { remaining: 4, reset_us: 2_000_000 }
        );
        assert_eq!(
            decision(&[0, 0, 500_000, 1_000_000]).unwrap(),
            Decision::Denied { retry_after_us: 500_000, reset_us: 1_000_000 }
        );
        assert!(decision(&[1, 2, 3]).is_err());
        assert!(decision(&[1, -1, 0, 0]).is_err());
    }

    #[test]
    fn debug_output_hides_the_connection() {
        let limiter = FredRateLimiter::from_client(
            Builder::from_config(Config::from_url("redis://user:hunter2@127.0.0.1:6379").unwrap())
                .build()
                .unwrap(),
            FredRateLimiterSettings::default(),
        );
        let shown = format!("{limiter:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
