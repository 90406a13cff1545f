//! Live events: every accepted event of a run, fanned out to whoever watches the run, its
//! session or its tenant, on this node and on every other one.
//!
//! Delivery is at most once and best effort: a subscriber sees each event published after
//! it subscribed once and in `seq` order, or is told to resume ([`BusMessage::ResumeNeeded`])
//! and catches up from the run's history by its last `seq`. A slow subscriber never holds
//! up the publisher or other subscribers: its buffer is bounded, and overflowing it is one
//! of the reasons it is told to resume.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use sba_domain::events::RunEvent;
use sba_domain::{RunId, SessionId, TenantId};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// What a subscriber watches (the channel names are the Redis key schema's,
/// `sba:ev:run:<run_id>`, `sba:ev:session:<session_id>`, `sba:ev:tenant:<tenant_id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventChannel {
    Run(RunId),
    Session(SessionId),
    Tenant(TenantId),
}

impl EventChannel {
    /// The channels an event of a run is published on, in publishing order.
    pub fn of(event: &RunEvent, session: Option<SessionId>) -> impl Iterator<Item = Self> {
        [Some(Self::Run(event.run_id)), session.map(Self::Session), Some(Self::Tenant(event.tenant_id))]
            .into_iter()
            .flatten()
    }

    /// The channel's name: `sba:ev:run:<run_id>` and so on.
    pub fn name(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for EventChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Run(id) => write!(f, "sba:ev:run:{id}"),
            Self::Session(id) => write!(f, "sba:ev:session:{id}"),
            Self::Tenant(id) => write!(f, "sba:ev:tenant:{id}"),
        }
    }
}

/// One event as published: the JSON text clients see (`RunEvent::to_client_json`), with
/// its run and `seq` alongside so that a consumer can dedupe without parsing it.
///
/// A value and its clones belong to one channel: the bus makes one per channel it delivers
/// an event on, so that the frame built for the channel's subscribers is built once
/// ([`Self::shared_frame`]) and shared by all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEvent {
    pub run_id: RunId,
    pub seq: u64,
    /// The first seq the event stands for: `seq`, except for `step.delta` events merged
    /// into one (`data.coalesced`), which stand for `first_seq..=seq`.
    pub first_seq: u64,
    pub json: Arc<str>,
    frame: SharedFrame,
}

impl LiveEvent {
    /// The event `seq` of `run_id`, whose client JSON is `json`.
    pub fn new(run_id: RunId, seq: u64, json: impl Into<Arc<str>>) -> Self {
        Self { run_id, seq, first_seq: seq, json: json.into(), frame: SharedFrame::default() }
    }

    /// `step.delta` events `first_seq..=seq` merged into one, whose client JSON is `json`.
    pub fn merged(run_id: RunId, first_seq: u64, seq: u64, json: impl Into<Arc<str>>) -> Self {
        Self { first_seq: first_seq.min(seq), ..Self::new(run_id, seq, json) }
    }

    /// The frame this event is sent in, built by `build` the first time any clone of this
    /// value asks for it, and shared after that.
    pub fn shared_frame(&self, build: impl FnOnce(&Self) -> String) -> Arc<str> {
        Arc::clone(self.frame.0.get_or_init(|| build(self).into()))
    }

    /// A copy of this value for another channel (with a frame of its own).
    #[must_use]
    pub fn for_another_channel(&self) -> Self {
        Self { frame: SharedFrame::default(), ..self.clone() }
    }
}

/// The frame of a [`LiveEvent`], once built. Never part of equality: two events are the
/// same whether or not a frame was built for either.
#[derive(Debug, Clone, Default)]
struct SharedFrame(Arc<std::sync::OnceLock<Arc<str>>>);

impl PartialEq for SharedFrame {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SharedFrame {}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    Event(LiveEvent),
    /// Events may have been missed (the subscriber fell behind its buffer, or the bus lost
    /// its connection to other nodes for a while): resume from the run history after the
    /// last `seq` seen, then carry on with the events that follow.
    ResumeNeeded,
}

/// A subscriber's bounded buffer of messages on one channel. Dropping it unsubscribes and
/// frees what the channel held once its last subscriber is gone.
pub struct Subscription {
    // Declared before the release so that it is dropped first: the release then sees
    // whether any receiver is left.
    messages: broadcast::Receiver<BusMessage>,
    _release: Box<dyn Any + Send + Sync>,
}

impl Subscription {
    /// A subscription reading `messages`; `release` is dropped after the receiver, when the
    /// subscription is (adapters remove the channel's entry there when it was the last).
    pub fn new(messages: broadcast::Receiver<BusMessage>, release: impl Any + Send + Sync) -> Self {
        Self { messages, _release: Box::new(release) }
    }

    /// The next message; `None` only if the adapter closed the channel (the adapters here
    /// keep it open while the subscription lives). A subscriber that fell behind its buffer
    /// gets one [`BusMessage::ResumeNeeded`], then the events that were kept.
    pub async fn recv(&mut self) -> Option<BusMessage> {
        match self.messages.recv().await {
            Ok(message) => Some(message),
            Err(RecvError::Lagged(_)) => Some(BusMessage::ResumeNeeded),
            Err(RecvError::Closed) => None,
        }
    }

    /// The next message if one is buffered, without waiting.
    pub fn try_recv(&mut self) -> Option<BusMessage> {
        match self.messages.try_recv() {
            Ok(message) => Some(message),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(BusMessage::ResumeNeeded),
            Err(_) => None,
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").field("buffered", &self.messages.len()).finish_non_exhaustive()
    }
}

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub enum EventBusError {
    /// The bus between nodes (Redis) did not take the event; subscribers elsewhere resume
    /// from the history when they notice.
    #[error("the event bus is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

/// Live fan-out of accepted run events, across nodes.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait EventBus: fmt::Debug + Send + Sync + 'static {
    /// Publishes `event` on its run's channel, its session's (when the run has one,
    /// `session`) and its tenant's, in that order. Events of one run published one after
    /// the other in `seq` order arrive in `seq` order on each channel.
    ///
    /// # Errors
    /// [`EventBusError::Unavailable`] when the event could not be handed to the bus between
    /// nodes; it may have reached some channels.
    async fn publish(&self, event: &RunEvent, session: Option<SessionId>) -> Result<(), EventBusError>;

    /// Publishes `events` (of one run, in `seq` order) as [`Self::publish`] publishes each,
    /// in order; a bus between nodes hands them over in one round trip.
    ///
    /// # Errors
    /// As [`Self::publish`]; some of the events may have reached some channels.
    async fn publish_all(
        &self,
        events: &[RunEvent],
        session: Option<SessionId>,
    ) -> Result<(), EventBusError> {
        for event in events {
            self.publish(event, session).await?;
        }
        Ok(())
    }

    /// Subscribes to `channel`: once this returns, every event published on it reaches the
    /// subscription (or the subscription is told to resume). Never fails: when the bus
    /// between nodes is down, the subscription is told to resume when it is back.
    async fn subscribe(&self, channel: EventChannel) -> Subscription;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sba_domain::events::EventData;
    use uuid::Uuid;

    use super::*;

    const RUN: RunId = RunId::from_uuid(Uuid::from_u128(1));
    const SESSION: SessionId = SessionId::from_uuid(Uuid::from_u128(2));
    const TENANT: TenantId = TenantId::from_uuid(Uuid::from_u128(3));

    fn event(seq: u64) -> RunEvent {
        RunEvent {
            run_id: RUN,
            tenant_id: TENANT,
            seq,
            producer_id: None,
            data: EventData::RunStarted,
            created_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn channels_are_named_as_the_redis_key_schema_says() {
        assert_eq!(EventChannel::Run(RUN).name(), "sba:ev:run:00000000-0000-0000-0000-000000000001");
        assert_eq!(
            EventChannel::Session(SESSION).to_string(),
            "sba:ev:session:00000000-0000-0000-0000-000000000002"
        );
        assert_eq!(EventChannel::Tenant(TENANT).name(), "sba:ev:tenant:00000000-0000-0000-0000-000000000003");
    }

    #[test]
    fn an_event_goes_to_its_run_then_its_session_if_any_then_its_tenant() {
        let channels: Vec<_> = EventChannel::of(&event(2), Some(SESSION)).collect();
        assert_eq!(
            channels,
            [EventChannel::Run(RUN), EventChannel::Session(SESSION), EventChannel::Tenant(TENANT)]
        );
        let channels: Vec<_> = EventChannel::of(&event(2), None).collect();
        assert_eq!(channels, [EventChannel::Run(RUN), EventChannel::Tenant(TENANT)]);
    }

    #[test]
    fn a_copy_for_another_channel_builds_a_frame_of_its_own_while_clones_share_theirs() {
        let event = LiveEvent::new(RUN, 2, "{}");
        assert_eq!(&*event.shared_frame(|_| "run frame".to_owned()), "run frame");
        assert_eq!(&*event.clone().shared_frame(|_| unreachable!("built once")), "run frame");
        let copy = event.for_another_channel();
        assert_eq!(copy, event, "the same event");
        assert_eq!(&*copy.shared_frame(|_| "tenant frame".to_owned()), "tenant frame");
    }

    #[tokio::test]
    async fn a_subscription_yields_its_messages_tells_a_lagging_subscriber_to_resume_and_ends_when_closed() {
        let live = |seq| BusMessage::Event(LiveEvent::new(RUN, seq, "{}"));
        let (sender, receiver) = broadcast::channel(2);
        let mut subscription = Subscription::new(receiver, ());
        assert_eq!(subscription.try_recv(), None, "nothing buffered");
        sender.send(live(2)).unwrap();
        assert!(format!("{subscription:?}").contains("buffered: 1"), "{subscription:?}");
        assert_eq!(subscription.recv().await, Some(live(2)));
        for seq in 3..=5 {
            sender.send(live(seq)).unwrap();
        }
        assert_eq!(subscription.try_recv(), Some(BusMessage::ResumeNeeded), "3 fell out of the buffer");
        assert_eq!(subscription.try_recv(), Some(live(4)));
        assert_eq!(subscription.recv().await, Some(live(5)));
        for seq in 6..=8 {
            sender.send(live(seq)).unwrap();
        }
        assert_eq!(subscription.recv().await, Some(BusMessage::ResumeNeeded));
        assert_eq!(subscription.recv().await, Some(live(7)));
        drop(sender);
        assert_eq!(subscription.recv().await, Some(live(8)), "what was kept is still delivered");
        assert_eq!(subscription.recv().await, None, "then the closed channel ends it");
    }

    /// A bus that publishes one event at a time, and fails on the event `fails_at`.
    #[derive(Debug)]
    struct OneAtATime {
        published: Mutex<Vec<u64>>,
        fails_at: Option<u64>,
    }

    #[async_trait]
    impl EventBus for OneAtATime {
        async fn publish(&self, event: &RunEvent, _: Option<SessionId>) -> Result<(), EventBusError> {
            if Some(event.seq) == self.fails_at {
                return Err(EventBusError::Unavailable(anyhow::anyhow!("connection lost")));
            }
            self.published.lock().unwrap().push(event.seq);
            Ok(())
        }

        async fn subscribe(&self, _: EventChannel) -> Subscription {
            unreachable!("nothing subscribes here")
        }
    }

    #[tokio::test]
    async fn publishing_several_events_publishes_each_in_order_and_stops_at_the_first_failure() {
        let events: Vec<RunEvent> = (2..=5).map(event).collect();
        let bus = OneAtATime { published: Mutex::default(), fails_at: None };
        bus.publish_all(&events, None).await.unwrap();
        assert_eq!(*bus.published.lock().unwrap(), [2, 3, 4, 5]);
        let failing = OneAtATime { published: Mutex::default(), fails_at: Some(4) };
        let failed = failing.publish_all(&events, Some(SESSION)).await;
        assert!(matches!(failed, Err(EventBusError::Unavailable(_))), "{failed:?}");
        assert_eq!(*failing.published.lock().unwrap(), [2, 3]);
    }
}
