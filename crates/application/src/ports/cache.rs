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

/// Where an entry lives: `sba:c:{tenant}:{namespace}:v{version}:{key}` in Redis, the
/// version being the namespace's current one (`sba:cv:{tenant}:{namespace}`).
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
    /// The serialized value (`MessagePack`, see `crate::cache`).
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

/// Magic byte of the stored envelope format; another value reads as a miss.
const FORMAT: u8 = 1;
/// `FORMAT`, schema (2), `stored_at` (8), `expires_at` (8), grace (8), `load_ms` (4), ttl (8),
/// fingerprint (8): big-endian.
const HEADER_LEN: usize = 1 + 2 + 8 + 8 + 8 + 4 + 8 + 8;

impl CacheEntry {
    pub fn new(meta: EntryMeta, payload: impl Into<Arc<[u8]>>) -> Self {
        Self { meta, payload: payload.into(), decoded: Arc::default() }
    }

    /// The stored form (what L2 holds): a fixed header, then the payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let m = &self.meta;
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.push(FORMAT);
        out.extend_from_slice(&m.schema.to_be_bytes());
        out.extend_from_slice(&m.stored_at_ms.to_be_bytes());
        out.extend_from_slice(&m.expires_at_ms.to_be_bytes());
        out.extend_from_slice(&m.grace_ms.to_be_bytes());
        out.extend_from_slice(&m.load_ms.to_be_bytes());
        out.extend_from_slice(&m.ttl_ms.to_be_bytes());
        out.extend_from_slice(&m.fingerprint.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads [`Self::to_bytes`]; `None` for anything else (another format, truncated
    /// bytes): a miss, never an error.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (&format, rest) = bytes.split_first()?;
        if format != FORMAT || bytes.len() < HEADER_LEN {
            return None;
        }
        let mut at = 0;
        let mut take = |n: usize| {
            let field = rest.get(at..at + n);
            at += n;
            field
        };
        let u16_at = |b: Option<&[u8]>| b.and_then(|b| b.try_into().ok()).map(u16::from_be_bytes);
        let u32_at = |b: Option<&[u8]>| b.and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
        let u64_at = |b: Option<&[u8]>| b.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
        let meta = EntryMeta {
            schema: u16_at(take(2))?,
            stored_at_ms: u64_at(take(8))?,
            expires_at_ms: u64_at(take(8))?,
            grace_ms: u64_at(take(8))?,
            load_ms: u32_at(take(4))?,
            ttl_ms: u64_at(take(8))?,
            fingerprint: u64_at(take(8))?,
        };
        Some(Self::new(meta, bytes.get(HEADER_LEN..)?))
    }
}

/// The cache: an in-process tier, and a shared one where configured.
///
/// Implementations never fail and never make a caller wait on a sick store for long: a
/// store that does not answer within its bounded timeout is skipped (L1 only) until it
/// recovers, which they detect by themselves.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Cache: Send + Sync + 'static {
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

    fn meta() -> EntryMeta {
        EntryMeta {
            schema: 3,
            stored_at_ms: 1_800_000_000_000,
            expires_at_ms: 1_800_000_060_000,
            grace_ms: 60_000,
            load_ms: 12,
            ttl_ms: 60_000,
            fingerprint: 0xdead_beef_0123_4567,
        }
    }

    #[test]
    fn entries_survive_their_stored_form() {
        let entry = CacheEntry::new(meta(), b"payload".to_vec());
        let read = CacheEntry::from_bytes(&entry.to_bytes()).unwrap();
        assert_eq!(read.meta, meta());
        assert_eq!(&*read.payload, b"payload");
    }

    #[test]
    fn other_formats_and_truncated_bytes_read_as_misses() {
        let bytes = CacheEntry::new(meta(), b"x".to_vec()).to_bytes();
        assert!(CacheEntry::from_bytes(&bytes[..HEADER_LEN - 1]).is_none());
        assert!(CacheEntry::from_bytes(&[]).is_none());
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(CacheEntry::from_bytes(&other).is_none());
        assert!(CacheEntry::from_bytes(b"{\"json\": true}").is_none());
    }
}
