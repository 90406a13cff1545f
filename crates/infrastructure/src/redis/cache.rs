//! `FredCache`: the two-tier [`Cache`] of ADR 0007, an in-process L1 in front of Redis (L2),
//! with namespace versions and cross-node invalidation over pub/sub.
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
//! `sba_cache_invalidations_total{namespace, scope}`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use async_trait::async_trait;
use fred::bytes::Bytes;
use fred::clients::{Client, SubscriberClient};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike as _, EventInterface as _, KeysInterface as _, PubsubInterface as _};
use fred::types::config::Server;
use fred::types::{ConnectHandle, Expiration, Message};
use sba_application::breaker::Breaker;
use sba_application::ports::{Cache, CacheEntry, CacheKey};
use sba_domain::TenantId;
use secrecy::SecretString;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::connection::{self, ConnectionOptions};
use crate::memory::CacheSettings;
use crate::memory::l1::{
    CacheEvent, CacheMetrics, Doorkeeper, L1, entry_key, now_ms, version_key, versioned_key,
};

/// The pub/sub channel of invalidation messages.
pub const INVALIDATION_CHANNEL: &str = "sba:c:invalidate";
/// How long Redis is skipped after a failure.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);
/// Deletes and invalidations kept for replay while Redis is unreachable, at most.
pub const MAX_PENDING: usize = 10_000;
/// How long [`FredCache::connect`] waits for Redis, and the bound on opening a connection
/// or subscribing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Namespace versions a node holds at most; beyond that it forgets them (they are read
/// again).
const MAX_VERSIONS: usize = 100_000;
/// Invalidation messages buffered between the connection and the task applying them;
/// beyond that messages are lost and the node forgets its versions and L1.
const MESSAGE_BUFFER: usize = 4096;

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
        match tokio::time::timeout(Duration::from_secs(1), self.client.ping::<()>(None)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(anyhow!("PING failed: {}", error.kind().to_str())),
            Err(_) => Err(anyhow!("PING took longer than 1 s")),
        }
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
        let stored = Bytes::from(entry.to_bytes());
        inner.redis(inner.client.set::<(), _, _>(at.as_str(), stored, Some(expiry), None, false)).await;
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
    /// is being skipped; `None` on any failure, which opens the breaker.
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
        command: impl Future<Output = Result<T, FredError>>,
    ) -> impl Future<Output = Option<T>> {
        let command = Box::pin(command);
        async move {
            if !self.breaker.allows() {
                return None;
            }
            // fred would queue the command until it reconnects; the caller needs an answer now.
            if !self.client.is_connected() {
                self.failed(&"not connected to Redis");
                return None;
            }
            match command.await {
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

    fn failed(&self, error: &dyn fmt::Display) {
        self.redis_errors.increment(1);
        if self.breaker.record_failure() {
            self.fallback_gauge.set(1.0);
            tracing::warn!(error = %error, "cache: Redis is unreachable; serving from L1 only until it answers");
        }
    }

    fn succeeded(self: &Arc<Self>) {
        if self.breaker.record_success() {
            self.fallback_gauge.set(0.0);
            tracing::info!("cache: Redis answers again; L2 is back");
            if !self.pending_is_empty() {
                // Entries this node kept across its own invalidations (the version it bumped
                // locally is replaced by Redis's) must not be served again.
                self.l1.clear();
                tokio::spawn(Arc::clone(self).replay());
            }
        }
    }

    /// The namespace's current version: the node's copy while trusted, else Redis's; when
    /// Redis does not answer, the node's copy however old (0 if it has none).
    async fn version(self: &Arc<Self>, tenant: TenantId, namespace: &'static str) -> u64 {
        match self.versions.known(tenant, namespace) {
            Known::Trusted(version) => version,
            Known::Unsure(local) => self.read_version(tenant, namespace, local).await,
        }
    }

    async fn read_version(
        self: &Arc<Self>,
        tenant: TenantId,
        namespace: &'static str,
        local: Option<u64>,
    ) -> u64 {
        match self.redis(self.client.get::<Option<u64>, _>(version_key(tenant, namespace))).await {
            Some(stored) => {
                let version = stored.unwrap_or(0);
                self.versions.confirm(tenant, namespace, version);
                version
            }
            None => local.unwrap_or(0),
        }
    }

    /// The L2 half of [`Cache::get`], for an entry that L1 does not have.
    async fn get_from_redis(self: &Arc<Self>, namespace: &'static str, at: String) -> Option<CacheEntry> {
        let stored: Option<Bytes> = self.redis(self.client.get(at.as_str())).await?;
        let entry = stored
            .as_deref()
            .and_then(CacheEntry::from_bytes)
            .filter(|entry| entry.meta.evict_at_ms() > now_ms());
        let event = if entry.is_some() { CacheEvent::L2Hit } else { CacheEvent::L2Miss };
        self.metrics.record(namespace, event);
        let entry = entry?;
        if self.door.admit(&at) {
            self.l1.insert(at, entry.clone());
        }
        Some(entry)
    }

    /// `DEL` of the entry and the message that removes it from other nodes' L1, in one round
    /// trip.
    async fn delete_in_redis(self: &Arc<Self>, key: &CacheKey, version: u64) -> bool {
        let message = format!("k|{}|{}|{version}|{}", key.tenant, key.namespace, key.key);
        let pipeline = self.client.pipeline();
        let command = async {
            pipeline.del::<(), _>(entry_key(key, version)).await?;
            pipeline.publish::<(), _, _>(INVALIDATION_CHANNEL, message).await?;
            pipeline.all::<()>().await
        };
        self.redis(command).await.is_some()
    }

    /// `INCR` of the namespace's version, then the message that moves every node to it.
    async fn invalidate_in_redis(self: &Arc<Self>, tenant: TenantId, namespace: &'static str) -> bool {
        let Some(version) = self.redis(self.client.incr::<u64, _>(version_key(tenant, namespace))).await
        else {
            return false;
        };
        if !self.versions.advance(tenant, namespace, version) {
            self.versions.confirm(tenant, namespace, version);
        }
        let message = format!("n|{tenant}|{namespace}|{version}");
        self.redis(self.client.publish::<(), _, _>(INVALIDATION_CHANNEL, message)).await.is_some()
    }

    fn keep(&self, write: PendingWrite) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.writes.len() >= MAX_PENDING && !pending.writes.contains(&write) {
            if !pending.overflowed {
                pending.overflowed = true;
                tracing::warn!(
                    max = MAX_PENDING,
                    "cache: too many invalidations are waiting for Redis; later ones are dropped, and \
                     other nodes may serve what they invalidate until it expires"
                );
            }
            return;
        }
        if pending.writes.is_empty() {
            tracing::warn!(
                "cache: invalidations cannot reach Redis; they are kept and replayed when it answers"
            );
        }
        pending.writes.insert(write);
    }

    fn pending_is_empty(&self) -> bool {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).writes.is_empty()
    }

    /// Sends the kept deletes and invalidations, one at a time, until done or Redis fails
    /// again (the rest then waits for the next recovery).
    async fn replay(self: Arc<Self>) {
        while !self.replaying.swap(true, Ordering::AcqRel) {
            let writes: Vec<PendingWrite> = {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                pending.overflowed = false;
                pending.writes.drain().collect()
            };
            let total = writes.len();
            let mut writes = writes.into_iter();
            let mut replayed = 0_usize;
            for write in writes.by_ref() {
                let sent = match &write {
                    PendingWrite::Namespace(tenant, namespace) => {
                        self.invalidate_in_redis(*tenant, namespace).await
                    }
                    PendingWrite::Key(key) => {
                        let version = self.version(key.tenant, key.namespace).await;
                        self.delete_in_redis(key, version).await
                    }
                };
                if !sent {
                    let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                    pending.writes.insert(write);
                    break;
                }
                replayed += 1;
            }
            self.pending.lock().unwrap_or_else(PoisonError::into_inner).writes.extend(writes);
            self.replaying.store(false, Ordering::Release);
            if total > 0 {
                tracing::info!(
                    replayed,
                    left = total - replayed,
                    "cache: replayed invalidations kept during the outage"
                );
            }
            // More may have been kept meanwhile; a failure waits for the next recovery.
            if replayed < total || self.pending_is_empty() {
                return;
            }
        }
    }

    /// Forgets what may have been invalidated without this node hearing of it.
    fn forget(&self, reason: &str) {
        tracing::debug!(reason, "cache: dropping L1 and namespace versions");
        self.versions.clear();
        self.l1.clear();
    }

    fn receive(&self, message: &Message) {
        if let Some(Ok(text)) = message.value.as_bytes().map(std::str::from_utf8) {
            self.apply(text);
        } else {
            tracing::debug!("cache: ignoring a non-text invalidation message");
        }
    }

    fn apply(&self, message: &str) {
        match Invalidation::parse(message) {
            Some(Invalidation::Namespace { tenant, namespace, version }) => {
                self.versions.advance(tenant, namespace, version);
            }
            Some(Invalidation::Key { tenant, namespace, version, key }) => {
                self.l1.remove(&versioned_key(tenant, namespace, version, key));
                if let Some(own) = self.versions.local(tenant, namespace)
                    && own != version
                {
                    self.l1.remove(&versioned_key(tenant, namespace, own, key));
                }
            }
            None => tracing::debug!(
                message = message.chars().take(200).collect::<String>(),
                "cache: ignoring a malformed invalidation message"
            ),
        }
    }
}

/// The streams the watcher follows.
struct Events {
    messages: Receiver<Message>,
    subscriber_up: Receiver<Server>,
    client_up: Receiver<Server>,
}

/// Applies invalidation messages; on every (re)connection, subscribes again (fred's
/// `manage_subscriptions` would too, but the node must forget after the subscription is
/// back, not before, or it could miss a message in between), forgets, and replays what
/// was kept.
async fn watch(inner: Arc<Inner>, subscriber: SubscriberClient, mut events: Events) {
    loop {
        tokio::select! {
            message = events.messages.recv() => match message {
                Ok(message) if message.channel == INVALIDATION_CHANNEL => inner.receive(&message),
                Ok(_other_channel) => {}
                Err(RecvError::Lagged(_)) => inner.forget("invalidation messages were dropped"),
                Err(RecvError::Closed) => return,
            },
            up = events.subscriber_up.recv() => {
                if matches!(up, Err(RecvError::Closed)) {
                    return;
                }
                subscribe(&subscriber).await;
                inner.forget("the subscriber reconnected");
            },
            up = events.client_up.recv() => {
                if matches!(up, Err(RecvError::Closed)) {
                    return;
                }
                inner.forget("the client reconnected");
                tokio::spawn(Arc::clone(&inner).replay());
            },
        }
    }
}

/// Subscribes to the invalidation channel, retrying every second while the connection is
/// up (the first failure is a warning, later ones are debug lines).
async fn subscribe(subscriber: &SubscriberClient) {
    let mut failures = 0_u32;
    while subscriber.is_connected() {
        let error =
            match tokio::time::timeout(CONNECT_TIMEOUT, subscriber.subscribe(INVALIDATION_CHANNEL)).await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error.to_string(),
                Err(_elapsed) => "no answer in time".to_owned(),
            };
        failures += 1;
        if failures == 1 {
            tracing::warn!(error, "cache: cannot subscribe to invalidations; retrying every second");
        } else {
            tracing::debug!(error, failures, "cache: cannot subscribe to invalidations yet");
        }
        tokio::time::sleep(CONNECT_TIMEOUT).await;
    }
}

/// A message on [`INVALIDATION_CHANNEL`].
#[derive(Debug, PartialEq, Eq)]
enum Invalidation<'a> {
    Namespace { tenant: TenantId, namespace: &'a str, version: u64 },
    Key { tenant: TenantId, namespace: &'a str, version: u64, key: &'a str },
}

impl<'a> Invalidation<'a> {
    fn parse(message: &'a str) -> Option<Self> {
        let mut parts = message.splitn(5, '|');
        let kind = parts.next()?;
        let tenant = parts.next()?.parse().ok()?;
        let namespace = parts.next()?;
        let version = parts.next()?.parse().ok()?;
        match (kind, parts.next()) {
            ("n", None) => Some(Self::Namespace { tenant, namespace, version }),
            ("k", Some(key)) => Some(Self::Key { tenant, namespace, version, key }),
            _ => None,
        }
    }
}

/// A delete or invalidation waiting for Redis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PendingWrite {
    Namespace(TenantId, &'static str),
    Key(CacheKey),
}

#[derive(Debug, Default)]
struct Pending {
    writes: HashSet<PendingWrite>,
    /// Whether a write was dropped since the last replay (logged once).
    overflowed: bool,
}

/// The namespace versions this node knows.
struct Versions {
    started: Instant,
    trust_ms: u64,
    map: RwLock<HashMap<(TenantId, &'static str), Version>>,
}

#[derive(Default)]
struct Version {
    value: AtomicU64,
    /// When Redis last confirmed `value` (milliseconds since `started`, plus one); 0: read it
    /// again before trusting it.
    confirmed_at: AtomicU64,
}

/// What [`Versions::known`] found.
enum Known {
    Trusted(u64),
    /// Not confirmed lately: the node's copy, if any.
    Unsure(Option<u64>),
}

impl Versions {
    fn new(trust: Duration) -> Self {
        Self {
            started: Instant::now(),
            trust_ms: u64::try_from(trust.as_millis()).unwrap_or(u64::MAX),
            map: RwLock::default(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<(TenantId, &'static str), Version>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks a namespace up by any `&str` (messages carry it as text): a map of
    /// `&'static str` keys is also a map of shorter-lived ones, for reading.
    fn find<'s, R>(&self, tenant: TenantId, namespace: &'s str, f: impl FnOnce(&Version) -> R) -> Option<R> {
        let map = self.read();
        let map: &HashMap<(TenantId, &'s str), Version> = &map;
        map.get(&(tenant, namespace)).map(f)
    }

    fn known(&self, tenant: TenantId, namespace: &str) -> Known {
        let now = self.now();
        self.find(tenant, namespace, |version| {
            let value = version.value.load(Ordering::Acquire);
            let confirmed_at = version.confirmed_at.load(Ordering::Acquire);
            if confirmed_at != 0 && now.saturating_sub(confirmed_at) < self.trust_ms {
                Known::Trusted(value)
            } else {
                Known::Unsure(Some(value))
            }
        })
        .unwrap_or(Known::Unsure(None))
    }

    fn local(&self, tenant: TenantId, namespace: &str) -> Option<u64> {
        self.find(tenant, namespace, |version| version.value.load(Ordering::Acquire))
    }

    /// What Redis holds: it replaces the node's copy.
    fn confirm(&self, tenant: TenantId, namespace: &'static str, value: u64) {
        let now = self.now();
        self.upsert(tenant, namespace, |version| {
            version.value.store(value, Ordering::Release);
            version.confirmed_at.store(now, Ordering::Release);
        });
    }

    /// A newer version (announced, or made by this node's `INCR`): applied when greater.
    /// `false` when the node does not know the namespace (it reads it when needed).
    fn advance(&self, tenant: TenantId, namespace: &str, value: u64) -> bool {
        let now = self.now();
        self.find(tenant, namespace, |version| {
            if version.value.fetch_max(value, Ordering::AcqRel) <= value {
                version.confirmed_at.store(now, Ordering::Release);
            }
        })
        .is_some()
    }

    /// An invalidation that could not reach Redis: a version of this node's own, read
    /// again from Redis as soon as it answers.
    fn bump_local(&self, tenant: TenantId, namespace: &'static str) {
        self.upsert(tenant, namespace, |version| {
            version.value.fetch_add(1, Ordering::AcqRel);
            version.confirmed_at.store(0, Ordering::Release);
        });
    }

    fn upsert(&self, tenant: TenantId, namespace: &'static str, f: impl Fn(&Version)) {
        if self.find(tenant, namespace, &f).is_some() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_VERSIONS && !map.contains_key(&(tenant, namespace)) {
            map.clear();
        }
        f(map.entry((tenant, namespace)).or_default());
    }

    fn clear(&self) {
        self.map.write().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn invalidation_messages_are_parsed_defensively() {
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        assert_eq!(
            Invalidation::parse(&format!("n|{tenant}|run|7")),
            Some(Invalidation::Namespace { tenant, namespace: "run", version: 7 })
        );
        assert_eq!(
            Invalidation::parse(&format!("k|{tenant}|run|7|a|b")),
            Some(Invalidation::Key { tenant, namespace: "run", version: 7, key: "a|b" })
        );
        for bad in [
            String::new(),
            "n".to_owned(),
            format!("n|{tenant}|run"),
            format!("n|{tenant}|run|x"),
            format!("n|{tenant}|run|7|extra"),
            format!("k|{tenant}|run|7"),
            "n|not-a-tenant|run|7".to_owned(),
            format!("x|{tenant}|run|7"),
        ] {
            assert_eq!(Invalidation::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_are_trusted_for_a_while_and_only_move_forward_on_messages() {
        let versions = Versions::new(Duration::from_millis(500));
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        assert!(matches!(versions.known(tenant, "run"), Known::Unsure(None)));
        assert!(!versions.advance(tenant, "run", 3), "unknown namespaces are read when needed");
        versions.confirm(tenant, "run", 5);
        assert!(matches!(versions.known(tenant, "run"), Known::Trusted(5)));
        assert!(versions.advance(tenant, "run", 4));
        assert!(matches!(versions.known(tenant, "run"), Known::Trusted(5)));
        assert!(versions.advance(tenant, &String::from("run"), 6));
        assert!(matches!(versions.known(tenant, "run"), Known::Trusted(6)));
        std::thread::sleep(Duration::from_millis(550));
        assert!(matches!(versions.known(tenant, "run"), Known::Unsure(Some(6))));
        versions.bump_local(tenant, "run");
        assert!(matches!(versions.known(tenant, "run"), Known::Unsure(Some(7))));
        versions.confirm(tenant, "run", 2);
        assert!(matches!(versions.known(tenant, "run"), Known::Trusted(2)), "Redis is the authority");
    }

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
