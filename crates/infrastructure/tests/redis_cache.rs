#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! `FredCache` against the test Redis (`SBA_TEST_REDIS_URL`): two caches on one Redis play
//! two nodes. Every test uses a tenant of its own (a UUIDv7), so tests run in parallel; the
//! outage test runs its own `redis-server` on a free port, so stopping it disturbs nobody.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::{ClientLike as _, KeysInterface as _};
use fred::types::Builder;
use fred::types::config::Config;
use sba_application::ports::{Cache, CacheEntry, CacheKey, EntryMeta};
use sba_domain::TenantId;
use sba_infrastructure::cache::{CacheSettings, FredCache, entry_key, envelope, version_key};
use sba_infrastructure::redis::test_support::{PrivateRedis, redis_url};
use secrecy::SecretString;
use uuid::Uuid;

/// Generous bounds: parallel tests and builds share the machine, and these tests check
/// behaviour, not latency.
fn settings() -> CacheSettings {
    CacheSettings { redis_timeout: Duration::from_secs(1), ..CacheSettings::default() }
}

async fn node_on(url: &str, settings: CacheSettings) -> FredCache {
    FredCache::connect(&SecretString::from(url.to_owned()), settings).await.expect("a usable Redis URL")
}

async fn node() -> FredCache {
    node_on(&redis_url(), settings()).await
}

async fn raw_client(url: &str) -> Client {
    let client = Builder::from_config(Config::from_url(url).unwrap()).build().unwrap();
    client.init().await.unwrap();
    client
}

fn tenant() -> TenantId {
    TenantId::from_uuid(Uuid::now_v7())
}

/// An entry that stores evict `evict_in_ms` from now.
fn entry(payload: &str, evict_in_ms: u64) -> CacheEntry {
    let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
    let meta = EntryMeta {
        schema: 1,
        stored_at_ms: now,
        expires_at_ms: now + evict_in_ms / 2,
        grace_ms: evict_in_ms - evict_in_ms / 2,
        load_ms: 3,
        ttl_ms: evict_in_ms / 2,
        fingerprint: 42,
    };
    CacheEntry::new(meta, payload.as_bytes().to_vec())
}

async fn payload(cache: &FredCache, key: &CacheKey) -> Option<String> {
    cache.get(key).await.map(|entry| String::from_utf8(entry.payload.to_vec()).unwrap())
}

/// Polls `cache` until `key` reads as `expected`, for at most two seconds.
async fn eventually(cache: &FredCache, key: &CacheKey, expected: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let read = payload(cache, key).await;
        if read.as_deref() == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{key:?} still reads {read:?}, not {expected:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_set_entry_is_an_l1_hit_on_its_node_and_an_l2_hit_on_another() {
    let (a, b) = (node().await, node().await);
    let key = CacheKey::new(tenant(), "run", "r-1");
    a.set(&key, entry("one", 60_000)).await;

    let first = a.get(&key).await.unwrap();
    assert_eq!(&*first.payload, b"one");
    first.decoded.set(Arc::new(1_u8)).unwrap();
    let again = a.get(&key).await.unwrap();
    assert!(Arc::ptr_eq(&first.decoded, &again.decoded), "an L1 hit shares the decoded value");

    let from_l2 = b.get(&key).await.expect("another node reads it from Redis");
    assert_eq!(&*from_l2.payload, b"one");
    assert_eq!(from_l2.meta, first.meta);
    assert!(from_l2.decoded.get().is_none(), "decoded values stay on their node");
    // The doorkeeper: a key read once from Redis is not kept in L1, a key read twice is.
    let second = b.get(&key).await.unwrap();
    assert!(!Arc::ptr_eq(&from_l2.decoded, &second.decoded), "read once: not kept in L1");
    let from_b_l1 = b.get(&key).await.unwrap();
    assert!(Arc::ptr_eq(&second.decoded, &from_b_l1.decoded), "read twice: kept in L1");
}

#[tokio::test]
async fn a_key_never_set_is_a_miss() {
    let cache = node().await;
    assert!(cache.get(&CacheKey::new(tenant(), "run", "nothing")).await.is_none());
}

#[tokio::test]
async fn entries_past_their_eviction_time_are_misses_on_every_node() {
    let (a, b) = (node().await, node().await);
    let key = CacheKey::new(tenant(), "run", "short");
    a.set(&key, entry("short", 300)).await;
    assert_eq!(payload(&b, &key).await.as_deref(), Some("short"));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(a.get(&key).await.is_none(), "L1 of the writer");
    assert!(b.get(&key).await.is_none(), "L1 of a reader");
    assert!(node().await.get(&key).await.is_none(), "Redis");
}

#[tokio::test]
async fn an_entry_already_past_eviction_is_not_stored() {
    let cache = node().await;
    let key = CacheKey::new(tenant(), "run", "late");
    let mut late = entry("late", 1_000);
    late.meta.expires_at_ms = 1;
    late.meta.grace_ms = 0;
    cache.set(&key, late).await;
    assert!(cache.get(&key).await.is_none());
}

#[tokio::test]
async fn invalidating_a_namespace_misses_all_its_keys_on_every_node_and_nothing_else() {
    let (a, b) = (node().await, node().await);
    let (tenant, other_tenant) = (tenant(), self::tenant());
    let invalidated = [CacheKey::new(tenant, "run", "1"), CacheKey::new(tenant, "run", "2")];
    let kept = [CacheKey::new(tenant, "tenant", "1"), CacheKey::new(other_tenant, "run", "1")];
    for key in invalidated.iter().chain(&kept) {
        a.set(key, entry(&key.key, 60_000)).await;
        // Now in b's L1 too: only the invalidation message can make b miss.
        assert_eq!(payload(&b, key).await.as_deref(), Some(key.key.as_str()));
    }

    a.invalidate_namespace(tenant, "run").await;

    for key in &invalidated {
        assert!(a.get(key).await.is_none(), "at once on the invalidating node");
        eventually(&b, key, None).await;
        assert!(node().await.get(key).await.is_none(), "a node that reads the version from Redis");
    }
    for key in &kept {
        assert_eq!(payload(&a, key).await.as_deref(), Some(key.key.as_str()));
        assert_eq!(payload(&b, key).await.as_deref(), Some(key.key.as_str()));
    }

    // The namespace works again, at its new version, for every node.
    a.set(&invalidated[0], entry("again", 60_000)).await;
    eventually(&b, &invalidated[0], Some("again")).await;
}

#[tokio::test]
async fn a_delete_on_one_node_drops_the_entry_from_another_nodes_l1() {
    let (a, b) = (node().await, node().await);
    let key = CacheKey::new(tenant(), "run", "with|pipes|in:it");
    let neighbour = CacheKey::new(key.tenant, "run", "neighbour");
    for key in [&key, &neighbour] {
        a.set(key, entry("v", 60_000)).await;
        assert_eq!(payload(&b, key).await.as_deref(), Some("v"));
    }

    a.delete(&key).await;

    assert!(a.get(&key).await.is_none());
    eventually(&b, &key, None).await;
    assert!(node().await.get(&key).await.is_none(), "gone from Redis");
    assert_eq!(payload(&b, &neighbour).await.as_deref(), Some("v"), "only that key");
}

#[tokio::test]
async fn tenants_never_share_entries() {
    let (a, b) = (node().await, node().await);
    let first = CacheKey::new(tenant(), "run", "same");
    let second = CacheKey::new(tenant(), "run", "same");
    a.set(&first, entry("first", 60_000)).await;
    assert!(a.get(&second).await.is_none());
    assert!(b.get(&second).await.is_none());
    b.set(&second, entry("second", 60_000)).await;
    for node in [&a, &b] {
        assert_eq!(payload(node, &first).await.as_deref(), Some("first"));
        assert_eq!(payload(node, &second).await.as_deref(), Some("second"));
    }
}

#[tokio::test]
async fn a_stored_value_in_a_foreign_format_reads_as_a_miss() {
    let url = redis_url();
    let raw = raw_client(&url).await;
    let cache = node().await;
    let tenant = tenant();
    let json = CacheKey::new(tenant, "run", "json");
    let truncated = CacheKey::new(tenant, "run", "truncated");
    // A fresh tenant's namespaces are at version 0.
    let _: () = raw.set(entry_key(&json, 0), "{\"not\": \"an envelope\"}", None, None, false).await.unwrap();
    let envelope = envelope::encode(&entry("payload", 60_000));
    let _: () = raw.set(entry_key(&truncated, 0), &envelope[..20], None, None, false).await.unwrap();
    assert!(cache.get(&json).await.is_none());
    assert!(cache.get(&truncated).await.is_none());
}

#[tokio::test]
async fn a_stopped_redis_degrades_to_l1_and_recovery_is_automatic() {
    let mut redis = PrivateRedis::start();
    let settings = CacheSettings { redis_timeout: Duration::from_millis(300), ..CacheSettings::default() };
    let (a, b) = (node_on(&redis.url(), settings).await, node_on(&redis.url(), settings).await);
    let tenant = tenant();
    let cached = CacheKey::new(tenant, "run", "cached");
    a.set(&cached, entry("cached", 60_000)).await;
    assert_eq!(payload(&b, &cached).await.as_deref(), Some("cached"), "through Redis");
    assert_eq!(payload(&b, &cached).await.as_deref(), Some("cached"), "read again: kept in L1");

    redis.stop();
    let started = Instant::now();
    assert_eq!(payload(&b, &cached).await.as_deref(), Some("cached"), "L1 still serves");
    let unknown = CacheKey::new(tenant, "run", "unknown");
    assert!(b.get(&unknown).await.is_none());
    let written = CacheKey::new(tenant, "tenant", "written");
    b.set(&written, entry("written", 60_000)).await;
    assert_eq!(payload(&b, &written).await.as_deref(), Some("written"), "an L1-only write");
    a.delete(&CacheKey::new(tenant, "run", "other")).await;
    a.invalidate_namespace(tenant, "run").await;
    assert!(a.get(&cached).await.is_none(), "invalidated locally at once");
    // A bound for a hang, not a speed measurement: no call waits on the missing Redis.
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(a.fallback_active() && b.fallback_active());

    redis.restart();
    let after = CacheKey::new(tenant, "run", "after");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        a.set(&after, entry("after", 60_000)).await;
        if payload(&b, &after).await.as_deref() == Some("after") {
            break;
        }
        assert!(Instant::now() < deadline, "L2 did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!a.fallback_active() && !b.fallback_active());

    // The restarted Redis starts empty: a version there can only come from the replay of the
    // invalidation made during the outage.
    let raw = raw_client(&redis.url()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let version: Option<u64> = raw.get(version_key(tenant, "run")).await.unwrap();
        if version.is_some_and(|v| v >= 1) {
            break;
        }
        assert!(Instant::now() < deadline, "the outage's invalidation was not replayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
