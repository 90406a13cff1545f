//! Replay-then-live delivery for one subscription: which events to send, in which order,
//! and when to read the run history instead, as a state machine the gateway drives
//! ([`SubscriptionFeed`]). It reads nothing itself: it asks for a [`HistoryRead`], and the
//! gateway answers with the events read ([`super::replay::ReplaySource`] reads them).
//!
//! Per run, events are delivered once and in `seq` order, without a gap:
//!
//! - **Replay.** A `run:` subscription with `after_seq` first reads the run's history after
//!   it, page by page. Live events arriving meanwhile are held (up to
//!   [`FeedLimits::held`]; later ones are read from the history instead), then delivered
//!   after the replayed ones, skipping any seq already delivered.
//! - **Live only.** Without `after_seq`, delivery starts at the first live event, with no
//!   check of what came before it.
//! - **Gaps.** A live event beyond the next seq holds delivery while the missing seqs are
//!   read from the history. [`BusMessage::ResumeNeeded`] (the bus lost events) reads the
//!   history after the last seq delivered. A live-only feed that delivered nothing yet has
//!   no place to resume from and starts at its next live event.
//! - **Lost events.** Events are in the history before they are published, so a read asked
//!   for after a live event arrived returns every seq before it that the history holds.
//!   When such a read does not (the history was trimmed before the events were persisted,
//!   or a store could not be read), or a read fails, the run's delivery ends with
//!   [`Next::ResumeRequired`]: the gateway sends `resume_required` naming `run:<id>` and the
//!   last seq delivered (on a `run:` subscription this ends the subscription).
//! - **Session and tenant channels** carry many runs, each with its own seqs: every run
//!   is followed as above, live only from its first event on the channel, and at most
//!   [`FeedLimits::runs`] runs at a time (the run heard from longest ago is forgotten first,
//!   and starts over live only if it is heard from again).
//!
//! [`BusMessage::ResumeNeeded`]: crate::ports::BusMessage::ResumeNeeded

mod run_feed;

use std::collections::HashMap;

use sba_domain::RunId;

use self::run_feed::RunFeed;
use crate::ports::LiveEvent;

/// The bounds of a subscription's feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedLimits {
    /// Events asked for per history read.
    pub page: u64,
    /// Live events held per run while its history is read.
    pub held: usize,
    /// Runs followed at once on a session or tenant channel.
    pub runs: usize,
}

impl Default for FeedLimits {
    fn default() -> Self {
        Self { page: 100, held: 1024, runs: 1024 }
    }
}

/// Read up to `limit` events of `run` with `seq > after_seq`, in seq order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryRead {
    pub run: RunId,
    pub after_seq: u64,
    pub limit: u64,
}

/// What to do with a live event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnLive {
    /// Send it.
    Deliver(LiveEvent),
    /// Nothing now: a duplicate, or held until the history is read.
    Nothing,
    /// The event is held: read the history first and hand the events to
    /// [`SubscriptionFeed::on_history`].
    Read(HistoryRead),
}

/// What the feed needs after a history read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing: carry on with live events.
    Live,
    /// Read the history again.
    Read(HistoryRead),
    /// Events of `run` after `after_seq` cannot be delivered in order: its delivery has
    /// ended; tell the client to subscribe to `run:<run>` with `after_seq`.
    ResumeRequired { run: RunId, after_seq: u64 },
}

/// A subscription's delivery state (see the module documentation).
#[derive(Debug)]
pub struct SubscriptionFeed {
    limits: FeedLimits,
    runs: Runs,
    /// Counts the events seen, to tell which run was heard from longest ago.
    ticks: u64,
}

/// The runs a feed follows.
#[derive(Debug)]
enum Runs {
    /// A `run:` channel, which carries that run only: kept inline, since every idle
    /// subscription of a run has one.
    One(RunId, RunFeed),
    /// A `session:` or `tenant` channel: each run heard from, up to [`FeedLimits::runs`]
    /// (hashed with ahash: looked up once per event).
    Many(HashMap<RunId, Followed, ahash::RandomState>),
}

#[derive(Debug)]
struct Followed {
    feed: RunFeed,
    heard_at: u64,
}

impl SubscriptionFeed {
    /// The feed of a `run:` subscription: with `after_seq`, the read to replay from comes
    /// with it.
    pub fn run(run: RunId, after_seq: Option<u64>, limits: FeedLimits) -> (Self, Option<HistoryRead>) {
        let (feed, read) = match after_seq {
            Some(after_seq) => {
                let (feed, read) = RunFeed::replaying(run, after_seq, &limits);
                (feed, Some(read))
            }
            None => (RunFeed::live(run), None),
        };
        (Self { limits, runs: Runs::One(run, feed), ticks: 0 }, read)
    }

    /// The feed of a `session:` or `tenant` subscription: live only, per run.
    pub fn runs(limits: FeedLimits) -> Self {
        Self { limits, runs: Runs::Many(HashMap::with_hasher(ahash::RandomState::new())), ticks: 0 }
    }

    /// A live event from the subscription.
    pub fn on_event(&mut self, event: LiveEvent) -> OnLive {
        let limits = self.limits;
        let runs = match &mut self.runs {
            Runs::One(run, feed) => {
                return if *run == event.run_id { feed.on_event(event, &limits) } else { OnLive::Nothing };
            }
            Runs::Many(runs) => runs,
        };
        self.ticks += 1;
        if let Some(followed) = runs.get_mut(&event.run_id) {
            followed.heard_at = self.ticks;
            return followed.feed.on_event(event, &limits);
        }
        make_room(runs, &limits);
        let run = event.run_id;
        let mut feed = RunFeed::live(run);
        let next = feed.on_event(event, &limits);
        runs.insert(run, Followed { feed, heard_at: self.ticks });
        next
    }

    /// The bus may have lost events: the reads to make, one per run followed that had
    /// delivered something.
    pub fn on_resume_needed(&mut self) -> Vec<HistoryRead> {
        let limits = self.limits;
        match &mut self.runs {
            Runs::One(_, feed) => feed.on_resume_needed(&limits).into_iter().collect(),
            Runs::Many(runs) => {
                runs.values_mut().filter_map(|followed| followed.feed.on_resume_needed(&limits)).collect()
            }
        }
    }

    /// The answer to a read of `run`'s history: the events to deliver, in order, and what
    /// the run's feed needs next.
    pub fn on_history(&mut self, run: RunId, events: Vec<LiveEvent>) -> (Vec<LiveEvent>, Next) {
        let limits = self.limits;
        match self.feed_of(run) {
            Some(feed) => feed.on_history(events, &limits),
            None => (Vec::new(), Next::Live),
        }
    }

    /// A read of `run`'s history failed: the events it was for cannot be delivered in order.
    pub fn on_read_failed(&mut self, run: RunId) -> Next {
        self.feed_of(run).map_or(Next::Live, RunFeed::on_read_failed)
    }

    fn feed_of(&mut self, wanted: RunId) -> Option<&mut RunFeed> {
        match &mut self.runs {
            Runs::One(run, feed) => (*run == wanted).then_some(feed),
            Runs::Many(runs) => runs.get_mut(&wanted).map(|followed| &mut followed.feed),
        }
    }
}

impl Runs {
    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Self::One(..) => 1,
            Self::Many(runs) => runs.len(),
        }
    }
}

/// Forgets the run heard from longest ago when the feed follows as many as it may; a run
/// whose history is being read is kept (the caller owes it an answer), so the map exceeds
/// the bound only by such runs.
fn make_room(runs: &mut HashMap<RunId, Followed, ahash::RandomState>, limits: &FeedLimits) {
    if runs.len() < limits.runs {
        return;
    }
    let oldest = runs
        .iter()
        .filter(|(_, followed)| !followed.feed.is_reading())
        .min_by_key(|(_, followed)| followed.heard_at)
        .map(|(run, _)| *run);
    if let Some(run) = oldest {
        runs.remove(&run);
    }
}

#[cfg(test)]
mod tests;
