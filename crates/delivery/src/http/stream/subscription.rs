//! One subscription of a connection, as a task: the bus messages of its channel go through
//! its [`SubscriptionFeed`], the history reads the feed asks for go to the
//! [`ReplaySource`] (each made once the outbound queue is below its high-water mark, so a
//! long replay paces itself to the client), and what the feed delivers goes into the
//! connection's outbound queue. The task ends when the connection drops it (unsubscribe,
//! close), when a `run:` subscription must be resumed, or when the queue overflows.

use std::collections::VecDeque;
use std::sync::Arc;

use sba_application::ports::{BusMessage, Subscription};
use sba_application::stream::outbound::Overflow;
use sba_application::stream::protocol::{ErrorFrame, StreamChannel};
use sba_application::stream::replay::ReplaySource;
use sba_application::stream::subscription::{HistoryRead, Next, OnLive, SubscriptionFeed};
use tokio::sync::mpsc;

use super::metrics;
use super::outbound::Outbound;

/// What a subscription tells its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The outbound queue overflowed: close with 1013.
    Overflow,
    /// The subscription to this channel has ended (its run must be resumed); forget it.
    Ended(StreamChannel),
}

/// A subscription's task state.
#[derive(Debug)]
pub struct SubscriptionTask {
    pub channel: StreamChannel,
    pub messages: Subscription,
    pub feed: SubscriptionFeed,
    /// Reads asked for and not made yet, oldest first.
    pub reads: VecDeque<HistoryRead>,
    pub replay: Arc<dyn ReplaySource>,
    pub outbound: Arc<Outbound>,
    pub signals: mpsc::UnboundedSender<Signal>,
}

/// How a step of the task ended.
enum Flow {
    Continue,
    Stop,
}

/// What the task does next.
enum Step {
    Message(Option<BusMessage>),
    /// The queue has room for the oldest read's events.
    Read,
}

/// Completes when a read is waiting and the queue is below its high-water mark; never
/// without a read.
async fn read_ready(reads: &VecDeque<HistoryRead>, outbound: &Outbound) {
    if reads.is_empty() {
        std::future::pending::<()>().await;
    }
    outbound.below_high_water().await;
}

impl SubscriptionTask {
    /// Reads the bus all the time, also while a history read waits for room in the queue:
    /// live events that arrive meanwhile are held by the feed (within its bound), never left
    /// to overflow the bus subscription's buffer.
    pub async fn run(mut self) {
        loop {
            let step = tokio::select! {
                message = self.messages.recv() => Step::Message(message),
                () = read_ready(&self.reads, &self.outbound) => Step::Read,
            };
            if let Step::Read = step
                && let Some(read) = self.reads.pop_front()
            {
                metrics::history_read();
                let next = match self.replay.read(read).await {
                    Ok(events) => {
                        let (deliver, next) = self.feed.on_history(read.run, events);
                        if self.deliver(deliver).is_err() {
                            return self.overflowed();
                        }
                        next
                    }
                    Err(error) => {
                        tracing::warn!(
                            channel = %self.channel,
                            error = format!("{error:#}"),
                            "reading a run's history for a subscription failed; the client is told to resume"
                        );
                        self.feed.on_read_failed(read.run)
                    }
                };
                if let Flow::Stop = self.follow(next) {
                    return;
                }
                continue;
            }
            let Step::Message(message) = step else { continue };
            match message {
                Some(BusMessage::Event(event)) => match self.feed.on_event(event) {
                    OnLive::Deliver(event) => {
                        if self.outbound.push_event(self.channel, event).is_err() {
                            return self.overflowed();
                        }
                    }
                    OnLive::Nothing => {}
                    OnLive::Read(read) => self.reads.push_back(read),
                },
                Some(BusMessage::ResumeNeeded) => {
                    metrics::bus_resume();
                    self.reads.extend(self.feed.on_resume_needed());
                }
                None => {
                    // The bus keeps a channel open while it has subscribers: only a bus
                    // shutting down ends it. The client resumes on another connection.
                    tracing::warn!(channel = %self.channel, "the event bus closed a subscription");
                    let _ = self.signals.send(Signal::Ended(self.channel));
                    return;
                }
            }
        }
    }

    fn deliver(&self, events: Vec<sba_application::ports::LiveEvent>) -> Result<(), Overflow> {
        for event in events {
            self.outbound.push_event(self.channel, event)?;
        }
        Ok(())
    }

    /// Acts on what the feed needs after a read.
    fn follow(&mut self, next: Next) -> Flow {
        match next {
            Next::Live => Flow::Continue,
            Next::Read(read) => {
                self.reads.push_back(read);
                Flow::Continue
            }
            Next::ResumeRequired { run, after_seq } => {
                let frame = ErrorFrame::resume_required(run, after_seq).to_text();
                if self.outbound.push_control(frame).is_err() {
                    self.overflowed();
                    return Flow::Stop;
                }
                // On a run channel that was its only run; other channels follow the rest.
                if matches!(self.channel, StreamChannel::Run(_)) {
                    let _ = self.signals.send(Signal::Ended(self.channel));
                    return Flow::Stop;
                }
                Flow::Continue
            }
        }
    }

    fn overflowed(&self) {
        let _ = self.signals.send(Signal::Overflow);
    }
}
