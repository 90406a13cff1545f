//! [`InMemoryCache`]: the [`Cache`] of development mode and single-node deployments, an
//! L1 only, with namespace versions in a local map.

use async_trait::async_trait;
use sba_application::ports::{Cache, CacheEntry, CacheKey};
use sba_domain::TenantId;
use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use super::keys::entry_key;
use super::l1::L1;
use super::metrics::{CacheEvent, CacheMetrics};
use super::{CacheSettings, now_ms};

/// Namespace versions held at most; beyond that they start again (L1 emptied).
const MAX_VERSIONS: usize = 100_000;

/// An L1 with namespace versions in a local map: invalidating a namespace bumps its version
/// (O(1)); the entries of older versions are never read again and age out.
#[derive(Debug)]
pub struct InMemoryCache {
    l1: L1,
    versions: RwLock<HashMap<(TenantId, &'static str), u64>>,
    metrics: CacheMetrics,
}

impl Default for InMemoryCache {
    fn default() -> Self {
        Self::new(CacheSettings::default())
    }
}

impl InMemoryCache {
    /// Only `l1_max_bytes` and `l1_max_ttl` apply.
    pub fn new(settings: CacheSettings) -> Self {
        Self {
            l1: L1::new(settings.l1_max_bytes, settings.l1_max_ttl),
            versions: RwLock::default(),
            metrics: CacheMetrics::default(),
        }
    }

    fn version(&self, tenant: TenantId, namespace: &'static str) -> u64 {
        let versions = self.versions.read().unwrap_or_else(PoisonError::into_inner);
        versions.get(&(tenant, namespace)).copied().unwrap_or(0)
    }

    fn entry_key(&self, key: &CacheKey) -> String {
        entry_key(key, self.version(key.tenant, key.namespace))
    }
}

#[async_trait]
impl Cache for InMemoryCache {
    async fn get(&self, key: &CacheKey) -> Option<CacheEntry> {
        let hit = self.l1.get(&self.entry_key(key));
        let event = if hit.is_some() { CacheEvent::L1Hit } else { CacheEvent::L1Miss };
        self.metrics.record(key.namespace, event);
        hit
    }

    async fn set(&self, key: &CacheKey, entry: CacheEntry) {
        if entry.meta.evict_at_ms() > now_ms() {
            self.l1.insert(self.entry_key(key), entry);
        }
    }

    async fn delete(&self, key: &CacheKey) {
        self.l1.remove(&self.entry_key(key));
        self.metrics.record(key.namespace, CacheEvent::KeyInvalidated);
    }

    async fn invalidate_namespace(&self, tenant: TenantId, namespace: &'static str) {
        let mut versions = self.versions.write().unwrap_or_else(PoisonError::into_inner);
        if versions.len() >= MAX_VERSIONS && !versions.contains_key(&(tenant, namespace)) {
            // Versions restart at 0, which would make entries of old versions reachable
            // again: they go too.
            versions.clear();
            self.l1.clear();
        }
        *versions.entry((tenant, namespace)).or_default() += 1;
        drop(versions);
        self.metrics.record(namespace, CacheEvent::NamespaceInvalidated);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sba_application::ports::EntryMeta;
    use uuid::Uuid;

    use super::*;

    fn entry(evict_in_ms: u64, payload: &[u8]) -> CacheEntry {
        let now = now_ms();
        let meta = EntryMeta {
            schema: 1,
            stored_at_ms: now,
            expires_at_ms: now + evict_in_ms,
            grace_ms: 0,
            load_ms: 1,
            ttl_ms: evict_in_ms,
            fingerprint: 7,
        };
        CacheEntry::new(meta, payload.to_vec())
    }

    fn tenant() -> TenantId {
        TenantId::from_uuid(Uuid::now_v7())
    }

    #[tokio::test]
    async fn a_set_entry_is_a_hit_until_deleted() {
        let cache = InMemoryCache::default();
        let key = CacheKey::new(tenant(), "run", "1");
        assert!(cache.get(&key).await.is_none());
        cache.set(&key, entry(60_000, b"one")).await;
        assert_eq!(&*cache.get(&key).await.unwrap().payload, b"one");
        cache.delete(&key).await;
        assert!(cache.get(&key).await.is_none());
    }

    #[tokio::test]
    async fn invalidating_a_namespace_leaves_other_namespaces_and_tenants_alone() {
        let cache = InMemoryCache::default();
        let (a, b) = (tenant(), tenant());
        let keys = [
            CacheKey::new(a, "run", "1"),
            CacheKey::new(a, "run", "2"),
            CacheKey::new(a, "tenant", "1"),
            CacheKey::new(b, "run", "1"),
        ];
        for key in &keys {
            cache.set(key, entry(60_000, key.key.as_bytes())).await;
        }
        cache.invalidate_namespace(a, "run").await;
        assert!(cache.get(&keys[0]).await.is_none());
        assert!(cache.get(&keys[1]).await.is_none());
        assert!(cache.get(&keys[2]).await.is_some());
        assert!(cache.get(&keys[3]).await.is_some());
        // The namespace works again at its new version.
        cache.set(&keys[0], entry(60_000, b"again")).await;
        assert_eq!(&*cache.get(&keys[0]).await.unwrap().payload, b"again");
    }

    #[tokio::test]
    async fn entries_are_misses_past_their_eviction_time() {
        let cache = InMemoryCache::default();
        let key = CacheKey::new(tenant(), "run", "1");
        cache.set(&key, entry(100, b"short")).await;
        assert!(cache.get(&key).await.is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(cache.get(&key).await.is_none());
    }

    #[tokio::test]
    async fn an_entry_already_past_eviction_is_not_stored() {
        let cache = InMemoryCache::default();
        let key = CacheKey::new(tenant(), "run", "1");
        let mut stale = entry(1, b"stale");
        stale.meta.expires_at_ms = 1;
        cache.set(&key, stale).await;
        assert!(cache.get(&key).await.is_none());
    }
}
