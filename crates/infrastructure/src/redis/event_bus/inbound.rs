//! What the follower does with the messages its subscriber connection hears: canaries and
//! lag probes go to their owners; events are decoded, put back in order ([`Reorder`]) and
//! sent to the local subscribers.
//!
//! **Behind.** While the lag probe says this node hears the bus later than the lag limit
//! ([`LagProbe`]; Redis is then holding the node's messages in its output buffer, and no
//! queue of the node shows it), every message already received is taken at once and each
//! channel's consecutive `step.delta` events of one step are merged
//! ([`coalesce_deltas`]) before the fan-out: every subscriber gets fewer, larger frames, the
//! node does a fraction of the work per event, and it catches up instead of falling further
//! behind. Nothing is dropped: a merged delta carries the whole text and its seq range, and
//! lifecycle events, tool calls and usage pass unmerged and in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fred::types::Message;
use sba_application::ports::{BusMessage, LiveEvent};
use sba_application::stream::outbound::coalesce_deltas;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;

use super::canary::Canary;
use super::decode;
use super::lag::LagProbe;
use super::reorder::Reorder;
use crate::memory::event_bus::Fanout;

/// When an event was accepted: the `created_at` of its client JSON, which is that object's
/// last member (`{"seq","run_id","kind","data","created_at"}`), so the last unescaped
/// `"created_at":"` is its own and never a key inside `data`.
fn accepted_at(json: &str) -> Option<DateTime<Utc>> {
    const KEY: &str = "\"created_at\":\"";
    let start = json.rfind(KEY)? + KEY.len();
    let end = start + json[start..].find('"')?;
    DateTime::parse_from_rfc3339(&json[start..end]).ok().map(|t| t.with_timezone(&Utc))
}

/// The most messages taken at once while behind.
const MAX_TAKEN: usize = 1024;

pub(super) struct Inbound {
    fanout: Arc<Fanout>,
    canary: Arc<Canary>,
    lag: Arc<LagProbe>,
    reorder: Reorder,
    lag_limit: Duration,
    /// Whether the last message found the node behind (for the log of its changes).
    behind: bool,
    merged: metrics::Counter,
    delivery_seconds: metrics::Histogram,
}

impl Inbound {
    pub(super) fn new(
        fanout: Arc<Fanout>,
        canary: Arc<Canary>,
        lag: Arc<LagProbe>,
        reorder: Reorder,
        lag_limit: Duration,
    ) -> Self {
        Self {
            fanout,
            canary,
            lag,
            reorder,
            lag_limit,
            behind: false,
            merged: metrics::counter!("sba_event_bus_merged_deltas_total"),
            delivery_seconds: metrics::histogram!("sba_event_bus_delivery_seconds"),
        }
    }

    /// A message heard; while behind, with every other one `more` holds already.
    pub(super) fn on_message(&mut self, message: &Message, more: &mut Receiver<Message>) {
        if !self.is_behind() {
            if let Some(events) = self.events_of(message) {
                self.record_delivery(&events);
                self.fanout.send_events(&message.channel, events);
            }
            return;
        }
        let mut channels: Vec<(String, Vec<LiveEvent>)> = Vec::new();
        let mut add = |channel: &str, events: Vec<LiveEvent>| match channels
            .iter_mut()
            .find(|(known, _)| known == channel)
        {
            Some((_, list)) => list.extend(events),
            None => channels.push((channel.to_owned(), events)),
        };
        if let Some(events) = self.events_of(message) {
            add(&message.channel, events);
        }
        let mut lagged = None;
        for _ in 1..MAX_TAKEN {
            match more.try_recv() {
                Ok(message) => {
                    if let Some(events) = self.events_of(&message) {
                        add(&message.channel, events);
                    }
                }
                Err(TryRecvError::Lagged(missed)) => {
                    lagged = Some(missed);
                    break;
                }
                Err(_) => break,
            }
        }
        for (channel, events) in channels {
            self.record_delivery(&events);
            let (events, merged) = coalesce_deltas(events);
            self.merged.increment(u64::try_from(merged).unwrap_or(u64::MAX));
            self.fanout.send_events(&channel, events);
        }
        if let Some(missed) = lagged {
            self.on_lagged(missed);
        }
    }

    /// Fan-out latency: from the last event's acceptance (its `created_at`, by the ingesting
    /// node's clock) to its hand-off to this node's local subscribers. One sample per message
    /// and channel, not per subscriber: the cost does not grow with the audience.
    fn record_delivery(&self, events: &[LiveEvent]) {
        if let Some(accepted) = events.last().and_then(|e| accepted_at(&e.json)) {
            // A clock behind the ingesting node's counts as no delay.
            let elapsed = Utc::now().signed_duration_since(accepted).to_std().unwrap_or_default();
            self.delivery_seconds.record(elapsed.as_secs_f64());
        }
    }

    /// The subscriber connection's buffer overflowed: messages were lost.
    pub(super) fn on_lagged(&mut self, missed: u64) {
        tracing::warn!(missed, "event bus: the local fan-out fell behind; subscribers resume");
        self.resume_all();
    }

    /// Every local subscriber must resume from the history (after delivering what waits for
    /// its turn, which is still in order).
    pub(super) fn resume_all(&mut self) {
        for (channel, events) in self.reorder.reset() {
            self.fanout.send_events(&channel, events);
        }
        self.fanout.send_all(&BusMessage::ResumeNeeded);
    }

    /// The subscribers of `channel` must resume (its Redis subscription failed).
    pub(super) fn resume(&self, channel: &str) {
        self.fanout.send(channel, BusMessage::ResumeNeeded);
    }

    /// When the first batch waiting for its turn is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.reorder.next_due()
    }

    /// Delivers the waiting batches that are due.
    pub(super) fn expire(&mut self) {
        for (channel, events) in self.reorder.expire(Instant::now()) {
            self.fanout.send_events(&channel, events);
        }
    }

    /// The channel has no local subscriber any more.
    pub(super) fn forget(&mut self, channel: &str) {
        self.reorder.forget(channel);
    }

    fn is_behind(&mut self) -> bool {
        let lag = self.lag.delay();
        let behind = lag > self.lag_limit;
        if behind != self.behind {
            self.behind = behind;
            if behind {
                tracing::warn!(
                    lag_ms = lag.as_millis(),
                    limit_ms = self.lag_limit.as_millis(),
                    "event bus: this node hears the bus late; merging deltas until it catches up"
                );
            } else {
                tracing::info!(
                    lag_ms = lag.as_millis(),
                    "event bus: caught up; deltas are sent one by one again"
                );
            }
        }
        behind
    }

    /// The events of `message` that may be delivered now, in order; `None` for the canary
    /// channel's messages and malformed ones.
    fn events_of(&mut self, message: &Message) -> Option<Vec<LiveEvent>> {
        if message.channel == self.canary.channel() {
            let payload = message.value.as_str();
            let payload = payload.as_deref().unwrap_or_default();
            if !self.lag.returned(payload, Instant::now()) {
                self.canary.returned(payload);
            }
            return None;
        }
        let Some(events) = message.value.as_str().as_deref().and_then(decode) else {
            tracing::debug!(channel = %message.channel, "event bus: ignoring a malformed message");
            return None;
        };
        Some(self.reorder.accept(&message.channel, events, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acceptance_time_is_the_events_own_created_at_never_one_inside_its_data() {
        let json = r#"{"seq":7,"run_id":"r","kind":"step.delta","data":{"text":"\"created_at\":\"1999-01-01T00:00:00Z\"","created_at":"2001-01-01T00:00:00Z"},"created_at":"2026-12-06T16:32:25.987534Z"}"#;
        assert_eq!(accepted_at(json).unwrap().to_rfc3339(), "2026-12-06T16:32:25.987534+00:00");
        assert_eq!(accepted_at(r#"{"seq":1}"#), None);
        assert_eq!(accepted_at(r#"{"created_at":"not a time"}"#), None);
    }
}
