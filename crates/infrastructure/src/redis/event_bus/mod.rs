//! The event bus between nodes on Redis sharded pub/sub: `SPUBLISH` of each event on its
//! channels, and one subscriber connection per process that follows the local subscribers (it
//! subscribes to a Redis channel with the first and unsubscribes after the last) and fans
//! out locally with the same bounded buffers as the in-process bus.
//!
//! Sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, Redis 7) works the same on a standalone Redis
//! as plain pub/sub; on a Redis Cluster a channel then lives on the shard of its slot instead
//! of being broadcast to every node of the cluster. Channels of different slots are never
//! put in one `SSUBSCRIBE` (a cluster refuses that), so each is subscribed on its own.
//!
//! Pub/sub keeps nothing: a message published while the subscriber connection is down is
//! lost. So after the connection comes back, the Redis subscriptions are made again and
//! every local subscriber is told to resume from the run history.
//!
//! Whether this node still hears other nodes is what [`FredEventBus::dependency_check`]
//! tells readiness, through a canary message on a channel of the node's own ([`canary`]).

mod canary;
mod inbound;
mod lag;
mod reorder;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike as _, EventInterface as _, PubsubInterface as _};
use fred::types::Message;
use fred::types::config::Server;
use sba_application::ports::{
    DependencyCheck, EventBus, EventBusError, EventChannel, LiveEvent, Subscription,
};
use sba_domain::events::RunEvent;
use sba_domain::{RunId, SessionId};
use secrecy::SecretString;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::canary::{Canary, CanaryCheck};
use self::inbound::Inbound;
use self::lag::LagProbe;
use self::reorder::Reorder;
use super::connection::{self, ConnectionOptions};
use crate::memory::DEFAULT_SUBSCRIBER_BUFFER;
use crate::memory::event_bus::{Change, Fanout, live_event};
use crate::observe;

/// How the Redis event bus behaves.
#[derive(Debug, Clone, Copy)]
pub struct FredEventBusSettings {
    /// Messages buffered for each local subscriber; a subscriber further behind is told to
    /// resume. Default: [`DEFAULT_SUBSCRIBER_BUFFER`].
    pub subscriber_buffer: usize,
    /// Messages buffered between the subscriber connection and the local fan-out; if the
    /// fan-out falls this far behind, every local subscriber is told to resume. Default: 4,096.
    pub connection_buffer: usize,
    /// The bound on publishing one event (on all its channels, one round trip), and on one
    /// `SUBSCRIBE`/`UNSUBSCRIBE`. Default: 500 ms.
    pub command_timeout: Duration,
    /// The bound on connecting at startup; a Redis that is not there yet is not an error
    /// (the connections keep retrying). Default: 1 s.
    pub connect_timeout: Duration,
    /// How long a readiness check waits for its canary to come back through Redis before
    /// the bus counts as down. Default: 1 s.
    pub canary_timeout: Duration,
    /// How long a run's batch that reached a channel before the batch preceding it waits
    /// for that one ([`reorder`]); zero delivers every batch as it comes. Default: 500 ms.
    pub reorder_window: Duration,
    /// Past this lag ([`lag`]) the node merges deltas before the fan-out ([`inbound`]).
    /// Default: 250 ms.
    pub lag_limit: Duration,
}

impl Default for FredEventBusSettings {
    fn default() -> Self {
        Self {
            subscriber_buffer: DEFAULT_SUBSCRIBER_BUFFER,
            connection_buffer: 4_096,
            command_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
            canary_timeout: Duration::from_secs(1),
            reorder_window: Duration::from_millis(500),
            lag_limit: Duration::from_millis(250),
        }
    }
}

/// The event bus between the nodes that share a Redis.
#[derive(Debug)]
pub struct FredEventBus {
    client: Client,
    /// Kept for readiness: whether it is connected.
    subscriber: SubscriberClient,
    fanout: Arc<Fanout>,
    canary: Arc<Canary>,
    canary_timeout: Duration,
    follower: JoinHandle<()>,
    prober: JoinHandle<()>,
    connections: [JoinHandle<Result<(), fred::error::Error>>; 2],
}

impl Drop for FredEventBus {
    fn drop(&mut self) {
        self.follower.abort();
        self.prober.abort();
        for connection in &self.connections {
            connection.abort();
        }
    }
}

impl FredEventBus {
    /// A bus on the Redis at `url`, with its two connections (commands and subscriptions).
    /// A Redis that is down at startup is not an error: `connect` waits at most
    /// `connect_timeout`, logs a warning, and the connections keep retrying; publishing
    /// fails and subscribers are told to resume until they are up.
    ///
    /// # Errors
    /// When `url` is not a usable Redis URL.
    pub async fn connect(url: &SecretString, settings: FredEventBusSettings) -> anyhow::Result<Self> {
        let options = ConnectionOptions {
            command_timeout: settings.command_timeout,
            connect_timeout: settings.connect_timeout,
            message_buffer: settings.connection_buffer,
            ..ConnectionOptions::default()
        };
        let client = connection::client(url, &options)?;
        let subscriber = connection::subscriber(url, &options)?;
        // Taken before connecting, so that no message or reconnection is missed.
        let messages = subscriber.message_rx();
        let mut reconnections = subscriber.reconnect_rx();
        let connections = [client.connect(), subscriber.connect()];
        let connected = tokio::time::timeout(settings.connect_timeout, async {
            while !(client.is_connected() && subscriber.is_connected()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let canary = Canary::new();
        if connected.is_ok() {
            // Nothing is subscribed yet: the first connection needs no resume, only the
            // canary (made here, so that the bus is ready when `connect` returns).
            reconnections = reconnections.resubscribe();
            // Boxed: fred's command future would make `connect`'s own future, and every
            // caller's up to the server's startup, much larger.
            Box::pin(subscribe_canary(&canary, &subscriber, settings.command_timeout)).await;
        } else {
            tracing::warn!(
                timeout_ms = settings.connect_timeout.as_millis(),
                "event bus: no Redis connection yet; live events resume when it connects"
            );
        }
        let lag = LagProbe::new();
        let prober = tokio::spawn(lag::publish_probes(
            client.clone(),
            canary.channel().to_owned(),
            Arc::clone(&lag),
            settings.command_timeout,
        ));
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let fanout = Fanout::new(settings.subscriber_buffer, Some(changes));
        let follower = tokio::spawn(follow(
            Inbound::new(
                Arc::clone(&fanout),
                Arc::clone(&canary),
                lag,
                Reorder::new(settings.reorder_window),
                settings.lag_limit,
            ),
            Arc::clone(&canary),
            subscriber.clone(),
            settings.command_timeout,
            Streams { changes: changes_rx, messages, reconnections },
        ));
        Ok(Self {
            client,
            subscriber,
            fanout,
            canary,
            canary_timeout: settings.canary_timeout,
            follower,
            prober,
            connections,
        })
    }

    /// Readiness of live delivery between nodes (`event_bus`): up while a canary this node
    /// publishes comes back to its own subscriber connection within the canary timeout.
    pub fn dependency_check(&self) -> Arc<dyn DependencyCheck> {
        Arc::new(CanaryCheck::new(
            self.client.clone(),
            self.subscriber.clone(),
            Arc::clone(&self.canary),
            self.canary_timeout,
        ))
    }

    /// The channels with local subscribers (tests check that dropped subscriptions leave
    /// nothing behind).
    pub fn channels_in_use(&self) -> usize {
        self.fanout.channels()
    }

    /// This node's canary channel, `sba:ev:canary:<node id>`.
    pub fn canary_channel(&self) -> &str {
        self.canary.channel()
    }

    /// Readiness checks waiting for their canary (tests check that checks leave nothing
    /// behind).
    pub fn canary_checks_waiting(&self) -> usize {
        self.canary.checks_waiting()
    }
}

#[async_trait]
impl EventBus for FredEventBus {
    async fn publish(&self, event: &RunEvent, session: Option<SessionId>) -> Result<(), EventBusError> {
        self.publish_all(std::slice::from_ref(event), session).await
    }

    async fn publish_all(
        &self,
        events: &[RunEvent],
        session: Option<SessionId>,
    ) -> Result<(), EventBusError> {
        let Some(first) = events.first() else { return Ok(()) };
        let payload = encode_batch(events)?;
        // One message per channel for the whole batch, all in one pipeline on one connection
        // (per shard, on a cluster): one round trip, a batch's events keep their order inside
        // the message, and batches of a run published one after the other keep theirs on
        // each channel. Every event of a batch is of one run, so they share its channels.
        observe::redis!("event_bus.publish", async {
            let pipeline = self.client.pipeline();
            for channel in EventChannel::of(first, session) {
                pipeline.spublish::<(), _, _>(channel.name(), payload.as_str()).await?;
            }
            pipeline.all::<()>().await
        })
        .await
        .map_err(|e| EventBusError::Unavailable(anyhow!("SPUBLISH failed: {e}")))
    }

    async fn subscribe(&self, channel: EventChannel) -> Subscription {
        let (subscription, ready) = self.fanout.join(channel.name());
        if let Some(ready) = ready {
            // Answered once the Redis subscription is live (or has failed, in which case
            // the subscription was told to resume); an error means the bus is gone.
            let _ = ready.await;
        }
        subscription
    }
}

/// A published message: one line `<run_id> <seq> <json>` per event, in `seq` order, so that
/// receivers need not parse the JSON (serialized JSON never holds a raw line break).
fn encode_batch(events: &[RunEvent]) -> Result<String, EventBusError> {
    let mut payload = String::new();
    for event in events {
        if !payload.is_empty() {
            payload.push('\n');
        }
        let live = live_event(event)?;
        // Writing to a String cannot fail.
        let _ = write!(payload, "{} {} {}", live.run_id, live.seq, live.json);
    }
    Ok(payload)
}

/// The events of a published message, in order; `None` when any line is malformed (the
/// message is then ignored as a whole, never delivered in part).
fn decode(payload: &str) -> Option<Vec<LiveEvent>> {
    payload.split('\n').map(decode_line).collect()
}

fn decode_line(line: &str) -> Option<LiveEvent> {
    let mut parts = line.splitn(3, ' ');
    let run_id = parts.next()?.parse::<RunId>().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some(LiveEvent::new(run_id, seq, parts.next()?))
}

struct Streams {
    changes: mpsc::UnboundedReceiver<Change>,
    messages: Receiver<Message>,
    reconnections: Receiver<Server>,
}

/// Follows the local subscribers (subscribing and unsubscribing in Redis, in the order they
/// came and went), delivers messages to them, and after every reconnection subscribes again
/// and tells them all to resume. The canary channel is subscribed for the whole life of the
/// bus, and its messages go to the canary only.
async fn follow(
    mut inbound: Inbound,
    canary: Arc<Canary>,
    subscriber: SubscriberClient,
    timeout: Duration,
    mut streams: Streams,
) {
    let mut wanted = HashSet::new();
    loop {
        let due = inbound.next_due();
        tokio::select! {
            () = sleep_until(due), if due.is_some() => inbound.expire(),
            change = streams.changes.recv() => match change {
                Some(Change::Joined { channel, first, ready }) => {
                    if first {
                        wanted.insert(channel.clone());
                        if let Err(error) = command(timeout, subscriber.ssubscribe(channel.as_str())).await {
                            tracing::warn!(error, "event bus: cannot subscribe yet; retried on reconnection");
                            inbound.resume(&channel);
                        }
                    }
                    let _ = ready.send(());
                }
                Some(Change::Left { channel }) => {
                    wanted.remove(&channel);
                    inbound.forget(&channel);
                    if let Err(error) = command(timeout, subscriber.sunsubscribe(channel.as_str())).await {
                        // A reconnection drops it anyway: it is not in `wanted` any more.
                        tracing::debug!(error, "event bus: cannot unsubscribe");
                    }
                }
                None => return,
            },
            message = streams.messages.recv() => match message {
                Ok(message) => inbound.on_message(&message, &mut streams.messages),
                Err(RecvError::Lagged(missed)) => inbound.on_lagged(missed),
                Err(RecvError::Closed) => return,
            },
            up = streams.reconnections.recv() => {
                if matches!(up, Err(RecvError::Closed)) {
                    return;
                }
                // A new connection has no subscription until it is made again.
                canary.set_subscribed(false);
                // Subscribed again first, so that the resume cannot miss what follows.
                for channel in &wanted {
                    if let Err(error) = command(timeout, subscriber.ssubscribe(channel.as_str())).await {
                        tracing::warn!(error, "event bus: cannot subscribe again after reconnecting");
                    }
                }
                // Last: the node is ready again once it has subscribed everything again.
                subscribe_canary(&canary, &subscriber, timeout).await;
                inbound.resume_all();
            },
        }
    }
}

/// Subscribes the canary channel on the subscriber connection; readiness fails until it is
/// (a failure is retried with the next connection: a connection that stops answering is
/// made again).
async fn subscribe_canary(canary: &Canary, subscriber: &SubscriberClient, timeout: Duration) {
    match command(timeout, subscriber.ssubscribe(canary.channel())).await {
        Ok(()) => canary.set_subscribed(true),
        Err(error) => {
            tracing::warn!(error, "event bus: cannot subscribe the canary; retried on reconnection");
        }
    }
}

async fn command(
    timeout: Duration,
    command: impl Future<Output = Result<(), fred::error::Error>>,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, command).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_elapsed) => Err("no answer in time".to_owned()),
    }
}

/// Completes at `due`; never without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use sba_domain::TenantId;
    use sba_domain::events::{EventData, StepRef};
    use uuid::Uuid;

    use super::*;

    fn delta(run_id: RunId, seq: u64, text: &str) -> RunEvent {
        RunEvent {
            run_id,
            tenant_id: TenantId::from_uuid(Uuid::now_v7()),
            seq,
            producer_id: Some(format!("e{seq}")),
            data: EventData::StepDelta { step_id: StepRef::parse("s1").unwrap(), text: text.to_owned() },
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_batch_is_one_message_whose_lines_carry_run_seq_and_json_in_order() {
        let run = RunId::from_uuid(Uuid::now_v7());
        // Line breaks and spaces in the text stay inside the JSON string.
        let events = [delta(run, 7, "a b\nc"), delta(run, 8, "\n\n"), delta(run, 9, "")];
        let decoded = decode(&encode_batch(&events).unwrap()).unwrap();
        let expected: Vec<_> = events.iter().map(|e| live_event(e).unwrap()).collect();
        assert_eq!(decoded, expected);
        assert_eq!(decoded.iter().map(|e| e.seq).collect::<Vec<_>>(), [7, 8, 9]);
    }

    #[test]
    fn a_message_with_any_malformed_line_is_ignored_as_a_whole() {
        let run = RunId::from_uuid(Uuid::now_v7());
        let good = encode_batch(&[delta(run, 1, "x")]).unwrap();
        for bad in [
            String::new(),
            "x 1 {}".to_owned(),
            format!("{run} x {{}}"),
            format!("{run} 1"),
            format!("{good}\n{run} 2"),
            format!("{good}\n"),
        ] {
            assert_eq!(decode(&bad), None, "{bad}");
        }
    }
}
