//! `FredCache`: the two-tier [`Cache`] of ADR 0007, an in-process L1 in front of Redis (L2),
//! with namespace versions and cross-node invalidation over pub/sub.
//!
//! This file holds the adapter and its read path; the mechanisms have a file each:
//! [`versions`] (the namespace version table), [`invalidation`] (messages between nodes
//! over pub/sub) and [`fallback`] (the breaker, and the deletes and invalidations kept for
//! replay while Redis is unreachable).
//!
//! # Keys
//! Entries live at `sba:c:{tenant}:{namespace}:v{version}:{key}` (in L1 and Redis), the
//! namespace's version at `sba:cv:{tenant}:{namespace}` (missing: 0). Invalidating a
//! namespace is one `INCR`: entries of older versions are never read again and expire.
//!
//! # Versions
//! Each node keeps the versions it uses and trusts them for `version_ttl`, so an L2 hit is
//! one `GET` in the common case. Invalidations are announced on [`INVALIDATION_CHANNEL`], so
//! every node moves on at once; `version_ttl` bounds staleness when a message is lost, and
//! `l1_max_ttl` bounds how long an L1 entry can outlive a missed key invalidation. When a
//! connection is (re)established or messages were dropped, the node forgets its versions and
//! its L1: it may have missed invalidations meanwhile.
//!
//! # Messages
//! Text, `|`-separated, the key last (it may contain `|`):
//! - `n|{tenant}|{namespace}|{version}`: the namespace is at `version` now; applied only when
//!   greater than the node's own version.
//! - `k|{tenant}|{namespace}|{version}|{key}`: `key` was deleted; nodes drop it from L1 (at
//!   `version` and at their own version of the namespace).
//!
//! Anything else is logged at debug level and ignored.
//!
//! # Faults
//! Every Redis call is bounded by `redis_timeout` and fails at once while disconnected. After
//! a failure Redis is skipped for [`BREAKER_OPEN`]: reads and writes use L1 only, deletes and
//! invalidations apply locally and are kept (up to [`MAX_PENDING`]) to be replayed when Redis
//! answers again, so other nodes still hear of them; this node then empties its L1, which
//! may hold entries that its own kept invalidations cover. One warning is logged when the
//! fallback starts, one info line when Redis is back. Metrics: `sba_cache_fallback_active`
//! (0 or 1), `sba_cache_redis_errors_total`, and per namespace
//! `sba_cache_requests_total{tier, namespace, result}` and
//! `sba_cache_invalidations_total{namespace, scope}`; each Redis round trip is also counted
//! and timed by [`crate::observe`] (`sba_redis_calls_total{operation}`, `cache.get`, …).

mod fallback;
mod invalidation;
mod versions;

use std::fmt;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use fred::bytes::Bytes;
use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike as _, EventInterface as _, KeysInterface as _, PubsubInterface as _};
use fred::types::{ConnectHandle, Expiration};
use sba_application::breaker::Breaker;
use sba_application::ports::{Cache, CacheEntry, CacheKey};
use sba_domain::TenantId;
use secrecy::SecretString;
use tokio::task::JoinHandle;

pub use self::fallback::{BREAKER_OPEN, MAX_PENDING};
use self::fallback::{Pending, PendingWrite};
pub use self::invalidation::INVALIDATION_CHANNEL;
use self::invalidation::{Events, watch};
use self::versions::Versions;
use super::envelope;
use super::keys::entry_key;
use super::l1::{Doorkeeper, L1};
use super::metrics::{CacheEvent, CacheMetrics};
use super::{CacheSettings, now_ms};
use crate::observe::{self, Operation, System};
use crate::redis::connection::{self, ConnectionOptions};

/// How long [`FredCache::connect`] waits for Redis, and the bound on opening a connection
/// or subscribing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Invalidation messages buffered between the connection and the task applying them;
/// beyond that messages are lost and the node forgets its versions and L1.
const MESSAGE_BUFFER: usize = 4096;

/// The cache's Redis round trips (the others are in [`versions`] and [`invalidation`]).
static GET: Operation = Operation::redis("cache.get");
static SET: Operation = Operation::redis("cache.set");

/// The [`Cache`] on Redis with an in-process L1 (see the module documentation).
pub struct FredCache {
    inner: Arc<Inner>,
    /// The task applying invalidation messages and connection events, and the connections:
    /// stopped with the cache.
    watcher: JoinHandle<()>,
    connections: [ConnectHandle; 2],
}

struct Inner {
    client: Client,
    l1: L1,
    /// Which entries read from Redis go to L1 (the second read of a key, not the first).
    door: Doorkeeper,
    versions: Versions,
    settings: CacheSettings,
    /// Keeps Redis out of the path after a failure; open while serving from L1 only.
    breaker: Breaker,
    pending: Mutex<Pending>,
    replaying: AtomicBool,
    metrics: CacheMetrics,
    redis_errors: metrics::Counter,
    fallback_gauge: metrics::Gauge,
}

impl fmt::Debug for FredCache {
    // The client's configuration holds the password of the URL: it is not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FredCache")
            .field("settings", &self.inner.settings)
            .field("fallback_active", &self.fallback_active())
            .field("l1", &self.inner.l1)
            .finish_non_exhaustive()
    }
}

impl Drop for FredCache {
    fn drop(&mut self) {
        self.watcher.abort();
        for connection in &self.connections {
            connection.abort();
        }
    }
}

/// Readiness of Redis (`redis` in `/readyz`): a `PING` on the cache's command connection,
/// bounded by a second.
#[derive(Debug)]
struct RedisCheck {
    client: Client,
}

#[async_trait]
impl sba_application::ports::DependencyCheck for RedisCheck {
    fn component(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> anyhow::Result<()> {
        observe::redis!("cache.ping", async {
            match tokio::time::timeout(Duration::from_secs(1), self.client.ping::<()>(None)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(anyhow!("PING failed: {}", error.kind().to_str())),
                Err(_) => Err(anyhow!("PING took longer than 1 s")),
            }
        })
        .await
    }
}

impl FredCache {
    /// Readiness of the Redis behind the cache (every Redis adapter uses the same server).
    pub fn dependency_check(&self) -> Arc<dyn sba_application::ports::DependencyCheck> {
        Arc::new(RedisCheck { client: self.inner.client.clone() })
    }

    /// Connects to the Redis at `url` (`redis://` or `rediss://`, never logged): one
    /// connection for commands, one subscribed to [`INVALIDATION_CHANNEL`].
    ///
    /// A Redis that is down at startup is not an error: `connect` waits at most a second,
    /// logs a warning and returns a cache that serves from L1 while the connections keep
    /// retrying in the background.
    ///
    /// # Errors
    /// When `url` is not a usable Redis URL.
    pub async fn connect(url: &SecretString, settings: CacheSettings) -> anyhow::Result<Self> {
        let options = ConnectionOptions {
            command_timeout: settings.redis_timeout,
            connect_timeout: CONNECT_TIMEOUT,
            ..ConnectionOptions::default()
        };
        let client = connection::client(url, &options)?;
        let subscriber = connection::subscriber(
            url,
            &ConnectionOptions {
                command_timeout: CONNECT_TIMEOUT,
                message_buffer: MESSAGE_BUFFER,
                ..options
            },
        )?;

        let inner = Arc::new(Inner::new(client.clone(), settings));
        // Taken before connecting, so that a first connection made after `connect` returns is
        // seen too.
        let mut events = Events {
            messages: subscriber.message_rx(),
            subscriber_up: subscriber.reconnect_rx(),
            client_up: client.reconnect_rx(),
        };
        let connections = [client.connect(), subscriber.connect()];
        let ready = tokio::time::timeout(CONNECT_TIMEOUT, async {
            while !(client.is_connected() && subscriber.is_connected()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            subscriber.subscribe(INVALIDATION_CHANNEL).await
        })
        .await;
        match ready {
            // Connected and subscribed, with nothing cached yet: the first connection's
            // events need no handling.
            Ok(Ok(())) => {
                events.subscriber_up = events.subscriber_up.resubscribe();
                events.client_up = events.client_up.resubscribe();
            }
            Ok(Err(error)) => tracing::warn!(
                error = %error,
                "cannot subscribe to cache invalidations yet: retried when the connection is re-established"
            ),
            Err(_elapsed) => tracing::warn!(
                timeout_ms = CONNECT_TIMEOUT.as_millis(),
                "no Redis connection yet (down, or refusing the credentials): the cache serves from \
                 L1 only until it connects"
            ),
        }
        inner.fallback_gauge.set(0.0);
        let watcher = tokio::spawn(watch(Arc::clone(&inner), subscriber, events));
        Ok(Self { inner, watcher, connections })
    }

    /// Whether Redis is being skipped after a failure (L1 only).
    pub fn fallback_active(&self) -> bool {
        self.inner.breaker.is_open()
    }
}

#[async_trait]
impl Cache for FredCache {
    async fn get(&self, key: &CacheKey) -> Option<CacheEntry> {
        let inner = &self.inner;
        let at = entry_key(key, inner.version(key.tenant, key.namespace).await);
        if let Some(hit) = inner.l1.get(&at) {
            inner.metrics.record(key.namespace, CacheEvent::L1Hit);
            return Some(hit);
        }
        inner.metrics.record(key.namespace, CacheEvent::L1Miss);
        inner.get_from_redis(key.namespace, at).await
    }

    async fn set(&self, key: &CacheKey, entry: CacheEntry) {
        let inner = &self.inner;
        let now = now_ms();
        let Some(ttl_ms) = entry.meta.evict_at_ms().checked_sub(now).filter(|&ttl| ttl > 0) else { return };
        let at = entry_key(key, inner.version(key.tenant, key.namespace).await);
        let expiry = Expiration::PX(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        let stored = Bytes::from(envelope::encode(&entry));
        inner.redis(&SET, inner.client.set::<(), _, _>(at.as_str(), stored, Some(expiry), None, false)).await;
        inner.l1.insert(at, entry);
    }

    async fn delete(&self, key: &CacheKey) {
        let inner = &self.inner;
        let version = inner.version(key.tenant, key.namespace).await;
        inner.l1.remove(&entry_key(key, version));
        inner.metrics.record(key.namespace, CacheEvent::KeyInvalidated);
        if !inner.delete_in_redis(key, version).await {
            inner.keep(PendingWrite::Key(key.clone()));
        }
    }

    async fn invalidate_namespace(&self, tenant: TenantId, namespace: &'static str) {
        let inner = &self.inner;
        inner.metrics.record(namespace, CacheEvent::NamespaceInvalidated);
        if !inner.invalidate_in_redis(tenant, namespace).await {
            // Locally at once (this node's entries become unreachable); everywhere on replay.
            inner.versions.bump_local(tenant, namespace);
            inner.keep(PendingWrite::Namespace(tenant, namespace));
        }
    }
}

impl Inner {
    fn new(client: Client, settings: CacheSettings) -> Self {
        Self {
            client,
            l1: L1::new(settings.l1_max_bytes, settings.l1_max_ttl),
            door: Doorkeeper::for_l1(settings.l1_max_bytes),
            versions: Versions::new(settings.version_ttl),
            settings,
            breaker: Breaker::new(BREAKER_OPEN),
            pending: Mutex::default(),
            replaying: AtomicBool::new(false),
            metrics: CacheMetrics::default(),
            redis_errors: metrics::counter!("sba_cache_redis_errors_total"),
            fallback_gauge: metrics::gauge!("sba_cache_fallback_active"),
        }
    }

    /// Runs `command` (a lazy fred future: nothing is sent unless it is polled) unless Redis
    /// is being skipped, observed as `operation` (one Redis round trip: a port call served by
    /// L1, or while the breaker is open, makes none); `None` on any failure, which opens the
    /// breaker.
    ///
    /// The bound is fred's own per-command timeout (`redis_timeout`, set on the client): a
    /// `tokio::time::timeout` around the response that also tells the connection the caller
    /// has gone.
    ///
    /// fred's command futures are large (about 5 KB): the command is boxed here, once, so
    /// the futures awaiting it stay small. Every `dyn Cache` call boxes its future, L1 hits
    /// included, and copies of a large one cost more than the hit itself.
    fn redis<T>(
        self: &Arc<Self>,
        operation: &'static Operation,
        command: impl Future<Output = Result<T, FredError>>,
    ) -> impl Future<Output = Option<T>> {
        let command = Box::pin(command);
        async move {
            if !self.breaker.allows() {
                return None;
            }
            let call = async {
                // fred would queue the command until it reconnects; the caller needs an answer
                // now.
                if !self.client.is_connected() {
                    return Err(FredError::new(ErrorKind::IO, "not connected to Redis"));
                }
                command.await
            };
            match observe::observed(operation, System::Redis, call).await {
                Ok(value) => {
                    self.succeeded();
                    Some(value)
                }
                // Redis answered, about a value the cache did not store (another type at the
                // key, or not a number at a version key): a miss, not an outage.
                Err(error) if matches!(error.kind(), ErrorKind::InvalidArgument | ErrorKind::Parse) => {
                    self.redis_errors.increment(1);
                    tracing::debug!(error = %error, "cache: unexpected value in Redis; treated as a miss");
                    None
                }
                Err(error) => {
                    self.failed(&format_args!("{:?}: {}", error.kind(), error.details()));
                    None
                }
            }
        }
    }

    /// The L2 half of [`Cache::get`], for an entry that L1 does not have.
    async fn get_from_redis(self: &Arc<Self>, namespace: &'static str, at: String) -> Option<CacheEntry> {
        let stored: Option<Bytes> = self.redis(&GET, self.client.get(at.as_str())).await?;
        let entry =
            stored.as_deref().and_then(envelope::decode).filter(|entry| entry.meta.evict_at_ms() > now_ms());
        let event = if entry.is_some() { CacheEvent::L2Hit } else { CacheEvent::L2Miss };
        self.metrics.record(namespace, event);
        let entry = entry?;
        if self.door.admit(&at) {
            self.l1.insert(at, entry.clone());
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_connection() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let cache = runtime.block_on(async {
            let url = SecretString::from("redis://user:hunter2@127.0.0.1:1");
            FredCache::connect(&url, CacheSettings::default()).await.unwrap()
        });
        let shown = format!("{cache:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
