//! Keyset pagination: a page of items and an opaque cursor that resumes after the last one.
//!
//! A cursor names a position in a sort order (`(created_at, id)` or a `seq`), never an
//! offset, so pages stay stable while rows are inserted: no duplicates, no gaps.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The default and largest page sizes.
pub const DEFAULT_LIMIT: u64 = 20;
pub const MAX_LIMIT: u64 = 100;

/// The largest `seq` a row can have: the stores keep it in a signed 64-bit column. A cursor
/// or `after_seq` past it names no position and is refused before any store sees it.
#[allow(clippy::cast_sign_loss, reason = "i64::MAX is positive")]
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// The instants a time cursor may name, 0001-01-01 to 9999-12-31 (UTC): every row's
/// creation time is inside, and every store can compare with them (PostgreSQL's range stops
/// at 4713 BC, text timestamps sort only with four-digit years).
const MIN_CURSOR_MICROS: i64 = -62_135_596_800_000_000;
const MAX_CURSOR_MICROS: i64 = 253_402_300_799_999_999;

/// A position in a listing, opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// After the row with this creation time and id (in the listing's direction).
    Time { at: DateTime<Utc>, id: Uuid },
    /// After this sequence number.
    Seq(u64),
}

/// A cursor that was not made by this service (or not for this listing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not valid")]
pub struct InvalidCursor;

impl Cursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        let plain = match self {
            Self::Time { at, id } => format!("t1:{}:{}", at.timestamp_micros(), id.simple()),
            Self::Seq(seq) => format!("s1:{seq}"),
        };
        URL_SAFE_NO_PAD.encode(plain)
    }

    /// # Errors
    /// [`InvalidCursor`] for anything [`Self::encode`] did not produce, including a
    /// well-formed cursor out of range (a `seq` over [`MAX_SEQ`], a time outside the years
    /// 1–9999): no row is there.
    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| InvalidCursor)?;
        let plain = String::from_utf8(bytes).map_err(|_| InvalidCursor)?;
        let mut parts = plain.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("t1"), Some(micros), Some(id), None) => {
                let micros: i64 = micros.parse().map_err(|_| InvalidCursor)?;
                if !(MIN_CURSOR_MICROS..=MAX_CURSOR_MICROS).contains(&micros) {
                    return Err(InvalidCursor);
                }
                let at = DateTime::from_timestamp_micros(micros).ok_or(InvalidCursor)?;
                Ok(Self::Time { at, id: Uuid::parse_str(id).map_err(|_| InvalidCursor)? })
            }
            (Some("s1"), Some(seq), None, None) => {
                let seq: u64 = seq.parse().map_err(|_| InvalidCursor)?;
                if seq > MAX_SEQ {
                    return Err(InvalidCursor);
                }
                Ok(Self::Seq(seq))
            }
            _ => Err(InvalidCursor),
        }
    }
}

/// What page a caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// 1 to [`MAX_LIMIT`].
    pub limit: u64,
    pub after: Option<Cursor>,
}

/// A limit outside `1..=MAX_LIMIT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit must be between 1 and {MAX_LIMIT}")]
pub struct InvalidLimit;

impl PageRequest {
    /// # Errors
    /// [`InvalidLimit`] when `limit` is outside `1..=MAX_LIMIT`.
    pub fn new(limit: Option<u64>, after: Option<Cursor>) -> Result<Self, InvalidLimit> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if (1..=MAX_LIMIT).contains(&limit) { Ok(Self { limit, after }) } else { Err(InvalidLimit) }
    }

    pub const fn first(limit: u64) -> Self {
        Self { limit, after: None }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in listing order: the extra row only
    /// proves that another page exists.
    pub fn from_rows(mut rows: Vec<T>, limit: u64, cursor_of: impl Fn(&T) -> Cursor) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more { rows.last().map(cursor_of) } else { None };
        Self { items: rows, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let time = Cursor::Time {
            at: DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        for cursor in [time, Cursor::Seq(0), Cursor::Seq(MAX_SEQ)] {
            assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        }
    }

    #[test]
    fn cursors_out_of_the_stores_range_are_rejected() {
        let id = Uuid::now_v7().simple();
        for plain in [
            format!("s1:{}", MAX_SEQ + 1),
            format!("s1:{}", u64::MAX),
            format!("t1:{}:{id}", MIN_CURSOR_MICROS - 1),
            format!("t1:{}:{id}", MAX_CURSOR_MICROS + 1),
            format!("t1:{}:{id}", i64::MIN),
        ] {
            assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode(&plain)), Err(InvalidCursor), "{plain}");
        }
        for micros in [MIN_CURSOR_MICROS, MAX_CURSOR_MICROS] {
            let plain = format!("t1:{micros}:{id}");
            assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(&plain)).is_ok(), "{plain}");
        }
    }

    #[test]
    fn foreign_cursors_are_rejected() {
        for text in
            ["", "abc", "dDE6eDp5", &URL_SAFE_NO_PAD.encode("s1:-1"), &URL_SAFE_NO_PAD.encode("t1:1:nope")]
        {
            assert_eq!(Cursor::decode(text), Err(InvalidCursor), "{text}");
        }
    }

    #[test]
    fn limits_outside_one_to_a_hundred_are_rejected() {
        assert_eq!(PageRequest::new(None, None).unwrap().limit, DEFAULT_LIMIT);
        assert!(PageRequest::new(Some(0), None).is_err());
        assert!(PageRequest::new(Some(101), None).is_err());
        assert_eq!(PageRequest::new(Some(100), None).unwrap().limit, 100);
    }

    #[test]
    fn an_extra_row_means_a_next_page() {
        let page = Page::from_rows(vec![1_u64, 2, 3], 2, |n| Cursor::Seq(*n));
        assert_eq!(page.items, [1, 2]);
        assert_eq!(page.next, Some(Cursor::Seq(2)));
        let last = Page::from_rows(vec![1_u64, 2], 2, |n| Cursor::Seq(*n));
        assert_eq!(last.next, None);
    }
}
