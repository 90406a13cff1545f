//! `step.delta` events as the outbound queue merges them: read from an event's client JSON
//! once, and written back as one coalesced event.

use std::fmt::Write as _;

use sba_domain::events::EventKind;
use serde::Deserialize;

use crate::ports::LiveEvent;
use crate::stream::protocol::push_json_string;

/// The fixed text a coalesced delta adds to a delta's frame, besides the seqs' digits:
/// `,"coalesced":{"from_seq":,"to_seq":}` (for the queue's byte count, which only needs to
/// be close).
pub(super) const COALESCED_OVERHEAD: usize = 64;

/// A `step.delta` event, possibly several consecutive ones of one step merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Delta {
    step_id: String,
    text: String,
    /// The `created_at` of the last merged event, as its JSON wrote it.
    created_at: String,
    from_seq: u64,
    to_seq: u64,
}

/// The client JSON of a `step.delta` event (`EventView`); `data` holds exactly what the
/// domain's `step.delta` holds, so an event carrying anything else is never merged.
#[derive(Deserialize)]
struct DeltaView {
    seq: u64,
    kind: EventKind,
    data: DeltaData,
    created_at: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeltaData {
    step_id: String,
    text: String,
    /// Deltas merged already (by the bus of a node that fell behind).
    coalesced: Option<Coalesced>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Coalesced {
    from_seq: u64,
    to_seq: u64,
}

impl Delta {
    /// The delta `event` carries, or `None` when it is not a plain `step.delta` of its seq.
    pub(super) fn read(event: &LiveEvent) -> Option<Self> {
        // The bus carries `RunEvent::to_client_json`'s compact text, so this finds every
        // delta; it spares parsing the other kinds (a miss would only leave a delta unmerged).
        if !event.json.contains(r#""kind":"step.delta""#) {
            return None;
        }
        let view: DeltaView = serde_json::from_str(&event.json).ok()?;
        let range = view.data.coalesced.map_or((event.seq, event.seq), |c| (c.from_seq, c.to_seq));
        (view.kind == EventKind::StepDelta && view.seq == event.seq && range == (event.first_seq, event.seq))
            .then_some(Self {
                step_id: view.data.step_id,
                text: view.data.text,
                created_at: view.created_at,
                from_seq: event.first_seq,
                to_seq: event.seq,
            })
    }

    /// Whether deltas were merged into `event` in the queue (its frame is then written
    /// anew; an event merged before it was queued is sent as it came).
    pub(super) const fn merged_here(&self, event: &LiveEvent) -> bool {
        self.to_seq != event.seq || self.from_seq != event.first_seq
    }

    /// Whether `next` continues this delta: the same step, the very next seq.
    pub(super) fn continued_by(&self, next: &Self) -> bool {
        self.step_id == next.step_id && self.to_seq.checked_add(1) == Some(next.from_seq)
    }

    /// Appends `next` (which [`Self::continued_by`] accepted).
    pub(super) fn merge(&mut self, next: Self) {
        self.text.push_str(&next.text);
        self.to_seq = next.to_seq;
        self.created_at = next.created_at;
    }

    pub(super) fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Whether the delta stands for several events (its frame carries `coalesced`).
    pub(super) const fn is_merged(&self) -> bool {
        self.to_seq != self.from_seq
    }

    /// The merged event as clients see an event (`{"seq","run_id","kind","data","created_at"}`,
    /// in `EventView`'s order), `seq` being the last merged one and `data` adding
    /// `"coalesced": {"from_seq","to_seq"}`.
    pub(super) fn to_event(&self, first: &LiveEvent) -> LiveEvent {
        let mut json = String::with_capacity(self.text.len() + self.step_id.len() + 200);
        // Writing into a `String` cannot fail.
        let _ = write!(
            json,
            r#"{{"seq":{},"run_id":"{}","kind":"step.delta","data":{{"step_id":"#,
            self.to_seq, first.run_id
        );
        push_json_string(&mut json, &self.step_id);
        json.push_str(r#","text":"#);
        push_json_string(&mut json, &self.text);
        let _ = write!(
            json,
            r#","coalesced":{{"from_seq":{},"to_seq":{}}}}},"created_at":"#,
            self.from_seq, self.to_seq
        );
        push_json_string(&mut json, &self.created_at);
        json.push('}');
        LiveEvent::merged(first.run_id, self.from_seq, self.to_seq, json)
    }
}

/// The most text a merge makes one delta carry; the next delta starts a new one.
const MAX_MERGED_TEXT: usize = 64 * 1024;

/// `events` (of one channel, each run's in seq order) with every `step.delta` merged into
/// the event before it of its run when that is the delta it continues, as the outbound
/// queue merges them above its high-water mark: the order of each run's events is kept,
/// nothing but consecutive deltas of one step is merged, and a merged delta carries
/// `data.coalesced` ([`LiveEvent::first_seq`] is its first seq). For a node whose bus fell
/// behind: it sends fewer, larger frames to every subscriber instead of falling further
/// behind. Returns the events and how many were merged into another.
pub fn coalesce_deltas(events: Vec<LiveEvent>) -> (Vec<LiveEvent>, usize) {
    let mut out: Vec<(LiveEvent, Option<Delta>)> = Vec::with_capacity(events.len());
    let mut last_of_run: std::collections::HashMap<sba_domain::RunId, usize> =
        std::collections::HashMap::new();
    let mut merged = 0;
    for event in events {
        let incoming = Delta::read(&event);
        if let Some(incoming) = &incoming
            && let Some(&index) = last_of_run.get(&event.run_id)
            && let Some((_, Some(queued))) = out.get_mut(index)
            && queued.continued_by(incoming)
            && queued.text_len() + incoming.text_len() <= MAX_MERGED_TEXT
        {
            queued.merge(incoming.clone());
            merged += 1;
            continue;
        }
        last_of_run.insert(event.run_id, out.len());
        out.push((event, incoming));
    }
    let events = out
        .into_iter()
        .map(|(event, delta)| match delta {
            Some(delta) if delta.merged_here(&event) => delta.to_event(&event),
            _ => event,
        })
        .collect();
    (events, merged)
}
