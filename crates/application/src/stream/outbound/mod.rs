//! The outbound queue of one WebSocket connection: every frame the server will send it, in
//! order, within fixed bounds, so that a client that reads slowly costs the server a bounded
//! amount of memory and never holds up the bus or other clients.
//!
//! The policy (ARCHITECTURE.md §5, "WebSocket"):
//!
//! - [`OutboundQueue::push_event`] and [`OutboundQueue::push_control`] never wait. Frames
//!   leave in the order they were pushed ([`OutboundQueue::pop`]).
//! - Below the high-water mark (in messages or in bytes, [`OutboundLimits`]) the queue is a
//!   plain FIFO.
//! - At or above it, a `step.delta` event is merged into the queued event it continues
//!   instead of taking a place of its own: the last queued event of the same run on the same
//!   channel, when that is a `step.delta` of the same step with the seq just before. The
//!   merged event is one `step.delta` (ARCHITECTURE.md §7) with the texts concatenated, the
//!   last merged `seq` and `created_at`, and `data.coalesced = {"from_seq","to_seq"}`.
//!   Because only the last queued event of its run is merged into, no event of that run is
//!   ever overtaken: the merge moves text earlier only past other runs' events (whose order
//!   relative to this run's no one promises: each run numbers its own events).
//! - Nothing else is merged or dropped: lifecycle events, tool calls, usage, acks and errors
//!   are always queued.
//! - When a frame cannot be queued or merged within the hard bounds, the push returns
//!   [`Overflow`] and changes nothing: the gateway closes the connection with 1013, and the
//!   client resumes with `after_seq`. An empty queue takes any one frame, so an event larger
//!   than the byte bound is delivered rather than wedging the connection.
//!
//! - While the connection is throttled ([`OutboundQueue::set_throttled`]: its tenant or
//!   user is over its broadcast rate), deltas merge as they do above the high-water mark,
//!   so that what the rate holds back is a few merged deltas, not a backlog of small ones
//!   in front of the run's lifecycle events.
//!
//! Bytes are counted as the frames' lengths; a merged delta is counted from its parts, close
//! to the length it is written with. Merged deltas are counted
//! ([`OutboundQueue::coalesced_deltas`]) for metrics.

mod delta;

pub use self::delta::coalesce_deltas;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sba_domain::RunId;

use self::delta::{COALESCED_OVERHEAD, Delta};
use super::protocol::{StreamChannel, event_frame, event_frame_len};
use crate::ports::LiveEvent;

/// The bounds of a connection's outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimits {
    max_messages: usize,
    max_bytes: usize,
    high_water_messages: usize,
    high_water_bytes: usize,
    /// The longest the oldest queued frame may wait: past it the client is not keeping up,
    /// whatever the queue's size (the server may be the one short of CPU: the client is
    /// told then rather than served later and later).
    max_delay: Duration,
}

/// [`OutboundLimits::max_delay`] by default.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

/// Limits that cannot work: a zero bound, or a high-water mark above its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbound queue limits must be positive, with each high-water mark at most its bound")]
pub struct InvalidOutboundLimits;

impl OutboundLimits {
    /// # Errors
    /// [`InvalidOutboundLimits`] when a value is zero or a high-water mark exceeds its bound.
    pub const fn new(
        max_messages: usize,
        max_bytes: usize,
        high_water_messages: usize,
        high_water_bytes: usize,
    ) -> Result<Self, InvalidOutboundLimits> {
        let positive = high_water_messages > 0 && high_water_bytes > 0;
        if positive && high_water_messages <= max_messages && high_water_bytes <= max_bytes {
            Ok(Self {
                max_messages,
                max_bytes,
                high_water_messages,
                high_water_bytes,
                max_delay: DEFAULT_MAX_DELAY,
            })
        } else {
            Err(InvalidOutboundLimits)
        }
    }

    /// The same limits with the oldest frame allowed to wait `max_delay` (10 s by default).
    #[must_use]
    pub const fn with_max_delay(self, max_delay: Duration) -> Self {
        Self { max_delay, ..self }
    }

    pub const fn max_delay(&self) -> Duration {
        self.max_delay
    }
}

impl Default for OutboundLimits {
    /// 1024 frames or 4 MiB, coalescing from 256 frames or 1 MiB.
    fn default() -> Self {
        Self {
            max_messages: 1024,
            max_bytes: 4 << 20,
            high_water_messages: 256,
            high_water_bytes: 1 << 20,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }
}

/// The client does not read fast enough for the queue to hold what it must send: close the
/// connection with 1013.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client's outbound queue is full")]
pub struct Overflow;

/// A frame leaving the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// An ack, pong or error.
    Control(String),
    /// An event frame (counted against the broadcast rates); shared by every subscriber of
    /// the channel on this node unless merged ([`LiveEvent::shared_frame`]).
    Event(Arc<str>),
}

impl OutFrame {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Control(text) => text,
            Self::Event(text) => text,
        }
    }
}

impl AsRef<[u8]> for OutFrame {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

/// How an event was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Merged into the queued `step.delta` it continues.
    Coalesced,
}

/// A connection's outbound frames (see the module documentation for the policy).
#[derive(Debug)]
pub struct OutboundQueue {
    limits: OutboundLimits,
    /// The frames, each with when it was queued.
    entries: VecDeque<(Instant, Entry)>,
    /// The positions of `entries`' first entry and of the next one to be queued, among
    /// every entry ever queued (positions never repeat, so a position recorded below stays
    /// valid until its entry is popped).
    head: u64,
    tail: u64,
    bytes: usize,
    /// The position of the last queued event of each run on each channel: the only entry a
    /// `step.delta` may be merged into.
    /// Hashed with ahash: written once per queued event.
    last_event: HashMap<(StreamChannel, RunId), u64, ahash::RandomState>,
    coalesced_deltas: u64,
    /// Deltas merge below the high-water mark too (broadcast throttling).
    throttled: bool,
}

#[derive(Debug)]
enum Entry {
    Control(String),
    Event(EventEntry),
}

#[derive(Debug)]
struct EventEntry {
    channel: StreamChannel,
    event: LiveEvent,
    bytes: usize,
    delta: DeltaSlot,
}

/// What is known of an event as a delta: events queued below the high-water mark are not
/// read until one may be merged into them, and each is read at most once.
#[derive(Debug)]
enum DeltaSlot {
    Unread,
    NotMergeable,
    Delta(Box<Delta>),
}

impl DeltaSlot {
    fn read(event: &LiveEvent) -> Self {
        Delta::read(event).map_or(Self::NotMergeable, |delta| Self::Delta(Box::new(delta)))
    }
}

impl Entry {
    const fn bytes(&self) -> usize {
        match self {
            Self::Control(frame) => frame.len(),
            Self::Event(entry) => entry.bytes,
        }
    }
}

impl OutboundQueue {
    pub fn new(limits: OutboundLimits) -> Self {
        Self {
            limits,
            entries: VecDeque::new(),
            head: 0,
            tail: 0,
            bytes: 0,
            last_event: HashMap::with_hasher(ahash::RandomState::new()),
            coalesced_deltas: 0,
            throttled: false,
        }
    }

    /// Queues a frame that is not an event (ack, pong, error); never merged.
    ///
    /// # Errors
    /// [`Overflow`] when the queue cannot take it (nothing is queued).
    pub fn push_control(&mut self, frame: String) -> Result<(), Overflow> {
        let bytes = frame.len();
        self.admit(bytes)?;
        self.entries.push_back((Instant::now(), Entry::Control(frame)));
        self.tail += 1;
        self.bytes += bytes;
        Ok(())
    }

    /// Queues `event` for the subscription to `channel` at `now` (a burst of events is
    /// queued with one reading of the clock), merging a `step.delta` into the one it
    /// continues when the queue is at or above its high-water mark.
    ///
    /// # Errors
    /// [`Overflow`] when the queue can neither take nor merge it (nothing changes).
    pub fn push_event(
        &mut self,
        channel: StreamChannel,
        event: LiveEvent,
        now: Instant,
    ) -> Result<Pushed, Overflow> {
        let mut delta = DeltaSlot::Unread;
        if self.throttled || self.at_high_water() {
            delta = DeltaSlot::read(&event);
            if let DeltaSlot::Delta(incoming) = delta {
                match self.merge(channel, event.run_id, *incoming)? {
                    Merge::Done => return Ok(Pushed::Coalesced),
                    Merge::Declined(incoming) => delta = DeltaSlot::Delta(Box::new(incoming)),
                }
            }
        }
        let bytes = event_frame_len(channel, &event);
        self.admit(bytes)?;
        let run = event.run_id;
        self.entries.push_back((now, Entry::Event(EventEntry { channel, event, bytes, delta })));
        self.bytes += bytes;
        self.last_event.insert((channel, run), self.tail);
        self.tail += 1;
        Ok(Pushed::Queued)
    }

    /// The next frame to send, oldest first.
    pub fn pop(&mut self) -> Option<OutFrame> {
        let (_, entry) = self.entries.pop_front()?;
        let position = self.head;
        self.head += 1;
        self.bytes -= entry.bytes();
        if self.entries.is_empty() {
            // An idle connection holds no queue: what a burst made room for goes back.
            self.entries = VecDeque::new();
            self.last_event.clear();
            self.last_event.shrink_to_fit();
        }
        Some(match entry {
            Entry::Control(frame) => OutFrame::Control(frame),
            Entry::Event(EventEntry { channel, event, delta, .. }) => {
                let key = (channel, event.run_id);
                if self.last_event.get(&key) == Some(&position) {
                    self.last_event.remove(&key);
                }
                OutFrame::Event(match delta {
                    DeltaSlot::Delta(delta) if delta.merged_here(&event) => {
                        event_frame(channel, &delta.to_event(&event)).into()
                    }
                    _ => event.shared_frame(|event| event_frame(channel, event)),
                })
            }
        })
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The queued frames' length in bytes (merged deltas counted closely, not exactly).
    pub const fn bytes(&self) -> usize {
        self.bytes
    }

    /// `step.delta` events merged into another one since the queue was made.
    pub const fn coalesced_deltas(&self) -> u64 {
        self.coalesced_deltas
    }

    /// Whether the connection is held back by its broadcast rate: deltas then merge
    /// whatever the queue's length.
    pub const fn set_throttled(&mut self, throttled: bool) {
        self.throttled = throttled;
    }

    /// Whether the oldest queued frame has waited longer than the limits allow at `now`:
    /// the client is not keeping up (close it with 1013).
    pub fn too_late(&self, now: Instant) -> bool {
        self.entries
            .front()
            .is_some_and(|(queued, _)| now.saturating_duration_since(*queued) > self.limits.max_delay)
    }

    /// Whether the queue is at or above its high-water mark (history reads wait below it).
    pub fn at_high_water(&self) -> bool {
        self.entries.len() >= self.limits.high_water_messages || self.bytes >= self.limits.high_water_bytes
    }

    /// Whether a new frame of `bytes` fits; an empty queue takes any one frame.
    fn admit(&self, bytes: usize) -> Result<(), Overflow> {
        let fits = self.entries.len() < self.limits.max_messages
            && self.bytes.saturating_add(bytes) <= self.limits.max_bytes;
        if fits || self.entries.is_empty() { Ok(()) } else { Err(Overflow) }
    }

    /// Merges `incoming` into the last queued event of `run` on `channel` when that is the
    /// delta it continues; gives `incoming` back otherwise.
    ///
    /// # Errors
    /// [`Overflow`] when the merged frame would not fit the byte bound (nothing changes).
    fn merge(&mut self, channel: StreamChannel, run: RunId, incoming: Delta) -> Result<Merge, Overflow> {
        let index = self
            .last_event
            .get(&(channel, run))
            .and_then(|position| position.checked_sub(self.head))
            .and_then(|index| usize::try_from(index).ok());
        let Some((_, Entry::Event(target))) = index.and_then(|index| self.entries.get_mut(index)) else {
            return Ok(Merge::Declined(incoming));
        };
        if matches!(target.delta, DeltaSlot::Unread) {
            target.delta = DeltaSlot::read(&target.event);
        }
        let DeltaSlot::Delta(queued) = &mut target.delta else {
            return Ok(Merge::Declined(incoming));
        };
        if !queued.continued_by(&incoming) {
            return Ok(Merge::Declined(incoming));
        }
        let growth = incoming.text_len() + if queued.is_merged() { 0 } else { COALESCED_OVERHEAD };
        if self.bytes.saturating_add(growth) > self.limits.max_bytes {
            return Err(Overflow);
        }
        queued.merge(incoming);
        target.bytes += growth;
        self.bytes += growth;
        self.coalesced_deltas += 1;
        Ok(Merge::Done)
    }
}

/// Whether a delta was merged into the one it continues.
enum Merge {
    Done,
    /// Not merged: the delta, to be queued on its own.
    Declined(Delta),
}

#[cfg(test)]
mod tests;
