//! One way to make fred clients, for every Redis adapter (the rate limiter, the cache, and
//! the event bus and queue to come): the URL read without ever showing its password, one
//! reconnect policy, and bounds on connecting and on every command, so that a Redis that is
//! down or slow costs a caller a bounded wait and the connection recovers by itself.
//!
//! The functions build clients without connecting them: an adapter takes what it must
//! before the first connection (the cache its reconnection events), then connects and
//! decides how long to wait and what to log.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use fred::clients::{Client, Pool, SubscriberClient};
use fred::interfaces::ClientLike as _;
use fred::types::Builder;
use fred::types::config::{Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy, UnresponsiveConfig};
use secrecy::{ExposeSecret as _, SecretString};

/// How a client talks to Redis.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// The bound on one command; past it the command fails with a timeout. Default: 50 ms.
    pub command_timeout: Duration,
    /// The bound on opening a connection and on fred's own commands (`AUTH`, `SELECT`, …);
    /// a connection that stops answering for this long (at least a second) is dropped and
    /// made again. Default: 1 s.
    pub connect_timeout: Duration,
    /// How a lost connection is made again, in the background. Default: at once, then
    /// after 100 ms, doubling up to 2 s, forever.
    pub reconnect: ReconnectPolicy,
    /// Pub/sub messages (and connection events) buffered for each reader of a client;
    /// a reader further behind loses messages and is told so. Default: fred's (32).
    pub message_buffer: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            reconnect: ReconnectPolicy::new_exponential(0, 100, 2_000, 2),
            message_buffer: PerformanceConfig::default().broadcast_channel_capacity,
        }
    }
}

/// A client for commands on the Redis at `url` (`redis://` or `rediss://`), not connected.
///
/// # Errors
/// When `url` is not a usable Redis URL (the error never quotes it).
pub fn client(url: &SecretString, options: &ConnectionOptions) -> anyhow::Result<Client> {
    builder(url, options)?.build().map_err(|e| anyhow!("cannot build the Redis client ({:?})", e.kind()))
}

/// A command client on the Redis at `url`, connecting: waits at most `options`'
/// connect timeout for the first connection. A Redis that is down (or refusing the
/// credentials) is not an error: the client keeps connecting in the background, and a
/// warning says that `unavailable` (what the adapter cannot do meanwhile) until it connects.
///
/// # Errors
/// When `url` is not a usable Redis URL (never quoted), or Redis refuses the first
/// connection outright.
pub async fn connected_client(
    url: &SecretString,
    options: &ConnectionOptions,
    unavailable: &str,
) -> anyhow::Result<Client> {
    let client = client(url, options)?;
    match tokio::time::timeout(options.connect_timeout, client.init()).await {
        Ok(Ok(_connection_task)) => {}
        Ok(Err(e)) => return Err(e).context("cannot connect to Redis"),
        Err(_elapsed) => tracing::warn!(
            timeout_ms = options.connect_timeout.as_millis(),
            "no Redis connection yet (down, or refusing the credentials): {unavailable} until it connects"
        ),
    }
    Ok(client)
}

/// A client for pub/sub subscriptions on the Redis at `url`, not connected.
///
/// # Errors
/// When `url` is not a usable Redis URL (the error never quotes it).
pub fn subscriber(url: &SecretString, options: &ConnectionOptions) -> anyhow::Result<SubscriberClient> {
    builder(url, options)?
        .build_subscriber_client()
        .map_err(|e| anyhow!("cannot build the Redis subscriber ({:?})", e.kind()))
}

/// `size` clients on the Redis at `url`, used in turn, not connected.
///
/// # Errors
/// When `url` is not a usable Redis URL (the error never quotes it), or `size` is 0.
pub fn pool(url: &SecretString, options: &ConnectionOptions, size: usize) -> anyhow::Result<Pool> {
    builder(url, options)?
        .build_pool(size)
        .map_err(|e| anyhow!("cannot build the Redis pool ({:?})", e.kind()))
}

fn builder(url: &SecretString, options: &ConnectionOptions) -> anyhow::Result<Builder> {
    // fred's parse errors may quote the URL, password included: only the kind is kept.
    let mut config = Config::from_url(url.expose_secret())
        .map_err(|e| anyhow!("the Redis URL is not usable ({:?})", e.kind()))?;
    // Reconnect in the background instead of failing the first connection.
    config.fail_fast = false;
    let mut builder = Builder::from_config(config);
    builder
        .set_policy(options.reconnect.clone())
        .set_connection_config(ConnectionConfig {
            connection_timeout: options.connect_timeout,
            internal_command_timeout: options.connect_timeout,
            // A command is never resent on a new connection: its caller has moved on (the
            // cache), or it may have been applied already (a rate-limit decision).
            max_command_attempts: 1,
            // A Redis that stops answering is dropped and reconnected, not waited on.
            unresponsive: UnresponsiveConfig {
                max_timeout: Some(options.connect_timeout.max(Duration::from_secs(1))),
                interval: Duration::from_millis(250),
            },
            ..ConnectionConfig::default()
        })
        .set_performance_config(PerformanceConfig {
            default_command_timeout: options.command_timeout,
            broadcast_channel_capacity: options.message_buffer,
            ..PerformanceConfig::default()
        });
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use fred::interfaces::ClientLike as _;

    use super::*;

    fn url(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    #[test]
    fn clients_carry_the_options() {
        let options =
            ConnectionOptions { command_timeout: Duration::from_millis(70), ..ConnectionOptions::default() };
        let client = client(&url("redis://127.0.0.1:1/2"), &options).unwrap();
        assert_eq!(client.perf_config().default_command_timeout, Duration::from_millis(70));
        assert_eq!(client.connection_config().max_command_attempts, 1);
        assert_eq!(client.connection_config().connection_timeout, Duration::from_secs(1));
        assert!(!client.client_config().fail_fast);
        assert!(!client.is_connected(), "built, not connected");
        assert!(subscriber(&url("redis://127.0.0.1:1"), &options).is_ok());
        assert_eq!(pool(&url("redis://127.0.0.1:1"), &options, 3).unwrap().size(), 3);
    }

    #[test]
    fn unusable_urls_are_refused_without_quoting_them() {
        for bad in ["redis://user:hunter2@[::1:6379", "user:hunter2@127.0.0.1:6379"] {
            let error = client(&url(bad), &ConnectionOptions::default()).unwrap_err();
            assert!(!format!("{error:#}").contains("hunter2"), "{error:#}");
        }
    }
}
