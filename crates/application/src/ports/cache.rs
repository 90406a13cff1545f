//! The cache port (ADR 0007): entries per tenant and namespace, in an in-process tier (L1)
//! and, with Redis, a shared tier (L2), with O(1) namespace invalidation by version.
//!
//! The port moves bytes and their metadata; typing, serialization, single flight, early
//! refresh and adaptive TTLs live in [`crate::cache::CachedNamespace`], so every adapter
//! behaves the same. Adapters never fail a caller: a store fault is a miss (or a write that
//! only reached L1), counted in metrics.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use sba_domain::TenantId;

/// Which entry: a key in a tenant's namespace. Adapters read and write it in the
/// namespace's current version, so [`Cache::invalidate_namespace`] is O(1); how they lay
/// keys out in a store is theirs (docs/architecture.md, "Redis key schema").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub tenant: TenantId,
    /// A code constant (`tenant`, `run`, …): never user input.
    pub namespace: &'static str,
    pub key: String,
}

impl CacheKey {
    pub fn new(tenant: TenantId, namespace: &'static str, key: impl Into<String>) -> Self {
        Self { tenant, namespace, key: key.into() }
    }
}

/// What is known about a stored value, besides its bytes. Times are Unix milliseconds of
/// the writing node's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// The namespace's schema version when written; another version reads as a miss.
    pub schema: u16,
    /// When the value was loaded.
    pub stored_at_ms: u64,
    /// When the value stops being fresh (logical TTL). Stores keep it for `grace_ms` more,
    /// so a reload can see what it replaces (adaptive TTL) and serve it if the load fails.
    pub expires_at_ms: u64,
    /// How long after `expires_at_ms` stores keep the entry.
    pub grace_ms: u64,
    /// How long the load took (the `delta` of probabilistic early refresh).
    pub load_ms: u32,
    /// The logical TTL the entry was given (its next TTL derives from it).
    pub ttl_ms: u64,
    /// A hash of the payload: an unchanged reload keeps the same fingerprint.
    pub fingerprint: u64,
}

impl EntryMeta {
    /// When stores drop the entry.
    pub const fn evict_at_ms(&self) -> u64 {
        self.expires_at_ms.saturating_add(self.grace_ms)
    }
}

/// A value decoded once per L1 entry and shared by every later hit on this node.
pub type Decoded = Arc<dyn Any + Send + Sync>;

/// An entry as stored and read.
#[derive(Clone)]
pub struct CacheEntry {
    pub meta: EntryMeta,
    /// The serialized value (`MessagePack`, see `crate::cache`). How a shared tier stores it
    /// with `meta` is the adapter's business.
    pub payload: Arc<[u8]>,
    /// Filled by the first reader that decodes the payload on this node; kept with the L1
    /// entry, so L1 hits skip deserialization.
    pub decoded: Arc<OnceLock<Decoded>>,
}

impl std::fmt::Debug for CacheEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheEntry")
            .field("meta", &self.meta)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl CacheEntry {
    pub fn new(meta: EntryMeta, payload: impl Into<Arc<[u8]>>) -> Self {
        Self { meta, payload: payload.into(), decoded: Arc::default() }
    }
}

/// The cache: an in-process tier, and a shared one where configured.
///
/// Implementations never fail and never make a caller wait on a sick store for long: a
/// store that does not answer within its bounded timeout is skipped (L1 only) until it
/// recovers, which they detect by themselves.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Cache: std::fmt::Debug + Send + Sync + 'static {
    /// The entry under `key` in the namespace's current version, L1 first; `None` on a miss
    /// or when the entry is past `evict_at_ms`. The caller judges freshness from
    /// `meta.expires_at_ms`.
    async fn get(&self, key: &CacheKey) -> Option<CacheEntry>;

    /// Stores `entry` under `key` in the namespace's current version, until
    /// `entry.meta.evict_at_ms()`.
    async fn set(&self, key: &CacheKey, entry: CacheEntry);

    /// Removes `key` from the shared tier and from the L1 of every node.
    async fn delete(&self, key: &CacheKey);

    /// Makes every entry of the tenant's namespace unreachable at once, whatever their
    /// number (the namespace's version moves on), on every node.
    async fn invalidate_namespace(&self, tenant: TenantId, namespace: &'static str);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entrys_debug_output_shows_its_metadata_and_size_not_its_payload() {
        let meta = EntryMeta {
            schema: 3,
            stored_at_ms: 1,
            expires_at_ms: 2,
            grace_ms: 3,
            load_ms: 4,
            ttl_ms: 5,
            fingerprint: 6,
        };
        let debug = format!("{:?}", CacheEntry::new(meta, b"secret".to_vec()));
        assert!(debug.starts_with("CacheEntry") && debug.contains("schema: 3"), "{debug}");
        assert!(debug.contains("payload_bytes: 6") && !debug.contains("115"), "{debug}");
    }
}
