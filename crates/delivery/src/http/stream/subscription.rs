//! A connection's subscriptions, served by the connection's task: the bus messages of each
//! channel go through its [`SubscriptionFeed`], the history reads the feeds ask for go to
//! the [`ReplaySource`] one at a time (each started once the outbound queue is below its
//! high-water mark, so a long replay paces itself to the client), and what the feeds
//! deliver goes into the connection's outbound queue.
//!
//! The bus is read all the time, also while a history read is in progress or waits for
//! room in the queue: live events that arrive meanwhile are held by the feed (within its
//! bound), never left to overflow the bus subscription's buffer.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use sba_application::ports::{BusMessage, LiveEvent, Subscription};
use sba_application::stream::outbound::Overflow;
use sba_application::stream::protocol::{ErrorFrame, StreamChannel};
use sba_application::stream::replay::{ReplayError, ReplaySource};
use sba_application::stream::subscription::{HistoryRead, Next, OnLive, SubscriptionFeed};

use super::metrics;
use super::outbound::Outbound;

/// The most bus messages of one subscription handled in a row (what its buffer already
/// holds after the message that woke the connection), before the connection's other work
/// gets a turn.
const MAX_MESSAGES_IN_A_ROW: usize = 256;

/// A history read in progress.
type ReadFuture = Pin<Box<dyn Future<Output = Result<Vec<LiveEvent>, ReplayError>> + Send>>;

/// The subscriptions of one connection.
#[derive(Default)]
pub struct Subscriptions {
    list: Vec<Entry>,
    /// The key the next subscription gets (a read's answer finds its subscription by key,
    /// so an answer for a subscription since ended is dropped, never given to another one
    /// to the same channel).
    next_key: u64,
    reading: Option<Reading>,
    /// Where the next read is looked for: subscriptions take turns.
    next_reader: usize,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("channels", &self.list.iter().map(|channel| channel.channel).collect::<Vec<_>>())
            .field("reading", &self.reading.is_some())
            .finish_non_exhaustive()
    }
}

/// One subscription.
struct Entry {
    key: u64,
    channel: StreamChannel,
    messages: Subscription,
    feed: SubscriptionFeed,
    /// Reads asked for and not made yet, oldest first.
    reads: VecDeque<HistoryRead>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        metrics::subscriptions(-1.0);
    }
}

struct Reading {
    key: u64,
    read: HistoryRead,
    future: ReadFuture,
}

/// What woke the subscriptions (see [`Subscriptions::next`]).
pub enum Wake {
    /// A bus message of the subscription at this place (`None`: the bus closed it).
    Message(usize, Option<BusMessage>),
    Read(ReadDone),
}

/// A history read that finished.
pub struct ReadDone {
    key: u64,
    read: HistoryRead,
    result: Result<Vec<LiveEvent>, ReplayError>,
}

impl Subscriptions {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn contains(&self, channel: StreamChannel) -> bool {
        self.list.iter().any(|subscribed| subscribed.channel == channel)
    }

    /// Adds the subscription to `channel`, whose feed asked for `first_read`.
    pub fn insert(
        &mut self,
        channel: StreamChannel,
        messages: Subscription,
        feed: SubscriptionFeed,
        first_read: Option<HistoryRead>,
    ) {
        metrics::subscriptions(1.0);
        self.next_key += 1;
        let reads = first_read.into_iter().collect();
        // Most connections subscribe once: no room is made for more until they do.
        self.list.reserve_exact(1);
        self.list.push(Entry { key: self.next_key, channel, messages, feed, reads });
    }

    /// Ends the subscription to `channel`, if there is one.
    pub fn remove(&mut self, channel: StreamChannel) {
        self.list.retain(|subscribed| subscribed.channel != channel);
    }

    pub fn clear(&mut self) {
        self.list.clear();
        self.reading = None;
    }

    /// The next bus message of any subscription (with the subscription's place), or the end
    /// of the history read in progress; never without either. Cancel-safe.
    pub async fn next(&mut self) -> Wake {
        let Self { list, reading, .. } = self;
        let read = poll_fn(|cx| {
            let Some(running) = reading.as_mut() else { return Poll::Pending };
            let result = std::task::ready!(running.future.as_mut().poll(cx));
            let (key, read) = (running.key, running.read);
            *reading = None;
            Poll::Ready(ReadDone { key, read, result })
        });
        match list.as_mut_slice() {
            [] => Wake::Read(read.await),
            [only] => tokio::select! {
                message = only.messages.recv() => Wake::Message(0, message),
                done = read => Wake::Read(done),
            },
            several => {
                let mut receiving: Vec<_> =
                    several.iter_mut().map(|channel| Box::pin(channel.messages.recv())).collect();
                let mut read = std::pin::pin!(read);
                poll_fn(|cx| {
                    if let Poll::Ready(done) = read.as_mut().poll(cx) {
                        return Poll::Ready(Wake::Read(done));
                    }
                    for (index, recv) in receiving.iter_mut().enumerate() {
                        if let Poll::Ready(message) = recv.as_mut().poll(cx) {
                            return Poll::Ready(Wake::Message(index, message));
                        }
                    }
                    Poll::Pending
                })
                .await
            }
        }
    }

    /// Handles `message` of the subscription at `index`, then the messages its bus buffer
    /// already holds (up to [`MAX_MESSAGES_IN_A_ROW`]), so that a burst is queued, and
    /// written, at once.
    ///
    /// # Errors
    /// [`Overflow`]: close the connection with 1013.
    pub fn on_message(
        &mut self,
        index: usize,
        message: Option<BusMessage>,
        outbound: &mut Outbound,
    ) -> Result<(), Overflow> {
        let Some(subscribed) = self.list.get_mut(index) else { return Ok(()) };
        let now = Instant::now();
        let mut message = message;
        for _ in 0..MAX_MESSAGES_IN_A_ROW {
            match message {
                Some(BusMessage::Event(event)) => match subscribed.feed.on_event(event) {
                    OnLive::Deliver(event) => outbound.push_event(subscribed.channel, event, now)?,
                    OnLive::Nothing => {}
                    OnLive::Read(read) => subscribed.reads.push_back(read),
                },
                Some(BusMessage::ResumeNeeded) => {
                    metrics::bus_resume();
                    let reads = subscribed.feed.on_resume_needed();
                    subscribed.reads.extend(reads);
                }
                None => {
                    // The bus keeps a channel open while it has subscribers: only a bus
                    // shutting down ends it. The client resumes on another connection.
                    tracing::warn!(channel = %subscribed.channel, "the event bus closed a subscription");
                    self.list.remove(index);
                    return Ok(());
                }
            }
            message = subscribed.messages.try_recv();
            if message.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Starts the oldest read a subscription waits for (the subscriptions take turns) from
    /// the source `replay` makes, unless one is in progress or the queue is at its
    /// high-water mark.
    pub fn start_read(&mut self, outbound: &Outbound, replay: impl FnOnce() -> Arc<dyn ReplaySource>) {
        if self.reading.is_some() || self.list.is_empty() || outbound.at_high_water() {
            return;
        }
        let count = self.list.len();
        for turn in 0..count {
            let index = (self.next_reader + turn) % count;
            let channel = &mut self.list[index];
            if let Some(read) = channel.reads.pop_front() {
                metrics::history_read();
                let replay = replay();
                let future = Box::pin(async move { replay.read(read).await });
                self.reading = Some(Reading { key: channel.key, read, future });
                self.next_reader = index + 1;
                return;
            }
        }
    }

    /// Gives a finished read to its subscription's feed (dropped if the subscription has
    /// ended since) and queues what the feed delivers.
    ///
    /// # Errors
    /// [`Overflow`]: close the connection with 1013.
    pub fn on_read(&mut self, done: ReadDone, outbound: &mut Outbound) -> Result<(), Overflow> {
        let Some(index) = self.list.iter().position(|channel| channel.key == done.key) else { return Ok(()) };
        let subscribed = &mut self.list[index];
        let run = done.read.run;
        let next = match done.result {
            Ok(events) => {
                let (deliver, next) = subscribed.feed.on_history(run, events);
                let now = Instant::now();
                for event in deliver {
                    outbound.push_event(subscribed.channel, event, now)?;
                }
                next
            }
            Err(error) => {
                tracing::warn!(
                    channel = %subscribed.channel,
                    error = format!("{error:#}"),
                    "reading a run's history for a subscription failed; the client is told to resume"
                );
                subscribed.feed.on_read_failed(run)
            }
        };
        match next {
            Next::Live => {}
            Next::Read(read) => subscribed.reads.push_back(read),
            Next::ResumeRequired { run, after_seq } => {
                outbound.push_control(ErrorFrame::resume_required(run, after_seq).to_text())?;
                // On a run channel that was its only run; other channels follow the rest.
                if matches!(subscribed.channel, StreamChannel::Run(_)) {
                    self.list.remove(index);
                }
            }
        }
        Ok(())
    }
}
