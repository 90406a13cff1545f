//! How a shared tier stores an entry: a fixed binary header with the entry's metadata,
//! then the payload as the application serialized it (ADR 0007). Another format, or bytes
//! that are not an envelope, read as a miss: a node reading entries written by another
//! version reloads them.

use sba_application::ports::{CacheEntry, EntryMeta};

/// Magic byte of the stored envelope format; another value reads as a miss.
const FORMAT: u8 = 1;
/// `FORMAT`, schema (2), `stored_at` (8), `expires_at` (8), grace (8), `load_ms` (4), ttl (8),
/// fingerprint (8): big-endian.
const HEADER_LEN: usize = 1 + 2 + 8 + 8 + 8 + 4 + 8 + 8;

/// The stored form of `entry` (what L2 holds): a fixed header, then the payload.
pub fn encode(entry: &CacheEntry) -> Vec<u8> {
    let m = &entry.meta;
    let mut out = Vec::with_capacity(HEADER_LEN + entry.payload.len());
    out.push(FORMAT);
    out.extend_from_slice(&m.schema.to_be_bytes());
    out.extend_from_slice(&m.stored_at_ms.to_be_bytes());
    out.extend_from_slice(&m.expires_at_ms.to_be_bytes());
    out.extend_from_slice(&m.grace_ms.to_be_bytes());
    out.extend_from_slice(&m.load_ms.to_be_bytes());
    out.extend_from_slice(&m.ttl_ms.to_be_bytes());
    out.extend_from_slice(&m.fingerprint.to_be_bytes());
    out.extend_from_slice(&entry.payload);
    out
}

/// Reads [`encode`]; `None` for anything else (another format, truncated bytes): a miss,
/// never an error.
pub fn decode(bytes: &[u8]) -> Option<CacheEntry> {
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
    Some(CacheEntry::new(meta, bytes.get(HEADER_LEN..)?))
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
        let read = decode(&encode(&entry)).unwrap();
        assert_eq!(read.meta, meta());
        assert_eq!(&*read.payload, b"payload");
    }

    #[test]
    fn other_formats_and_truncated_bytes_read_as_misses() {
        let bytes = encode(&CacheEntry::new(meta(), b"x".to_vec()));
        assert!(decode(&bytes[..HEADER_LEN - 1]).is_none());
        assert!(decode(&[]).is_none());
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(decode(&other).is_none());
        assert!(decode(b"{\"json\": true}").is_none());
    }
}
