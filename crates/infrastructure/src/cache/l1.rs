//! The in-process cache tier (L1) of both adapters ([`super::InMemoryCache`] and
//! [`super::FredCache`]), and the doorkeeper that decides which entries read from Redis
//! it keeps.
//!
//! Entries are held under their full versioned key ([`super::keys`]), so an entry of an
//! older namespace version is simply never asked for again and ages out.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache as MokaCache;
use sba_application::ports::CacheEntry;

use super::now_ms;

/// What an entry costs besides its key and payload (moka's node, the `CacheEntry`, Arcs):
/// counted so that many tiny entries cannot exceed the memory bound.
const ENTRY_OVERHEAD_BYTES: usize = 160;

/// A bounded in-process map of versioned keys to entries.
///
/// Memory-bounded (key, payload and a fixed overhead per entry); an entry leaves at
/// `meta.evict_at_ms()` or after `max_ttl`, whichever comes first, so entries that another
/// node invalidated while this one missed the message do not outlive `max_ttl`. A hit returns
/// a clone of the stored entry: its `decoded` cell is shared by every hit.
#[derive(Clone)]
pub(crate) struct L1 {
    entries: MokaCache<String, CacheEntry>,
}

impl fmt::Debug for L1 {
    // moka's own `Debug` lists every entry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("L1")
            .field("entries", &self.entries.entry_count())
            .field("weighted_bytes", &self.entries.weighted_size())
            .finish()
    }
}

impl L1 {
    pub(crate) fn new(max_bytes: u64, max_ttl: Duration) -> Self {
        let entries = MokaCache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &CacheEntry| {
                u32::try_from(key.len() + entry.payload.len() + ENTRY_OVERHEAD_BYTES).unwrap_or(u32::MAX)
            })
            .expire_after(UntilEviction { max_ttl })
            .build();
        Self { entries }
    }

    pub(crate) fn get(&self, key: &str) -> Option<CacheEntry> {
        self.entries.get(key)
    }

    pub(crate) fn insert(&self, key: String, entry: CacheEntry) {
        self.entries.insert(key, entry);
    }

    pub(crate) fn remove(&self, key: &str) {
        self.entries.invalidate(key);
    }

    /// Drops every entry (lazily: none of them is returned again).
    pub(crate) fn clear(&self) {
        self.entries.invalidate_all();
    }
}

/// What L1 admits of the entries a node reads from Redis: a key is kept in L1 on its second
/// read within a window, not its first (a "doorkeeper", as in `TinyLFU`). A key read once and
/// not again soon — a working set larger than L1 — then costs no L1 insert and no eviction
/// of a key that is read often; a key read twice is kept, and every read after that is an L1
/// hit. Entries a node loads itself go to L1 at once (they are about to be read).
///
/// A bloom filter of two bits per key over atomics: no lock, a false positive only admits a
/// key early. It forgets everything after as many new keys as L1 holds entries, so "soon"
/// means "before L1 would have evicted it anyway".
pub(crate) struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    /// `bits.len() * 64 - 1`: bit positions are hashes masked by it.
    mask: u64,
    /// New keys since the last reset.
    seen: AtomicU64,
    reset_after: u64,
}

/// The smallest entry L1 is sized for when estimating how many entries it holds.
const TYPICAL_ENTRY_BYTES: u64 = 256;

impl Doorkeeper {
    /// A doorkeeper for an L1 of `l1_max_bytes`: it forgets after about as many keys as that
    /// L1 holds, with 16 bits per key (false positives below 1 %).
    pub(crate) fn for_l1(l1_max_bytes: u64) -> Self {
        let entries = (l1_max_bytes / TYPICAL_ENTRY_BYTES).clamp(1 << 10, 1 << 22);
        let words = usize::try_from((entries * 16).next_power_of_two() / 64).unwrap_or(1 << 16);
        Self {
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
            mask: (words as u64) * 64 - 1,
            seen: AtomicU64::new(0),
            reset_after: entries,
        }
    }

    /// Whether `key` was read before within the window (then it belongs in L1); remembers it
    /// otherwise.
    pub(crate) fn admit(&self, key: &str) -> bool {
        let hash = {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(key, &mut hasher);
            std::hash::Hasher::finish(&hasher)
        };
        let positions = [hash & self.mask, hash.rotate_right(32) & self.mask];
        let mut known = true;
        for position in positions {
            let (word, bit) = (position / 64, 1_u64 << (position % 64));
            let Some(cell) = usize::try_from(word).ok().and_then(|w| self.bits.get(w)) else { continue };
            if cell.load(Ordering::Relaxed) & bit == 0 {
                known = false;
                cell.fetch_or(bit, Ordering::Relaxed);
            }
        }
        if !known && self.seen.fetch_add(1, Ordering::Relaxed) + 1 >= self.reset_after {
            self.seen.store(0, Ordering::Relaxed);
            for cell in &self.bits {
                cell.store(0, Ordering::Relaxed);
            }
        }
        known
    }
}

impl fmt::Debug for Doorkeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorkeeper")
            .field("bits", &(self.mask + 1))
            .field("reset_after", &self.reset_after)
            .finish_non_exhaustive()
    }
}

/// Per-entry expiry: `evict_at_ms`, capped by the L1 TTL.
struct UntilEviction {
    max_ttl: Duration,
}

impl UntilEviction {
    fn ttl(&self, entry: &CacheEntry) -> Duration {
        let left = entry.meta.evict_at_ms().saturating_sub(now_ms());
        Duration::from_millis(left).min(self.max_ttl)
    }
}

impl Expiry<String, CacheEntry> for UntilEviction {
    fn expire_after_create(&self, _key: &String, entry: &CacheEntry, _at: Instant) -> Option<Duration> {
        Some(self.ttl(entry))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &CacheEntry,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.ttl(entry))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[test]
    fn the_doorkeeper_admits_a_key_on_its_second_read_and_forgets_after_a_window() {
        let door = super::Doorkeeper::for_l1(1 << 20);
        assert!(!door.admit("sba:c:t:ns:v0:a"), "first read: not admitted");
        assert!(door.admit("sba:c:t:ns:v0:a"), "second read: admitted");
        assert!(!door.admit("sba:c:t:ns:v0:b"));
        // 4096 new keys (an L1 of 1 MiB holds about that many) make it forget.
        for i in 0..5000 {
            door.admit(&format!("other{i}"));
        }
        assert!(!door.admit("sba:c:t:ns:v0:a"), "forgotten after the window");
    }

    use sba_application::ports::EntryMeta;

    use super::*;

    fn entry(evict_in_ms: u64, payload: &[u8]) -> CacheEntry {
        let now = now_ms();
        let meta = EntryMeta {
            schema: 1,
            stored_at_ms: now,
            expires_at_ms: now + evict_in_ms / 2,
            grace_ms: evict_in_ms - evict_in_ms / 2,
            load_ms: 1,
            ttl_ms: evict_in_ms / 2,
            fingerprint: 7,
        };
        CacheEntry::new(meta, payload.to_vec())
    }

    #[test]
    fn hits_share_one_decoded_cell() {
        let l1 = L1::new(1 << 20, Duration::from_mins(1));
        l1.insert("k".to_owned(), entry(60_000, b"v"));
        let first = l1.get("k").unwrap();
        first.decoded.set(Arc::new(5_u32)).unwrap();
        let second = l1.get("k").unwrap();
        assert!(Arc::ptr_eq(&first.decoded, &second.decoded));
        assert_eq!(second.decoded.get().unwrap().downcast_ref::<u32>(), Some(&5));
    }

    #[test]
    fn entries_leave_at_their_eviction_time_or_the_l1_ttl() {
        let l1 = L1::new(1 << 20, Duration::from_millis(700));
        l1.insert("short".to_owned(), entry(100, b"v"));
        l1.insert("capped".to_owned(), entry(60_000, b"v"));
        assert!(l1.get("short").is_some() && l1.get("capped").is_some());
        std::thread::sleep(Duration::from_millis(250));
        assert!(l1.get("short").is_none(), "past evict_at_ms");
        assert!(l1.get("capped").is_some());
        std::thread::sleep(Duration::from_millis(500));
        assert!(l1.get("capped").is_none(), "past the L1 TTL");
    }

    #[test]
    fn memory_stays_within_the_bound() {
        let l1 = L1::new(64 * 1024, Duration::from_mins(1));
        for i in 0..200 {
            l1.insert(format!("key-{i}"), entry(60_000, &[0_u8; 1024]));
        }
        let entries = &l1.entries;
        entries.run_pending_tasks();
        assert!(entries.weighted_size() <= 64 * 1024, "{}", entries.weighted_size());
        assert!(entries.entry_count() < 200);
    }

    #[test]
    fn removed_and_cleared_entries_are_misses() {
        let l1 = L1::new(1 << 20, Duration::from_mins(1));
        l1.insert("a".to_owned(), entry(60_000, b"a"));
        l1.insert("b".to_owned(), entry(60_000, b"b"));
        l1.remove("a");
        assert!(l1.get("a").is_none() && l1.get("b").is_some());
        l1.clear();
        assert!(l1.get("b").is_none());
    }
}
