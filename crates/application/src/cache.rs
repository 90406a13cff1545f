//! [`CachedNamespace`]: the one way services cache things (ADR 0007). Typed values over the
//! byte-level [`Cache`] port, with
//!
//! - **serialization** that is compact and versioned: `MessagePack` with field names (an added
//!   optional field or a removed one still reads), with the namespace's schema number in
//!   the entry's metadata (adapters store it next to the payload); anything that does not
//!   decode is a miss, never an error;
//! - **single flight**: concurrent misses for one key on one node run the loader once, the
//!   others wait for its result;
//! - **probabilistic early refresh** (XFetch): a reader refreshes an entry before it expires
//!   with a probability that rises as expiry nears and with the cost of the load
//!   (`now − load · β · ln(u) ≥ expiry`), so across nodes a hot key is reloaded by about one
//!   reader, not by every node at once;
//! - **adaptive TTL**: a reload that finds the value unchanged while its previous copy was
//!   still kept (read again within one base TTL of expiry) doubles the entry's TTL, up to
//!   the namespace's maximum; a changed value, a miss or an invalidation goes back to the
//!   base TTL. Every TTL gets up to 10 % jitter (downwards) so entries loaded together do
//!   not expire together;
//! - **stale on error**: when a reload fails and the previous value is still kept, it is
//!   served (and counted) instead of failing the request.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sba_domain::TenantId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use crate::ports::{Cache, CacheEntry, CacheKey, Clock, EntryMeta};

/// `XFetch`'s β: 1 as in the paper (larger refreshes earlier).
const EARLY_REFRESH_BETA: f64 = 1.0;
/// The largest share of a TTL removed by jitter.
const JITTER: f64 = 0.1;

/// How one namespace is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespacePolicy {
    /// A code constant; part of every key (`sba:c:{tenant}:{name}:v{n}:{key}`).
    pub name: &'static str,
    /// Bump when the cached type changes incompatibly: older entries then read as misses.
    pub schema: u16,
    /// The TTL of a new entry, and how long an expired one is kept for adaptive TTL and
    /// stale-on-error.
    pub ttl: Duration,
    /// The longest TTL adaptive TTL may reach.
    pub max_ttl: Duration,
}

/// Metric handles of one namespace, registered once.
struct NamespaceMetrics {
    loaded: metrics::Counter,
    load_failed: metrics::Counter,
    stale_served: metrics::Counter,
    early_refresh: metrics::Counter,
    load_seconds: metrics::Histogram,
}

impl NamespaceMetrics {
    fn new(namespace: &'static str) -> Self {
        let loads = |outcome: &'static str| metrics::counter!("sba_cache_loads_total", "namespace" => namespace, "outcome" => outcome);
        Self {
            loaded: loads("ok"),
            load_failed: loads("error"),
            stale_served: loads("stale_served"),
            early_refresh: metrics::counter!("sba_cache_early_refresh_total", "namespace" => namespace),
            load_seconds: metrics::histogram!("sba_cache_load_seconds", "namespace" => namespace),
        }
    }
}

/// Loads in progress on this node, one lock per key.
type Flights = Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>;

/// Typed, single-flight access to one namespace of the [`Cache`].
pub struct CachedNamespace<T> {
    cache: Arc<dyn Cache>,
    clock: Arc<dyn Clock>,
    policy: NamespacePolicy,
    flights: Arc<Flights>,
    metrics: Arc<NamespaceMetrics>,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for CachedNamespace<T> {
    fn clone(&self) -> Self {
        Self {
            cache: Arc::clone(&self.cache),
            clock: Arc::clone(&self.clock),
            policy: self.policy,
            flights: Arc::clone(&self.flights),
            metrics: Arc::clone(&self.metrics),
            _value: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for CachedNamespace<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedNamespace").field("policy", &self.policy).finish_non_exhaustive()
    }
}

/// What a read found.
enum Found<T> {
    /// Fresh, and not picked for early refresh.
    Fresh(Arc<T>, EntryMeta),
    /// Decodable but expired, or picked for early refresh: served if the reload fails.
    Refresh(Arc<T>, EntryMeta),
    Miss,
}

impl<T> CachedNamespace<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub fn new(cache: Arc<dyn Cache>, clock: Arc<dyn Clock>, policy: NamespacePolicy) -> Self {
        Self {
            cache,
            clock,
            policy,
            flights: Arc::default(),
            metrics: Arc::new(NamespaceMetrics::new(policy.name)),
            _value: PhantomData,
        }
    }

    pub const fn policy(&self) -> &NamespacePolicy {
        &self.policy
    }

    fn key(&self, tenant: TenantId, key: &str) -> CacheKey {
        CacheKey::new(tenant, self.policy.name, key)
    }

    /// The fresh value under `key`, if any (no load).
    pub async fn get(&self, tenant: TenantId, key: &str) -> Option<Arc<T>> {
        match self.read(&self.key(tenant, key), false).await {
            Found::Fresh(value, _) => Some(value),
            Found::Refresh(..) | Found::Miss => None,
        }
    }

    /// Stores `value` under `key` with the namespace's base TTL.
    pub async fn set(&self, tenant: TenantId, key: &str, value: &T) {
        self.store(&self.key(tenant, key), value, None, Duration::ZERO).await;
    }

    /// Drops `key` on every node.
    pub async fn delete(&self, tenant: TenantId, key: &str) {
        self.cache.delete(&self.key(tenant, key)).await;
    }

    /// Drops every key of this namespace for `tenant`, on every node, in O(1).
    pub async fn invalidate(&self, tenant: TenantId) {
        self.cache.invalidate_namespace(tenant, self.policy.name).await;
    }

    /// The value under `key`: cached when fresh, else loaded by `load` (once per node for
    /// concurrent callers) and stored.
    ///
    /// # Errors
    /// The loader's error, when it fails and no previous value is kept to serve instead.
    pub async fn get_or_load<E, F, Fut>(&self, tenant: TenantId, key: &str, load: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let key = self.key(tenant, key);
        let seen = match self.read(&key, true).await {
            Found::Fresh(value, _) => return Ok(value),
            Found::Refresh(value, meta) => Some((value, meta)),
            Found::Miss => None,
        };
        let flight = self.flight(&key);
        let guard = flight.lock().await;
        // Whoever held the lock before may have loaded it meanwhile (a fresh entry other
        // than the one that sent this caller to reload).
        let seen = match self.read(&key, false).await {
            Found::Fresh(value, meta) if seen.as_ref().is_none_or(|(_, old)| *old != meta) => {
                drop(guard);
                self.land(&key, &flight);
                return Ok(value);
            }
            // The entry this caller was sent to refresh early.
            Found::Fresh(..) => seen,
            Found::Refresh(value, meta) => Some((value, meta)),
            // Gone meanwhile (invalidated): nothing to serve or to compare with.
            Found::Miss => None,
        };
        let started = Instant::now();
        let outcome = load().await;
        let load_time = started.elapsed();
        self.metrics.load_seconds.record(load_time.as_secs_f64());
        let result = match outcome {
            Ok(value) => {
                self.metrics.loaded.increment(1);
                let value = Arc::new(value);
                self.store(&key, &value, seen.as_ref().map(|(_, meta)| meta), load_time).await;
                Ok(value)
            }
            Err(error) => {
                if let Some((stale, _)) = seen {
                    self.metrics.stale_served.increment(1);
                    tracing::warn!(
                        namespace = self.policy.name,
                        "cache reload failed; serving the previous value"
                    );
                    Ok(stale)
                } else {
                    self.metrics.load_failed.increment(1);
                    Err(error)
                }
            }
        };
        drop(guard);
        self.land(&key, &flight);
        result
    }

    async fn read(&self, key: &CacheKey, early_refresh: bool) -> Found<T> {
        let Some(entry) = self.cache.get(key).await else { return Found::Miss };
        if entry.meta.schema != self.policy.schema {
            return Found::Miss;
        }
        let Some(value) = decode::<T>(&entry) else { return Found::Miss };
        let now = self.now_ms();
        if now >= entry.meta.evict_at_ms() {
            return Found::Miss;
        }
        if now >= entry.meta.expires_at_ms {
            return Found::Refresh(value, entry.meta);
        }
        if early_refresh && refresh_early(&entry.meta, now, rand::random::<f64>()) {
            self.metrics.early_refresh.increment(1);
            return Found::Refresh(value, entry.meta);
        }
        Found::Fresh(value, entry.meta)
    }

    async fn store(&self, key: &CacheKey, value: &T, previous: Option<&EntryMeta>, load_time: Duration) {
        let payload = match rmp_serde::to_vec_named(value) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(namespace = self.policy.name, %error, "a value could not be serialized for the cache");
                return;
            }
        };
        let fingerprint = fingerprint(&payload);
        let base = millis(self.policy.ttl);
        let ttl = next_ttl(base, millis(self.policy.max_ttl), previous, self.policy.schema, fingerprint);
        let now = self.now_ms();
        let meta = EntryMeta {
            schema: self.policy.schema,
            stored_at_ms: now,
            expires_at_ms: now + jittered(ttl, rand::random::<f64>()),
            grace_ms: base,
            load_ms: u32::try_from(load_time.as_millis()).unwrap_or(u32::MAX),
            ttl_ms: ttl,
            fingerprint,
        };
        self.cache.set(key, CacheEntry::new(meta, payload)).await;
    }

    fn flight(&self, key: &CacheKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(flights.entry(key.clone()).or_default())
    }

    /// Forgets the key's lock once nobody else holds or awaits it.
    fn land(&self, key: &CacheKey, flight: &Arc<tokio::sync::Mutex<()>>) {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and the caller's: nobody else is waiting.
        if Arc::strong_count(flight) <= 2 {
            flights.remove(key);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0)
    }
}

/// The value in `entry`, decoded once per L1 entry and shared by later hits.
fn decode<T: DeserializeOwned + Send + Sync + 'static>(entry: &CacheEntry) -> Option<Arc<T>> {
    if let Some(decoded) = entry.decoded.get() {
        return Arc::clone(decoded).downcast::<T>().ok();
    }
    match rmp_serde::from_slice::<T>(&entry.payload) {
        Ok(value) => {
            let value = Arc::new(value);
            let _ = entry.decoded.set(Arc::clone(&value) as crate::ports::Decoded);
            Some(value)
        }
        Err(error) => {
            tracing::debug!(%error, "a cached value does not decode; treated as a miss");
            None
        }
    }
}

/// `XFetch`: refresh when `now − load · β · ln(u) ≥ expiry`, `u` uniform in (0, 1].
fn refresh_early(meta: &EntryMeta, now_ms: u64, u: f64) -> bool {
    let u = u.clamp(f64::MIN_POSITIVE, 1.0);
    #[allow(clippy::cast_precision_loss, reason = "milliseconds far below 2^52")]
    let lead = f64::from(meta.load_ms.max(1)) * EARLY_REFRESH_BETA * -u.ln();
    #[allow(clippy::cast_precision_loss, reason = "milliseconds far below 2^52")]
    let reached = now_ms as f64 + lead >= meta.expires_at_ms as f64;
    reached
}

/// The TTL of a reloaded value: doubled (up to `max`) when it equals the previous one
/// (same schema and fingerprint), else `base`.
fn next_ttl(base: u64, max: u64, previous: Option<&EntryMeta>, schema: u16, fingerprint: u64) -> u64 {
    match previous {
        Some(prev) if prev.schema == schema && prev.fingerprint == fingerprint => {
            prev.ttl_ms.max(base).saturating_mul(2).min(max.max(base))
        }
        _ => base,
    }
}

/// `ttl` less up to [`JITTER`] of it (`u` uniform in [0, 1)); at least 1 ms.
fn jittered(ttl: u64, u: f64) -> u64 {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a share of a TTL in milliseconds, far below 2^52"
    )]
    let cut = (ttl as f64 * JITTER * u.clamp(0.0, 1.0)) as u64;
    ttl.saturating_sub(cut).max(1)
}

fn fingerprint(payload: &[u8]) -> u64 {
    let digest = Sha256::digest(payload);
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

    use uuid::Uuid;

    use super::*;
    use crate::ports::MockCache;
    use crate::testing::{MapCache, TestClock};

    const POLICY: NamespacePolicy = NamespacePolicy {
        name: "test",
        schema: 1,
        ttl: Duration::from_mins(1),
        max_ttl: Duration::from_mins(5),
    };

    fn setup() -> (Arc<MapCache>, Arc<TestClock>, CachedNamespace<String>) {
        let cache = Arc::new(MapCache::default());
        let clock = Arc::new(TestClock(AtomicI64::new(1_800_000_000_000)));
        let cached = CachedNamespace::new(cache.clone(), clock.clone(), POLICY);
        (cache, clock, cached)
    }

    fn tenant() -> TenantId {
        TenantId::from_uuid(Uuid::now_v7())
    }

    /// What `readers` concurrent readers of key `k` get, each miss loading `value` slowly
    /// (50 ms) and counting the load in `calls`.
    async fn concurrent_loads(
        cached: &CachedNamespace<String>,
        tenant: TenantId,
        readers: usize,
        value: &'static str,
        calls: &Arc<AtomicU32>,
    ) -> Vec<String> {
        let tasks: Vec<_> = (0..readers)
            .map(|_| {
                let (cached, calls) = (cached.clone(), Arc::clone(calls));
                tokio::spawn(async move {
                    let got: Result<_, ()> = cached
                        .get_or_load(tenant, "k", || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(value.to_owned())
                        })
                        .await;
                    got.unwrap().as_ref().clone()
                })
            })
            .collect();
        let mut got = Vec::with_capacity(readers);
        for task in tasks {
            got.push(task.await.unwrap());
        }
        got
    }

    async fn load(
        cached: &CachedNamespace<String>,
        tenant: TenantId,
        value: &str,
        calls: &AtomicU32,
    ) -> String {
        let value = value.to_owned();
        let got: Result<_, ()> = cached
            .get_or_load(tenant, "k", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(value)
            })
            .await;
        got.unwrap().as_ref().clone()
    }

    fn stored_meta(cache: &MapCache) -> EntryMeta {
        cache.0.lock().unwrap().values().next().unwrap().meta
    }

    #[tokio::test]
    async fn a_miss_loads_and_stores_and_the_next_read_is_a_hit() {
        let (cache, _, cached) = setup();
        let (t, calls) = (tenant(), AtomicU32::new(0));
        assert_eq!(load(&cached, t, "v1", &calls).await, "v1");
        assert_eq!(load(&cached, t, "v2", &calls).await, "v1", "cached");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cached.get(t, "k").await.as_deref().map(String::as_str), Some("v1"));
        let meta = stored_meta(&cache);
        assert_eq!(meta.ttl_ms, 60_000);
        assert!(
            (54_000..=60_000).contains(&(meta.expires_at_ms - meta.stored_at_ms)),
            "jitter ≤ 10 %: {meta:?}"
        );
        assert_eq!(meta.grace_ms, 60_000);
    }

    #[tokio::test]
    async fn concurrent_misses_on_one_node_run_the_loader_once() {
        let (_, _, cached) = setup();
        let t = tenant();
        let calls = Arc::new(AtomicU32::new(0));
        for got in concurrent_loads(&cached, t, 50, "loaded", &calls).await {
            assert_eq!(got, "loaded");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(cached.flights.lock().unwrap().is_empty(), "no lock left behind");
    }

    #[tokio::test]
    async fn concurrent_readers_of_an_expired_entry_reload_it_once_and_share_the_new_value() {
        let (_, clock, cached) = setup();
        let t = tenant();
        let calls = Arc::new(AtomicU32::new(0));
        load(&cached, t, "old", &calls).await;
        clock.advance(61_000);
        for got in concurrent_loads(&cached, t, 20, "new", &calls).await {
            assert_eq!(got, "new");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the first load, then one reload for all twenty");
    }

    #[tokio::test]
    async fn a_reader_picked_for_early_refresh_reloads_the_entry_while_it_is_still_fresh() {
        let (cache, clock, cached) = setup();
        let (t, calls) = (tenant(), AtomicU32::new(0));
        load(&cached, t, "old", &calls).await;
        // A load that took u32::MAX ms, read 1 ms before expiry: XFetch picks the reader
        // unless its draw u is within 2.3e-10 of 1 (−ln u · load must reach 1 ms).
        let expires_at_ms = {
            let mut entries = cache.0.lock().unwrap();
            let entry = entries.values_mut().next().unwrap();
            entry.meta.load_ms = u32::MAX;
            entry.meta.expires_at_ms
        };
        clock.0.store(i64::try_from(expires_at_ms).unwrap() - 1, Ordering::SeqCst);
        assert_eq!(cached.get(t, "k").await.as_deref().map(String::as_str), Some("old"), "still fresh");
        assert_eq!(load(&cached, t, "new", &calls).await, "new", "reloaded before it expired");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(cached.get(t, "k").await.as_deref().map(String::as_str), Some("new"));
    }

    #[test]
    fn debug_output_shows_the_namespace_policy() {
        let (_, _, cached) = setup();
        let debug = format!("{cached:?}");
        assert!(
            debug.starts_with("CachedNamespace")
                && debug.contains(r#"name: "test""#)
                && debug.contains("schema: 1"),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn an_expired_entry_is_reloaded_and_served_stale_if_the_reload_fails() {
        let (_, clock, cached) = setup();
        let (t, calls) = (tenant(), AtomicU32::new(0));
        load(&cached, t, "old", &calls).await;
        clock.advance(61_000);
        assert!(cached.get(t, "k").await.is_none(), "expired is not fresh");
        let failed: Result<_, &str> = cached.get_or_load(t, "k", || async { Err("source down") }).await;
        assert_eq!(failed.unwrap().as_str(), "old", "stale within the grace period");
        clock.advance(60_000);
        let failed: Result<Arc<String>, &str> =
            cached.get_or_load(t, "k", || async { Err("source down") }).await;
        assert_eq!(failed.unwrap_err(), "source down", "past the grace period nothing is served");
    }

    #[tokio::test]
    async fn unchanged_reloads_double_the_ttl_up_to_the_maximum_and_a_change_resets_it() {
        let (cache, clock, cached) = setup();
        let (t, calls) = (tenant(), AtomicU32::new(0));
        load(&cached, t, "same", &calls).await;
        let mut ttls = Vec::new();
        for _ in 0..4 {
            clock.advance(i64::try_from(stored_meta(&cache).ttl_ms).unwrap() + 1);
            load(&cached, t, "same", &calls).await;
            ttls.push(stored_meta(&cache).ttl_ms);
        }
        assert_eq!(ttls, [120_000, 240_000, 300_000, 300_000]);
        clock.advance(300_001);
        load(&cached, t, "changed", &calls).await;
        assert_eq!(stored_meta(&cache).ttl_ms, 60_000);
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn a_reload_after_the_grace_period_starts_again_at_the_base_ttl() {
        let (cache, clock, cached) = setup();
        let (t, calls) = (tenant(), AtomicU32::new(0));
        load(&cached, t, "same", &calls).await;
        clock.advance(121_000); // expired and past its grace: read rarely
        load(&cached, t, "same", &calls).await;
        assert_eq!(stored_meta(&cache).ttl_ms, 60_000);
    }

    #[tokio::test]
    async fn entries_of_another_schema_or_undecodable_payloads_are_misses() {
        let (cache, _, cached) = setup();
        let (t, calls) = (tenant(), AtomicU32::new(0));
        load(&cached, t, "v1", &calls).await;
        let other: CachedNamespace<String> = CachedNamespace::new(
            cache.clone(),
            Arc::new(TestClock(AtomicI64::new(1_800_000_000_000))),
            NamespacePolicy { schema: 2, ..POLICY },
        );
        assert!(other.get(t, "k").await.is_none(), "schema 2 does not read schema 1");
        let numbers: CachedNamespace<u64> = CachedNamespace::new(
            cache.clone(),
            Arc::new(TestClock(AtomicI64::new(1_800_000_000_000))),
            POLICY,
        );
        assert!(numbers.get(t, "k").await.is_none(), "a string does not decode as a number");
    }

    #[tokio::test]
    async fn invalidation_and_delete_go_to_the_port() {
        let mut cache = MockCache::new();
        cache.expect_delete().withf(|k| k.namespace == "test" && k.key == "k").times(1).return_const(());
        cache.expect_invalidate_namespace().withf(|_, ns| ns == "test").times(1).return_const(());
        let cached: CachedNamespace<String> =
            CachedNamespace::new(Arc::new(cache), Arc::new(TestClock(AtomicI64::new(0))), POLICY);
        cached.delete(tenant(), "k").await;
        cached.invalidate(tenant()).await;
    }

    #[tokio::test]
    async fn a_cache_that_keeps_nothing_serves_every_call_from_the_loader_without_failing() {
        // A store outage: reads miss and writes are lost (the port never fails a caller).
        let mut cache = MockCache::new();
        cache.expect_get().returning(|_| None);
        cache.expect_set().times(3).return_const(());
        let cached: CachedNamespace<String> =
            CachedNamespace::new(Arc::new(cache), Arc::new(TestClock::at(1_800_000_000_000)), POLICY);
        let (t, calls) = (tenant(), AtomicU32::new(0));
        for _ in 0..3 {
            assert_eq!(load(&cached, t, "from the source", &calls).await, "from the source");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3, "one load per call");
        assert!(cached.get(t, "k").await.is_none());
    }

    #[tokio::test]
    async fn a_failed_load_on_a_miss_is_the_loaders_error_and_stores_nothing() {
        let mut cache = MockCache::new();
        cache.expect_get().returning(|_| None);
        cache.expect_set().never();
        let cached: CachedNamespace<String> =
            CachedNamespace::new(Arc::new(cache), Arc::new(TestClock::at(1_800_000_000_000)), POLICY);
        let failed: Result<Arc<String>, &str> =
            cached.get_or_load(tenant(), "k", || async { Err("source down") }).await;
        assert_eq!(failed.unwrap_err(), "source down");
        assert!(cached.flights.lock().unwrap().is_empty(), "no lock left behind");
    }

    #[tokio::test]
    async fn an_entry_of_another_schema_is_never_served_stale_when_the_load_fails() {
        let (cache, _, cached) = setup();
        let t = tenant();
        cached.set(t, "k", &"old".to_owned()).await;
        let newer: CachedNamespace<String> = CachedNamespace::new(
            cache.clone(),
            Arc::new(TestClock::at(1_800_000_000_000)),
            NamespacePolicy { schema: 2, ..POLICY },
        );
        let failed: Result<Arc<String>, &str> =
            newer.get_or_load(t, "k", || async { Err("source down") }).await;
        assert_eq!(failed.unwrap_err(), "source down");
    }

    #[test]
    fn early_refresh_grows_likelier_near_expiry_and_with_slower_loads() {
        let meta = |load_ms| EntryMeta {
            schema: 1,
            stored_at_ms: 0,
            expires_at_ms: 10_000,
            grace_ms: 0,
            load_ms,
            ttl_ms: 10_000,
            fingerprint: 0,
        };
        // -ln(0.5) ≈ 0.69: a 100 ms load refreshes within ~69 ms of expiry at this draw.
        assert!(!refresh_early(&meta(100), 9_900, 0.5));
        assert!(refresh_early(&meta(100), 9_950, 0.5));
        assert!(!refresh_early(&meta(100), 9_999, 1.0), "u = 1: never before expiry");
        assert!(refresh_early(&meta(100), 10_000, 1.0), "at expiry: always");
        assert!(refresh_early(&meta(5_000), 7_000, 0.5), "slow loads refresh earlier");
        assert!(
            refresh_early(&meta(1), 9_500, 0.0),
            "u → 0: the tail, bounded (−ln of the smallest f64 ≈ 708)"
        );
        assert!(!refresh_early(&meta(1), 9_000, 0.0));
    }

    #[test]
    fn jitter_removes_at_most_a_tenth() {
        assert_eq!(jittered(60_000, 0.0), 60_000);
        assert_eq!(jittered(60_000, 0.999_999), 54_001);
        assert_eq!(jittered(1, 0.5), 1);
    }
}
