//! The events of one run on one subscription, replayed then live, each delivered once and
//! in `seq` order: the state machine behind [`super::SubscriptionFeed`].

use std::collections::VecDeque;

use sba_domain::RunId;

use super::{FeedLimits, HistoryRead, Next, OnLive};
use crate::ports::LiveEvent;

#[derive(Debug)]
pub(super) struct RunFeed {
    run: RunId,
    /// The last seq delivered (or the subscription's `after_seq`); `None` for a live-only
    /// feed before its first event.
    last: Option<u64>,
    state: State,
    /// Live events that arrived while the history was read, in seq order, all after `last`.
    held: VecDeque<LiveEvent>,
    /// Live events may be missing after `held` (it was full, or the bus lost some): read
    /// the history again once `held` is delivered.
    reread: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    /// Waiting for the caller's answer to `read`. Events are in the history before they are
    /// published, so a read made after a live event arrived finds every seq before it that
    /// the history still holds: `known_through` is the newest held event when the read was
    /// asked for, below which a seq the read did not return is lost for good.
    Reading {
        read: HistoryRead,
        known_through: Option<u64>,
    },
    /// Events were lost that the history could not give back; nothing more is delivered.
    Ended,
}

impl RunFeed {
    /// A feed that replays the run's events after `after_seq`, starting with the read returned.
    pub(super) fn replaying(run: RunId, after_seq: u64, limits: &FeedLimits) -> (Self, HistoryRead) {
        let mut feed = Self::live(run);
        feed.last = Some(after_seq);
        let read = feed.read(after_seq, limits.page);
        (feed, read)
    }

    /// A live-only feed: it starts at its first live event.
    pub(super) const fn live(run: RunId) -> Self {
        Self { run, last: None, state: State::Live, held: VecDeque::new(), reread: false }
    }

    pub(super) const fn is_reading(&self) -> bool {
        matches!(self.state, State::Reading { .. })
    }

    /// A live event of the run.
    pub(super) fn on_event(&mut self, event: LiveEvent, limits: &FeedLimits) -> OnLive {
        match (self.state, self.last) {
            (State::Ended, _) => OnLive::Nothing,
            (State::Reading { .. }, _) => {
                self.hold(event, limits);
                OnLive::Nothing
            }
            (State::Live, None) => {
                self.last = Some(event.seq);
                OnLive::Deliver(event)
            }
            (State::Live, Some(last)) if event.seq <= last => OnLive::Nothing,
            (State::Live, Some(last)) if event.first_seq == last + 1 => {
                self.last = Some(event.seq);
                OnLive::Deliver(event)
            }
            (State::Live, Some(last)) => {
                // A gap before the event: read it. Or merged deltas of which some were
                // delivered already (they cannot be split): read them one by one instead.
                let through = if event.first_seq > last + 1 { event.first_seq - 1 } else { event.seq };
                let limit = limits.page.min(through - last);
                self.held.push_back(event);
                OnLive::Read(self.read(last, limit))
            }
        }
    }

    /// The bus may have lost events of the run: read them from the history after the last
    /// one delivered (a live-only feed that delivered nothing yet has no place to resume
    /// from, and carries on with the next live event).
    pub(super) fn on_resume_needed(&mut self, limits: &FeedLimits) -> Option<HistoryRead> {
        match (self.state, self.last) {
            (State::Live, Some(last)) => Some(self.read(last, limits.page)),
            (State::Reading { .. }, _) => {
                self.reread = true;
                None
            }
            (State::Live, None) | (State::Ended, _) => None,
        }
    }

    /// The caller's answer to the pending read: the run's events after its `after_seq`, in
    /// seq order. Events the feed already delivered are skipped; the events returned are
    /// those to deliver, in order.
    pub(super) fn on_history(
        &mut self,
        events: Vec<LiveEvent>,
        limits: &FeedLimits,
    ) -> (Vec<LiveEvent>, Next) {
        let State::Reading { read, known_through } = self.state else {
            return (Vec::new(), self.next());
        };
        let full = events.len() as u64 >= read.limit;
        let mut last = self.last.unwrap_or(read.after_seq);
        let mut deliver = Vec::with_capacity(events.len() + self.held.len());
        let mut hole = false;
        for event in events {
            if event.seq <= last {
                continue;
            }
            if event.seq != last + 1 {
                hole = true;
                break;
            }
            last = event.seq;
            deliver.push(event);
        }
        let held_before = self.held.len();
        // A held event of merged deltas some of which were delivered: the rest is read.
        let mut overlapped = false;
        while let Some(front) = self.held.front() {
            if front.first_seq > last + 1 {
                break;
            }
            let Some(event) = self.held.pop_front() else { break };
            if event.seq <= last {
                continue;
            }
            if event.first_seq <= last {
                overlapped = true;
                break;
            }
            last = event.seq;
            deliver.push(event);
        }
        self.last = Some(last);
        let caught_up_live = self.held.len() < held_before;
        self.state = State::Live;
        let next = match self.held.front() {
            // The history ended before the next held event, which was published before the
            // read: the seqs between are lost.
            Some(front)
                if !overlapped
                    && (hole || (!full && known_through.is_some_and(|known| front.seq <= known))) =>
            {
                self.end()
            }
            // A full page, or a held event that arrived during the read: read up to it.
            Some(front) => {
                let limit = limits.page.min(front.first_seq.saturating_sub(last + 1).max(1));
                Next::Read(self.read(last, limit))
            }
            None if hole => self.end(),
            None if overlapped => Next::Read(self.read(last, limits.page)),
            None if self.reread => {
                self.reread = false;
                Next::Read(self.read(last, limits.page))
            }
            // A full page with nothing live after it: the history goes on.
            None if full && !caught_up_live => Next::Read(self.read(last, limits.page)),
            None => Next::Live,
        };
        (deliver, next)
    }

    /// The pending read failed: the events it was for cannot be delivered in order.
    pub(super) fn on_read_failed(&mut self) -> Next {
        if self.is_reading() { self.end() } else { self.next() }
    }

    fn next(&self) -> Next {
        match self.state {
            State::Reading { read, .. } => Next::Read(read),
            State::Ended => Next::ResumeRequired { run: self.run, after_seq: self.last.unwrap_or(0) },
            State::Live => Next::Live,
        }
    }

    fn read(&mut self, after_seq: u64, limit: u64) -> HistoryRead {
        let read = HistoryRead { run: self.run, after_seq, limit: limit.max(1) };
        self.state = State::Reading { read, known_through: self.held.back().map(|held| held.seq) };
        read
    }

    fn hold(&mut self, event: LiveEvent, limits: &FeedLimits) {
        let newest = self.held.back().map(|held| held.seq).or(self.last);
        if newest.is_some_and(|newest| event.seq <= newest) {
            return;
        }
        if self.held.len() < limits.held {
            self.held.push_back(event);
        } else {
            // Dropped here, read from the history once the held events are delivered.
            self.reread = true;
        }
    }

    fn end(&mut self) -> Next {
        self.state = State::Ended;
        self.held.clear();
        self.next()
    }
}
