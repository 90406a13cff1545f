//! The event bus's canary: readiness of live delivery between nodes (`event_bus` in
//! `/readyz`), proved by a message this node publishes to itself through Redis pub/sub.
//!
//! A node that lost its Redis subscriptions without an error (a subscriber connection that
//! came back unsubscribed, a shard that stopped forwarding) still answers `PING` and still
//! publishes; only a round trip shows that its subscribers no longer hear other nodes. So
//! each bus subscribes, on its one subscriber connection and in its follower task, to a
//! channel of its own, `sba:ev:canary:<node id>` (a random id per bus), for its whole life
//! and again after every reconnection. A check publishes a fresh nonce there on the command
//! connection and waits, at most the canary timeout, for the follower to see that nonce
//! come back. Messages of the canary channel never reach a local subscriber.
//!
//! Each check in flight holds one entry in a map of awaited nonces, removed when the check
//! ends however it ends (answered, timed out, or dropped by its caller), so the map never
//! holds more entries than checks running. A nonce is never reused, so a canary that comes
//! back after its check gave up answers nobody, least of all a later check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike as _, PubsubInterface as _};
use sba_application::ports::DependencyCheck;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::observe::{self, CallError};

/// Canary channels are `sba:ev:canary:<node id>`, beside the live event channels.
pub(super) const CHANNEL_PREFIX: &str = "sba:ev:canary:";

/// One bus's canary channel and the checks waiting for their nonce to come back on it.
#[derive(Debug)]
pub(super) struct Canary {
    channel: String,
    next_nonce: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// Whether the canary channel is subscribed on the current subscriber connection: set by
    /// the follower, cleared when the connection is made again until it subscribes again.
    subscribed: AtomicBool,
}

impl Canary {
    /// A canary on a channel of its own (a new random node id).
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            channel: format!("{CHANNEL_PREFIX}{}", Uuid::new_v4().simple()),
            next_nonce: AtomicU64::new(1),
            waiting: Mutex::default(),
            subscribed: AtomicBool::new(false),
        })
    }

    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    pub(super) fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::SeqCst);
    }

    fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// A message of the canary channel came back: it answers the check waiting for its
    /// nonce, if one still is; anything else (a late nonce, a foreign payload) is dropped.
    pub(super) fn returned(&self, payload: &str) {
        let waiter = payload
            .parse::<u64>()
            .ok()
            .and_then(|nonce| self.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&nonce));
        if let Some(waiter) = waiter {
            // The check may have just given up: nobody left to tell.
            let _ = waiter.send(());
        } else {
            tracing::debug!("event bus: a canary nobody waits for (late or foreign); ignored");
        }
    }

    /// A new nonce, awaited until the returned guard is dropped.
    fn expect(&self) -> Awaited<'_> {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let (sender, returned) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).insert(nonce, sender);
        Awaited { canary: self, nonce, returned }
    }

    /// The checks waiting for their canary (tests check that checks leave nothing behind).
    pub(super) fn checks_waiting(&self) -> usize {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A nonce a check waits for; its entry leaves the map when this is dropped.
struct Awaited<'a> {
    canary: &'a Canary,
    nonce: u64,
    returned: oneshot::Receiver<()>,
}

impl Drop for Awaited<'_> {
    fn drop(&mut self) {
        self.canary.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.nonce);
    }
}

/// Why a canary did not make the round trip.
#[derive(Debug, thiserror::Error)]
pub(super) enum CanaryError {
    #[error("the subscriber connection to Redis is down")]
    SubscriberDown,
    #[error("the canary channel is not subscribed on the subscriber connection")]
    NotSubscribed,
    /// The command connection failed; only the error's kind is kept (fred's text may quote
    /// the server's address or configuration).
    #[error("SPUBLISH of the canary failed ({0})")]
    Publish(&'static str),
    #[error("the canary did not come back within {} ms", .0.as_millis())]
    NoReturn(Duration),
}

impl CanaryError {
    /// The `reason` label of `sba_event_bus_canary_failures_total`.
    fn reason(&self) -> &'static str {
        match self {
            Self::SubscriberDown => "subscriber_down",
            Self::NotSubscribed => "not_subscribed",
            Self::Publish(_) => "publish",
            Self::NoReturn(_) => "timeout",
        }
    }
}

impl CallError for CanaryError {
    fn failure(&self) -> Option<&'static str> {
        Some(self.reason())
    }
}

/// The canary's metrics, registered once so that every series exists from the start.
#[derive(Debug)]
struct CanaryMetrics {
    round_trip: metrics::Histogram,
    subscriber_down: metrics::Counter,
    not_subscribed: metrics::Counter,
    publish: metrics::Counter,
    timeout: metrics::Counter,
}

impl CanaryMetrics {
    fn new() -> Self {
        let failures = |reason: &'static str| metrics::counter!("sba_event_bus_canary_failures_total", "reason" => reason);
        Self {
            round_trip: metrics::histogram!("sba_event_bus_canary_seconds"),
            subscriber_down: failures("subscriber_down"),
            not_subscribed: failures("not_subscribed"),
            publish: failures("publish"),
            timeout: failures("timeout"),
        }
    }

    fn failed(&self, error: &CanaryError) {
        let counter = match error {
            CanaryError::SubscriberDown => &self.subscriber_down,
            CanaryError::NotSubscribed => &self.not_subscribed,
            CanaryError::Publish(_) => &self.publish,
            CanaryError::NoReturn(_) => &self.timeout,
        };
        counter.increment(1);
    }
}

/// `event_bus` in `/readyz`: up while this node's canary makes the round trip in time.
#[derive(Debug)]
pub(super) struct CanaryCheck {
    client: Client,
    subscriber: SubscriberClient,
    canary: Arc<Canary>,
    timeout: Duration,
    metrics: CanaryMetrics,
    /// Whether the last check failed: a warning when the round trip stops working and an
    /// info line when it is back, not one line per check.
    failing: AtomicBool,
}

impl CanaryCheck {
    pub(super) fn new(
        client: Client,
        subscriber: SubscriberClient,
        canary: Arc<Canary>,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            subscriber,
            canary,
            timeout,
            metrics: CanaryMetrics::new(),
            failing: AtomicBool::new(false),
        }
    }

    async fn round_trip(&self) -> Result<(), CanaryError> {
        // Known without a round trip; said here so that the cause is the right one.
        if !self.subscriber.is_connected() {
            return Err(CanaryError::SubscriberDown);
        }
        if !self.canary.is_subscribed() {
            return Err(CanaryError::NotSubscribed);
        }
        let mut awaited = self.canary.expect();
        let nonce = awaited.nonce;
        let returned = &mut awaited.returned;
        let round_trip = async move {
            let receivers: i64 = self
                .client
                .spublish(self.canary.channel(), nonce.to_string())
                .await
                .map_err(|e| CanaryError::Publish(e.kind().to_str()))?;
            // Nobody on the channel: this node's subscription is gone (the connection came
            // back and the follower has not subscribed again yet, or Redis dropped it).
            if receivers == 0 {
                return Err(CanaryError::NotSubscribed);
            }
            // The sender goes with its answer, or with `awaited` after this: no error comes.
            returned.await.map_err(|_| CanaryError::NoReturn(self.timeout))
        };
        tokio::time::timeout(self.timeout, round_trip)
            .await
            .unwrap_or(Err(CanaryError::NoReturn(self.timeout)))
    }
}

#[async_trait]
impl DependencyCheck for CanaryCheck {
    fn component(&self) -> &'static str {
        "event_bus"
    }

    async fn check(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        match observe::redis!("event_bus.canary", self.round_trip()).await {
            Ok(()) => {
                self.metrics.round_trip.record(started.elapsed().as_secs_f64());
                if self.failing.swap(false, Ordering::SeqCst) {
                    tracing::info!(
                        channel = self.canary.channel(),
                        "event bus: the canary makes the round trip again"
                    );
                }
                Ok(())
            }
            Err(error) => {
                self.metrics.failed(&error);
                if !self.failing.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        channel = self.canary.channel(),
                        reason = error.reason(),
                        %error,
                        "event bus: the canary did not make the round trip through Redis pub/sub; \
                         this node may not receive live events from other nodes"
                    );
                }
                Err(error.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_canary_answers_only_the_check_waiting_for_its_nonce() {
        let canary = Canary::new();
        let first = canary.expect();
        let stale = first.nonce;
        drop(first);
        assert_eq!(canary.checks_waiting(), 0, "a check that gave up leaves nothing behind");

        let mut second = canary.expect();
        assert_ne!(second.nonce, stale, "nonces are never reused");
        canary.returned(&stale.to_string());
        canary.returned("not a nonce");
        assert!(second.returned.try_recv().is_err(), "a late canary answers nobody");
        assert_eq!(canary.checks_waiting(), 1);

        canary.returned(&second.nonce.to_string());
        assert_eq!(second.returned.try_recv(), Ok(()));
        drop(second);
        assert_eq!(canary.checks_waiting(), 0);
    }

    #[tokio::test]
    async fn concurrent_checks_each_hold_one_entry_and_are_answered_separately() {
        let canary = Canary::new();
        let mut checks: Vec<_> = (0..5).map(|_| canary.expect()).collect();
        assert_eq!(canary.checks_waiting(), 5);
        canary.returned(&checks[3].nonce.to_string());
        let answered: Vec<bool> = checks.iter_mut().map(|check| check.returned.try_recv().is_ok()).collect();
        assert_eq!(answered, [false, false, false, true, false]);
        drop(checks);
        assert_eq!(canary.checks_waiting(), 0);
    }

    #[test]
    fn every_bus_has_a_canary_channel_of_its_own_beside_the_live_channels() {
        let (a, b) = (Canary::new(), Canary::new());
        assert!(a.channel().starts_with("sba:ev:canary:"), "{}", a.channel());
        assert_ne!(a.channel(), b.channel());
    }
}
