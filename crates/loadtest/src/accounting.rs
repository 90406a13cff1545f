//! What each subscriber received, seq by seq: delivered, duplicated, coalesced and lost
//! events, and the latency histogram all normal subscribers share.
//!
//! The rule for loss: every subscriber subscribes with `after_seq` just before the first
//! ingested event, so every seq from there to the run's last ingested seq must reach it. A
//! coalesced delta covers its whole `from_seq..=to_seq` range (delivered, not lost). After a
//! 1013 close or a `resume_required` error the subscriber resumes from its last contiguous
//! seq, so a resumed stream must still end complete; a seq missing at the end is lost
//! whatever the server said.

use std::sync::atomic::{AtomicU64, Ordering};

/// One subscription's account of the seqs after its `after_seq`.
#[derive(Debug)]
pub struct Tracker {
    /// The first seq expected (`after_seq + 1`).
    first: u64,
    /// Bit `s - first` is set once seq `s` was received (alone or inside a coalesced range).
    seen: Vec<u64>,
    /// The highest seq such that every seq from `first` to it was received.
    contiguous: u64,
    pub frames: u64,
    pub events: u64,
    pub duplicates: u64,
    pub coalesced_frames: u64,
    /// Events that arrived inside coalesced frames (delivered, merged with others).
    pub coalesced_events: u64,
    /// Seqs before `first` (never asked for): counted apart, as duplicates would be.
    pub unexpected: u64,
}

impl Tracker {
    pub fn new(after_seq: u64) -> Self {
        Self {
            first: after_seq + 1,
            seen: Vec::new(),
            contiguous: after_seq,
            frames: 0,
            events: 0,
            duplicates: 0,
            coalesced_frames: 0,
            coalesced_events: 0,
            unexpected: 0,
        }
    }

    /// Accounts one event frame of seq `seq`, or of the range `coalesced` (`from_seq`,
    /// `to_seq`) when the server merged deltas.
    pub fn on_event(&mut self, seq: u64, coalesced: Option<(u64, u64)>) {
        self.frames += 1;
        let (from, to) = coalesced.unwrap_or((seq, seq));
        if coalesced.is_some() {
            self.coalesced_frames += 1;
        }
        for s in from..=to {
            if s < self.first {
                self.unexpected += 1;
            } else if self.mark(s) {
                self.events += 1;
                if coalesced.is_some() {
                    self.coalesced_events += 1;
                }
            } else {
                self.duplicates += 1;
            }
        }
        while self.is_seen(self.contiguous + 1) {
            self.contiguous += 1;
        }
    }

    /// The `after_seq` to resume with: everything up to it was received.
    pub fn contiguous(&self) -> u64 {
        self.contiguous
    }

    /// Forgets what arrived after `after_seq` (the server replays it after a resume, and a
    /// replayed seq is then not a duplicate).
    pub fn rewind(&mut self, after_seq: u64) {
        let mut forgotten = 0;
        let mut s = after_seq.max(self.first - 1) + 1;
        let end = self.first + self.seen.len() as u64 * 64;
        while s < end {
            if self.unmark(s) {
                forgotten += 1;
            }
            s += 1;
        }
        self.events -= forgotten;
        self.contiguous = self.contiguous.min(after_seq.max(self.first - 1));
    }

    /// Seqs from `first` to `last` never received.
    pub fn lost(&self, last: u64) -> u64 {
        (self.first..=last).filter(|&s| !self.is_seen(s)).count() as u64
    }

    /// Whether every seq up to `last` arrived.
    pub fn complete(&self, last: u64) -> bool {
        self.contiguous >= last
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let offset = seq - self.first;
        (usize::try_from(offset / 64).unwrap_or(usize::MAX), 1 << (offset % 64))
    }

    fn is_seen(&self, seq: u64) -> bool {
        if seq < self.first {
            return true;
        }
        let (word, bit) = self.slot(seq);
        self.seen.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Sets `seq`'s bit; false if it was set already.
    fn mark(&mut self, seq: u64) -> bool {
        let (word, bit) = self.slot(seq);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let fresh = self.seen[word] & bit == 0;
        self.seen[word] |= bit;
        fresh
    }

    fn unmark(&mut self, seq: u64) -> bool {
        let (word, bit) = self.slot(seq);
        match self.seen.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                true
            }
            _ => false,
        }
    }
}

/// Sub-buckets per power of two: values are kept within 1/64 (1.6 %) of their true value.
const SUB_BUCKETS: u64 = 64;
const SUB_BITS: u32 = 6;

/// A lock-free log-linear latency histogram in microseconds, shared by the subscribers.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { buckets: (0..64 * SUB_BUCKETS).map(|_| AtomicU64::new(0)).collect(), max: AtomicU64::new(0) }
    }
}

impl Histogram {
    pub fn record(&self, micros: u64) {
        self.buckets[index(micros)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(micros, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The `q` quantile (0..=1) in microseconds (the upper bound of its bucket); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return upper_bound(i as u64).min(self.max());
            }
        }
        self.max()
    }
}

fn index(micros: u64) -> usize {
    let value = if micros < SUB_BUCKETS {
        micros
    } else {
        let exponent = u64::from(micros.ilog2());
        let shift = exponent - u64::from(SUB_BITS);
        (exponent - u64::from(SUB_BITS) + 1) * SUB_BUCKETS + ((micros >> shift) & (SUB_BUCKETS - 1))
    };
    usize::try_from(value.min(64 * SUB_BUCKETS - 1)).unwrap_or(0)
}

fn upper_bound(index: u64) -> u64 {
    if index < SUB_BUCKETS {
        return index;
    }
    let shift = index / SUB_BUCKETS - 1;
    let mantissa = SUB_BUCKETS + index % SUB_BUCKETS;
    ((mantissa + 1) << shift) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_order_stream_is_complete_with_nothing_lost_or_duplicated() {
        let mut tracker = Tracker::new(3);
        for seq in 4..=10 {
            tracker.on_event(seq, None);
        }
        assert_eq!((tracker.events, tracker.duplicates, tracker.lost(10)), (7, 0, 0));
        assert!(tracker.complete(10));
    }

    #[test]
    fn a_gap_is_lost_and_a_repeated_seq_is_a_duplicate() {
        let mut tracker = Tracker::new(0);
        for seq in [1, 2, 4, 4, 5] {
            tracker.on_event(seq, None);
        }
        assert_eq!(tracker.lost(6), 2, "3 never came and 6 was the last ingested");
        assert_eq!(tracker.duplicates, 1);
        assert_eq!(tracker.contiguous(), 2);
        assert!(!tracker.complete(5));
    }

    #[test]
    fn a_coalesced_range_counts_every_merged_seq_as_delivered() {
        let mut tracker = Tracker::new(0);
        tracker.on_event(1, None);
        tracker.on_event(5, Some((2, 5)));
        tracker.on_event(6, None);
        assert_eq!(tracker.lost(6), 0);
        assert_eq!((tracker.frames, tracker.events), (3, 6));
        assert_eq!((tracker.coalesced_frames, tracker.coalesced_events), (1, 4));
    }

    #[test]
    fn a_coalesced_range_overlapping_received_seqs_counts_the_overlap_as_duplicates() {
        let mut tracker = Tracker::new(0);
        tracker.on_event(1, None);
        tracker.on_event(2, None);
        tracker.on_event(4, Some((2, 4)));
        assert_eq!((tracker.events, tracker.duplicates), (4, 1));
    }

    #[test]
    fn after_a_rewind_the_replayed_seqs_are_not_duplicates() {
        let mut tracker = Tracker::new(0);
        for seq in [1, 2, 4, 5] {
            tracker.on_event(seq, None);
        }
        tracker.rewind(tracker.contiguous());
        assert_eq!(tracker.events, 2);
        for seq in 3..=5 {
            tracker.on_event(seq, None);
        }
        assert_eq!((tracker.events, tracker.duplicates, tracker.lost(5)), (5, 0, 0));
    }

    #[test]
    fn seqs_before_after_seq_are_unexpected_not_delivered() {
        let mut tracker = Tracker::new(10);
        tracker.on_event(9, None);
        assert_eq!((tracker.events, tracker.unexpected), (0, 1));
    }

    #[test]
    fn histogram_quantiles_are_within_two_percent() {
        let histogram = Histogram::default();
        for micros in 1..=100_000 {
            histogram.record(micros);
        }
        let p50 = histogram.quantile(0.5);
        let p99 = histogram.quantile(0.99);
        assert!((49_000..=51_000).contains(&p50), "p50 {p50}");
        assert!((98_000..=100_000).contains(&p99), "p99 {p99}");
        assert_eq!(histogram.max(), 100_000);
        assert_eq!(histogram.count(), 100_000);
    }
}
