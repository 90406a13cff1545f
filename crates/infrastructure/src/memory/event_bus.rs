//! The in-process event bus (development mode, one node), and the per-channel fan-out with
//! bounded buffers that the Redis bus uses too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use sba_application::ports::{BusMessage, EventBus, EventBusError, EventChannel, LiveEvent, Subscription};
use sba_application::stream::outbound::coalesce_deltas;
use sba_domain::SessionId;
use sba_domain::events::RunEvent;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Messages buffered for each subscriber by default; a subscriber further behind is told to
/// resume.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 1024;

/// A change in who listens to a channel, for a bus that follows it (the Redis bus
/// subscribes to a Redis channel on the first local subscriber and unsubscribes after the
/// last). Sent under the fan-out's lock, so changes arrive in the order they happened.
#[derive(Debug)]
pub(crate) enum Change {
    /// A subscriber joined (`first`: the channel had none); `ready` is answered once the
    /// subscription is live.
    Joined { channel: String, first: bool, ready: oneshot::Sender<()> },
    /// The last subscriber left.
    Left { channel: String },
}

/// Per-channel fan-out: a broadcast channel per channel name with subscribers, removed
/// with its last subscriber.
#[derive(Debug)]
pub(crate) struct Fanout {
    buffer: usize,
    channels: Mutex<HashMap<String, broadcast::Sender<BusMessage>>>,
    changes: Option<mpsc::UnboundedSender<Change>>,
    /// Deltas merged because subscribers fell behind (`sba_event_bus_merged_deltas_total`).
    merged: metrics::Counter,
}

impl Fanout {
    pub(crate) fn new(buffer: usize, changes: Option<mpsc::UnboundedSender<Change>>) -> Arc<Self> {
        Arc::new(Self {
            buffer: buffer.max(1),
            channels: Mutex::default(),
            changes,
            merged: metrics::counter!("sba_event_bus_merged_deltas_total"),
        })
    }

    /// A subscription to `channel`, and the receiver of its readiness when the fan-out is
    /// followed.
    pub(crate) fn join(self: &Arc<Self>, channel: String) -> (Subscription, Option<oneshot::Receiver<()>>) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let (receiver, first) = if let Some(sender) = channels.get(&channel) {
            (sender.subscribe(), false)
        } else {
            let (sender, receiver) = broadcast::channel(self.buffer);
            channels.insert(channel.clone(), sender);
            (receiver, true)
        };
        let ready = self.changes.as_ref().map(|changes| {
            let (ready, done) = oneshot::channel();
            // A closed follower means the bus is shutting down: nothing to wait for.
            let _ = changes.send(Change::Joined { channel: channel.clone(), first, ready });
            done
        });
        drop(channels);
        (Subscription::new(receiver, Release { fanout: Arc::clone(self), channel }), ready)
    }

    /// Sends `message` to the subscribers of `channel`, if it has any.
    pub(crate) fn send(&self, channel: &str, message: BusMessage) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = channels.get(channel) {
            // No receiver left means the entry is being released: nobody to tell.
            let _ = sender.send(message);
        }
    }

    /// Sends `events` to the subscribers of `channel`, in order, if it has any (from one task
    /// per fan-out: the Redis bus's follower).
    ///
    /// When the slowest subscriber of the channel is a quarter of its buffer behind, each
    /// step's consecutive deltas among `events` are merged first ([`coalesce_deltas`]): the
    /// subscribers get fewer messages and frames for the same text, and a node short of CPU
    /// catches up instead of making them overflow their buffers and read the run history
    /// (which costs far more than live delivery).
    pub(crate) fn send_events(&self, channel: &str, events: Vec<LiveEvent>) {
        let Some(sender) = self.channels.lock().unwrap_or_else(PoisonError::into_inner).get(channel).cloned()
        else {
            return;
        };
        let events = if events.len() > 1 && sender.len() >= self.buffer / 4 {
            let (events, merged) = coalesce_deltas(events);
            self.merged.increment(u64::try_from(merged).unwrap_or(u64::MAX));
            events
        } else {
            events
        };
        for event in events {
            // No receiver left means the entry is being released: nobody to tell.
            let _ = sender.send(BusMessage::Event(event));
        }
    }

    /// Sends `message` to every subscriber of every channel.
    pub(crate) fn send_all(&self, message: &BusMessage) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        for sender in channels.values() {
            let _ = sender.send(message.clone());
        }
    }

    /// The channels with subscribers.
    pub(crate) fn channels(&self) -> usize {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn leave(&self, channel: String) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if channels.get(&channel).is_some_and(|sender| sender.receiver_count() == 0) {
            channels.remove(&channel);
            if let Some(changes) = &self.changes {
                let _ = changes.send(Change::Left { channel });
            }
        }
    }
}

/// Dropped with a subscription, after its receiver: removes the channel's entry when that
/// was its last subscriber.
#[derive(Debug)]
struct Release {
    fanout: Arc<Fanout>,
    channel: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.fanout.leave(std::mem::take(&mut self.channel));
    }
}

/// The message an event is on every channel.
pub(crate) fn live_event(event: &RunEvent) -> Result<LiveEvent, EventBusError> {
    let json = event.to_client_json().map_err(|e| EventBusError::Unavailable(e.into()))?;
    Ok(LiveEvent::new(event.run_id, event.seq, json))
}

/// The event bus of one process: publishing sends to the local subscribers only.
#[derive(Debug, Clone)]
pub struct InMemoryEventBus {
    fanout: Arc<Fanout>,
}

impl InMemoryEventBus {
    /// A bus buffering `subscriber_buffer` messages per subscriber (see
    /// [`DEFAULT_SUBSCRIBER_BUFFER`]).
    pub fn new(subscriber_buffer: usize) -> Self {
        Self { fanout: Fanout::new(subscriber_buffer, None) }
    }

    /// The channels that have subscribers (tests check that dropped subscriptions leave
    /// nothing behind).
    pub fn channels_in_use(&self) -> usize {
        self.fanout.channels()
    }
}

impl Default for InMemoryEventBus {
    fn default() -> Self {
        Self::new(DEFAULT_SUBSCRIBER_BUFFER)
    }
}

#[async_trait]
impl EventBus for InMemoryEventBus {
    async fn publish(&self, event: &RunEvent, session: Option<SessionId>) -> Result<(), EventBusError> {
        let live = live_event(event)?;
        for channel in EventChannel::of(event, session) {
            // One value per channel: each builds its own channel's frame.
            self.fanout.send(&channel.name(), BusMessage::Event(live.for_another_channel()));
        }
        Ok(())
    }

    async fn subscribe(&self, channel: EventChannel) -> Subscription {
        self.fanout.join(channel.name()).0
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use sba_application::ports::BusMessage;
    use sba_domain::events::{EventData, EventKind};
    use sba_domain::{RunId, TenantId};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn event(run_id: RunId, tenant_id: TenantId, seq: u64) -> RunEvent {
        RunEvent {
            run_id,
            tenant_id,
            seq,
            producer_id: None,
            data: EventData::parse(EventKind::StepDelta, json!({"step_id": "s1", "text": format!("t{seq}")}))
                .unwrap(),
            created_at: Utc::now(),
        }
    }

    fn ids() -> (RunId, TenantId, SessionId) {
        (
            RunId::from_uuid(Uuid::now_v7()),
            TenantId::from_uuid(Uuid::now_v7()),
            SessionId::from_uuid(Uuid::now_v7()),
        )
    }

    fn seq_of(message: Option<BusMessage>) -> u64 {
        match message {
            Some(BusMessage::Event(event)) => event.seq,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_channel_whose_slowest_subscriber_falls_behind_gets_each_batchs_deltas_merged_and_loses_no_text()
     {
        let fanout = Fanout::new(16, None);
        let (run, tenant, _) = ids();
        let (mut slow, _) = fanout.join("c".to_owned());
        let batch = |first: u64| -> Vec<LiveEvent> {
            (first..first + 4).map(|seq| live_event(&event(run, tenant, seq)).unwrap()).collect()
        };
        let queued = || fanout.channels.lock().unwrap().get("c").unwrap().len();
        // Below a quarter of the buffer (4) behind: every event is a message of its own.
        fanout.send_events("c", batch(1));
        assert_eq!(queued(), 4);
        // Behind now: the next batches arrive as one merged delta each.
        fanout.send_events("c", batch(5));
        fanout.send_events("c", batch(9));
        assert_eq!(queued(), 6);
        let mut text = String::new();
        let mut covered = Vec::new();
        while let Some(BusMessage::Event(event)) = slow.try_recv() {
            let json: serde_json::Value = serde_json::from_str(&event.json).unwrap();
            text.push_str(json["data"]["text"].as_str().unwrap());
            covered.push((event.first_seq, event.seq));
        }
        assert_eq!(covered, [(1, 1), (2, 2), (3, 3), (4, 4), (5, 8), (9, 12)]);
        assert_eq!(text, "t1t2t3t4t5t6t7t8t9t10t11t12");
    }

    #[tokio::test]
    async fn events_arrive_in_seq_order_on_each_channel() {
        let bus = InMemoryEventBus::default();
        let (run, tenant, session) = ids();
        let mut subscriptions = [
            bus.subscribe(EventChannel::Run(run)).await,
            bus.subscribe(EventChannel::Session(session)).await,
            bus.subscribe(EventChannel::Tenant(tenant)).await,
        ];
        for seq in 1..=100 {
            bus.publish(&event(run, tenant, seq), Some(session)).await.unwrap();
        }
        for subscription in &mut subscriptions {
            for seq in 1..=100 {
                assert_eq!(seq_of(subscription.try_recv()), seq);
            }
            assert_eq!(subscription.try_recv(), None);
        }
    }

    #[tokio::test]
    async fn one_event_reaches_its_run_session_and_tenant_channels_with_the_client_json() {
        let bus = InMemoryEventBus::default();
        let (run, tenant, session) = ids();
        let mut on_run = bus.subscribe(EventChannel::Run(run)).await;
        let mut on_session = bus.subscribe(EventChannel::Session(session)).await;
        let mut on_tenant = bus.subscribe(EventChannel::Tenant(tenant)).await;
        let mut on_other_session = bus.subscribe(EventChannel::Session(ids().2)).await;
        let published = event(run, tenant, 1);
        bus.publish(&published, Some(session)).await.unwrap();
        let expected = BusMessage::Event(LiveEvent::new(run, 1, published.to_client_json().unwrap()));
        for subscription in [&mut on_run, &mut on_session, &mut on_tenant] {
            assert_eq!(subscription.try_recv(), Some(expected.clone()));
        }
        assert_eq!(on_other_session.try_recv(), None);

        bus.publish(&event(run, tenant, 2), None).await.unwrap();
        assert_eq!(seq_of(on_run.try_recv()), 2);
        assert_eq!(seq_of(on_tenant.try_recv()), 2);
        assert_eq!(on_session.try_recv(), None, "a run without a session publishes on no session");
    }

    #[tokio::test]
    async fn tenants_never_see_each_others_events() {
        let bus = InMemoryEventBus::default();
        let (run_a, tenant_a, _) = ids();
        let (run_b, tenant_b, _) = ids();
        let mut on_a = bus.subscribe(EventChannel::Tenant(tenant_a)).await;
        let mut on_b = bus.subscribe(EventChannel::Tenant(tenant_b)).await;
        bus.publish(&event(run_a, tenant_a, 1), None).await.unwrap();
        bus.publish(&event(run_b, tenant_b, 1), None).await.unwrap();
        bus.publish(&event(run_a, tenant_a, 2), None).await.unwrap();
        for (subscription, run, count) in [(&mut on_a, run_a, 2), (&mut on_b, run_b, 1)] {
            for _ in 0..count {
                match subscription.try_recv() {
                    Some(BusMessage::Event(event)) => assert_eq!(event.run_id, run),
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(subscription.try_recv(), None);
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_told_to_resume_while_a_fast_one_gets_everything() {
        let bus = InMemoryEventBus::new(8);
        let (run, tenant, _) = ids();
        let mut slow = bus.subscribe(EventChannel::Run(run)).await;
        let mut fast = bus.subscribe(EventChannel::Run(run)).await;
        for seq in 1..=100 {
            // Never blocks, however far behind `slow` is.
            bus.publish(&event(run, tenant, seq), None).await.unwrap();
            assert_eq!(seq_of(fast.try_recv()), seq);
        }
        assert_eq!(slow.try_recv(), Some(BusMessage::ResumeNeeded));
        // Then the most recent events that were kept, in order, up to the last.
        let kept: Vec<u64> = std::iter::from_fn(|| slow.try_recv()).map(|m| seq_of(Some(m))).collect();
        assert_eq!(kept, (93..=100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn dropped_subscriptions_leave_no_channel_behind() {
        let bus = InMemoryEventBus::default();
        let (run, tenant, session) = ids();
        let first = bus.subscribe(EventChannel::Run(run)).await;
        let second = bus.subscribe(EventChannel::Run(run)).await;
        let on_session = bus.subscribe(EventChannel::Session(session)).await;
        assert_eq!(bus.channels_in_use(), 2);
        drop(first);
        assert_eq!(bus.channels_in_use(), 2, "the run channel still has a subscriber");
        drop((second, on_session));
        assert_eq!(bus.channels_in_use(), 0);
        bus.publish(&event(run, tenant, 1), Some(session)).await.unwrap();
        assert_eq!(bus.channels_in_use(), 0, "publishing creates nothing");
        let mut again = bus.subscribe(EventChannel::Run(run)).await;
        bus.publish(&event(run, tenant, 2), None).await.unwrap();
        assert_eq!(seq_of(again.try_recv()), 2);
    }
}
