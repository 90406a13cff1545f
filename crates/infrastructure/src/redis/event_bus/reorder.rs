//! Putting a run's batches back in `seq` order on each channel before they reach the local
//! subscribers.
//!
//! Nodes sequence a run's events in Redis and then each publishes its own batch, so two
//! batches of one run ingested at the same time on two nodes can reach a channel in the
//! opposite order (the second node published first). Every subscription's feed would then
//! see a gap and read the run history to fill it: one read per local subscriber for each
//! swap. Here the early batch waits, at most the reorder window, for the one before it; the
//! pair is delivered in order, and the subscriptions never see the gap. A batch still
//! waiting at the end of the window is delivered as it is (the feeds fill the gap from the
//! history, as they always can), so the window bounds the delay it adds.
//!
//! The order is tracked per channel and run, from the first batch heard (the node does not
//! know what came before it): at most [`MAX_RUNS`] runs per channel (a tenant channel
//! carries many; past that the channel starts over) and [`MAX_HELD`] batches waiting per
//! run (past that they are all delivered).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use sba_application::ports::LiveEvent;
use sba_domain::RunId;

/// Runs tracked per channel.
pub(super) const MAX_RUNS: usize = 4096;
/// Batches waiting per run.
pub(super) const MAX_HELD: usize = 64;

/// Batches ready to deliver on a channel, in order.
pub(super) type Released = Vec<(String, Vec<LiveEvent>)>;

#[derive(Debug)]
pub(super) struct Reorder {
    window: Duration,
    channels: HashMap<String, HashMap<RunId, RunOrder>>,
    /// When waiting batches are due, in the order they started waiting (the window is the
    /// same for all, so the front is due first). An entry whose run has since caught up is
    /// skipped when it comes up.
    due: VecDeque<(Instant, String, RunId)>,
    /// Batches that came early and waited (`sba_event_bus_reordered_total`), and those
    /// whose window ended first (`sba_event_bus_reorder_timeouts_total`).
    waited: metrics::Counter,
    timed_out: metrics::Counter,
}

#[derive(Debug)]
struct RunOrder {
    /// The seq expected next.
    next: u64,
    /// Batches that came early, by their first seq.
    held: BTreeMap<u64, Vec<LiveEvent>>,
    /// When the oldest of `held` is due.
    due: Option<Instant>,
}

impl Reorder {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            window,
            channels: HashMap::new(),
            due: VecDeque::new(),
            waited: metrics::counter!("sba_event_bus_reordered_total"),
            timed_out: metrics::counter!("sba_event_bus_reorder_timeouts_total"),
        }
    }

    /// A batch (one run's events, in seq order) heard on `channel`: what to deliver now, in
    /// order (nothing when it came early and waits).
    pub(super) fn accept(&mut self, channel: &str, batch: Vec<LiveEvent>, now: Instant) -> Vec<LiveEvent> {
        let (run, first, after) = match (batch.first(), batch.last()) {
            (Some(first), Some(last)) if !self.window.is_zero() => (first.run_id, first.seq, last.seq + 1),
            _ => return batch,
        };
        if !self.channels.contains_key(channel) {
            self.channels.insert(channel.to_owned(), HashMap::new());
        }
        let Some(runs) = self.channels.get_mut(channel) else { return batch };
        if !runs.contains_key(&run) && runs.len() >= MAX_RUNS {
            // Too many runs to track on one channel: start over, delivering what waits now
            // (the due entries of those runs then find nothing and are skipped).
            let mut flushed: Vec<LiveEvent> =
                runs.drain().flat_map(|(_, order)| order.held.into_values().flatten()).collect();
            flushed.extend(batch);
            return flushed;
        }
        let order =
            runs.entry(run).or_insert_with(|| RunOrder { next: first, held: BTreeMap::new(), due: None });
        if first > order.next {
            self.waited.increment(1);
            order.held.insert(first, batch);
            if order.held.len() > MAX_HELD {
                return order.release_all();
            }
            if order.due.is_none() {
                let due = now + self.window;
                order.due = Some(due);
                self.due.push_back((due, channel.to_owned(), run));
            }
            return Vec::new();
        }
        // In order, or late (delivered anyway: the feeds drop what they already have).
        let mut deliver = batch;
        order.next = order.next.max(after);
        order.release_ready(&mut deliver);
        deliver
    }

    /// When the first waiting batch is due, if any.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.due.front().map(|(due, _, _)| *due)
    }

    /// The waiting batches due at `now`, delivered as they are (with a gap before them).
    pub(super) fn expire(&mut self, now: Instant) -> Released {
        let mut released = Vec::new();
        while let Some((due, _, _)) = self.due.front()
            && *due <= now
        {
            let Some((due, channel, run)) = self.due.pop_front() else { break };
            let order = self.channels.get_mut(&channel).and_then(|runs| runs.get_mut(&run));
            // Skipped when the run has caught up (or started waiting again since).
            if let Some(order) = order.filter(|order| order.due == Some(due)) {
                self.timed_out.increment(1);
                released.push((channel, order.release_all()));
            }
        }
        released
    }

    /// Everything waiting, delivered now, and the order forgotten (the bus may have lost
    /// messages: what comes next is the new start).
    pub(super) fn reset(&mut self) -> Released {
        self.due.clear();
        self.channels
            .drain()
            .flat_map(|(channel, runs)| {
                runs.into_values().map(move |mut order| (channel.clone(), order.release_all()))
            })
            .filter(|(_, events)| !events.is_empty())
            .collect()
    }

    /// The channel has no local subscriber any more.
    pub(super) fn forget(&mut self, channel: &str) {
        self.channels.remove(channel);
    }

    /// Batches waiting, over all channels (tests).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.channels.values().flat_map(HashMap::values).map(|order| order.held.len()).sum()
    }
}

impl RunOrder {
    /// Moves the held batches that now follow on into `deliver`.
    fn release_ready(&mut self, deliver: &mut Vec<LiveEvent>) {
        while let Some(entry) = self.held.first_entry()
            && *entry.key() <= self.next
        {
            let batch = entry.remove();
            if let Some(last) = batch.last() {
                self.next = self.next.max(last.seq + 1);
            }
            deliver.extend(batch);
        }
        if self.held.is_empty() {
            self.due = None;
        }
    }

    /// Every held batch, in order; the run expects what follows the last.
    fn release_all(&mut self) -> Vec<LiveEvent> {
        self.due = None;
        let mut deliver = Vec::new();
        for batch in std::mem::take(&mut self.held).into_values() {
            if let Some(last) = batch.last() {
                self.next = self.next.max(last.seq + 1);
            }
            deliver.extend(batch);
        }
        deliver
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    const WINDOW: Duration = Duration::from_millis(50);

    fn batch(run: RunId, seqs: std::ops::RangeInclusive<u64>) -> Vec<LiveEvent> {
        seqs.map(|seq| LiveEvent::new(run, seq, "{}")).collect()
    }

    fn seqs(events: &[LiveEvent]) -> Vec<u64> {
        events.iter().map(|event| event.seq).collect()
    }

    fn run(n: u128) -> RunId {
        RunId::from_uuid(Uuid::from_u128(n))
    }

    #[test]
    fn batches_in_order_pass_at_once() {
        let mut reorder = Reorder::new(WINDOW);
        let now = Instant::now();
        assert_eq!(seqs(&reorder.accept("c", batch(run(1), 5..=7), now)), [5, 6, 7]);
        assert_eq!(seqs(&reorder.accept("c", batch(run(1), 8..=9), now)), [8, 9]);
        assert_eq!(reorder.next_due(), None);
    }

    #[test]
    fn an_early_batch_waits_for_the_one_before_it_and_both_leave_in_order() {
        let mut reorder = Reorder::new(WINDOW);
        let now = Instant::now();
        reorder.accept("c", batch(run(1), 1..=2), now);
        assert!(reorder.accept("c", batch(run(1), 6..=8), now).is_empty());
        assert!(reorder.accept("c", batch(run(1), 9..=9), now).is_empty());
        assert_eq!(reorder.next_due(), Some(now + WINDOW));
        assert_eq!(seqs(&reorder.accept("c", batch(run(1), 3..=5), now)), [3, 4, 5, 6, 7, 8, 9]);
        // Caught up: the due entry finds nothing to release.
        assert!(reorder.expire(now + WINDOW).is_empty());
        assert_eq!(reorder.waiting(), 0);
        assert_eq!(seqs(&reorder.accept("c", batch(run(1), 10..=10), now)), [10]);
    }

    #[test]
    fn a_batch_whose_predecessor_never_comes_leaves_when_the_window_ends() {
        let mut reorder = Reorder::new(WINDOW);
        let now = Instant::now();
        reorder.accept("c", batch(run(1), 1..=2), now);
        assert!(reorder.accept("c", batch(run(1), 5..=6), now).is_empty());
        assert!(reorder.expire(now + Duration::from_millis(49)).is_empty());
        let released = reorder.expire(now + WINDOW);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].0, "c");
        assert_eq!(seqs(&released[0].1), [5, 6]);
        // The late one is still delivered (the feeds drop what they already have), and what
        // follows the released batch passes at once.
        assert_eq!(seqs(&reorder.accept("c", batch(run(1), 3..=4), now)), [3, 4]);
        assert_eq!(seqs(&reorder.accept("c", batch(run(1), 7..=7), now)), [7]);
    }

    #[test]
    fn runs_and_channels_are_ordered_apart() {
        let mut reorder = Reorder::new(WINDOW);
        let now = Instant::now();
        reorder.accept("a", batch(run(1), 1..=1), now);
        reorder.accept("b", batch(run(1), 1..=1), now);
        assert!(reorder.accept("a", batch(run(1), 3..=3), now).is_empty());
        // Another run on the same channel, and the same run on another channel, pass.
        assert_eq!(seqs(&reorder.accept("a", batch(run(2), 9..=9), now)), [9]);
        assert_eq!(seqs(&reorder.accept("b", batch(run(1), 2..=2), now)), [2]);
        assert_eq!(seqs(&reorder.accept("a", batch(run(1), 2..=2), now)), [2, 3]);
    }

    #[test]
    fn too_many_waiting_batches_are_all_delivered_in_order() {
        let mut reorder = Reorder::new(WINDOW);
        let now = Instant::now();
        reorder.accept("c", batch(run(1), 1..=1), now);
        for seq in (3..).take(MAX_HELD) {
            assert!(reorder.accept("c", batch(run(1), seq..=seq), now).is_empty());
        }
        let released = reorder.accept("c", batch(run(1), 100..=100), now);
        assert_eq!(released.len(), MAX_HELD + 1);
        assert!(released.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        assert_eq!(reorder.waiting(), 0);
    }

    #[test]
    fn a_channel_with_too_many_runs_starts_over_and_loses_nothing() {
        let mut reorder = Reorder::new(WINDOW);
        let now = Instant::now();
        reorder.accept("c", batch(run(0), 1..=1), now);
        assert!(reorder.accept("c", batch(run(0), 3..=3), now).is_empty());
        for n in 1..MAX_RUNS as u128 {
            reorder.accept("c", batch(run(n), 1..=1), now);
        }
        let flushed = reorder.accept("c", batch(run(99_999), 1..=1), now);
        assert_eq!(
            flushed.iter().map(|e| (e.run_id, e.seq)).collect::<Vec<_>>(),
            [(run(0), 3), (run(99_999), 1)]
        );
        assert!(reorder.expire(now + WINDOW).is_empty());
    }

    #[test]
    fn a_reset_delivers_what_waits_and_forgets_the_order() {
        let mut reorder = Reorder::new(WINDOW);
        let now = Instant::now();
        reorder.accept("c", batch(run(1), 1..=1), now);
        reorder.accept("c", batch(run(1), 4..=4), now);
        let released = reorder.reset();
        assert_eq!(released.len(), 1);
        assert_eq!(seqs(&released[0].1), [4]);
        assert_eq!(reorder.next_due(), None);
        // Starts over: any seq is the new start.
        assert_eq!(seqs(&reorder.accept("c", batch(run(1), 9..=9), now)), [9]);
    }

    #[test]
    fn a_zero_window_delivers_everything_as_it_comes() {
        let mut reorder = Reorder::new(Duration::ZERO);
        let now = Instant::now();
        reorder.accept("c", batch(run(1), 1..=1), now);
        assert_eq!(seqs(&reorder.accept("c", batch(run(1), 5..=5), now)), [5]);
    }
}
