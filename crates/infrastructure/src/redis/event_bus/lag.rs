//! How far behind this node hears the bus: a probe the node publishes to itself on its
//! canary channel every [`PROBE_INTERVAL`], timed from publish to receipt by the follower.
//!
//! Redis keeps a subscriber connection's messages in its output buffer while the node reads
//! them slower than they are published (a node short of CPU), and that backlog is invisible
//! to the node: nothing is lost or refused, events just arrive later and later. The probe
//! travels the same connection behind those messages, so its delay is the node's backlog
//! in time (`sba_event_bus_lag_seconds`). Past the lag limit the follower sheds work
//! (see the module documentation of `super`).
//!
//! The probe's payload is `lag:<µs since the bus started>` on this node's own clock, so no
//! clock of another machine is involved.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::PubsubInterface as _;

/// How often a probe is published.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(250);

const PREFIX: &str = "lag:";

/// The latest probe delay of one bus.
#[derive(Debug)]
pub(super) struct LagProbe {
    epoch: Instant,
    delay_micros: AtomicU64,
    gauge: metrics::Gauge,
}

impl LagProbe {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            delay_micros: AtomicU64::new(0),
            gauge: metrics::gauge!("sba_event_bus_lag_seconds"),
        })
    }

    fn payload(&self) -> String {
        format!("{PREFIX}{}", self.epoch.elapsed().as_micros())
    }

    /// A message of the canary channel: `true` when it was a probe (its delay is recorded
    /// when it is one of this bus's).
    pub(super) fn returned(&self, payload: &str, now: Instant) -> bool {
        let Some(sent) = payload.strip_prefix(PREFIX) else { return false };
        if let Ok(sent) = sent.parse::<u64>() {
            let since_epoch = now.saturating_duration_since(self.epoch);
            let delay = since_epoch.saturating_sub(Duration::from_micros(sent));
            self.delay_micros.store(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
            self.gauge.set(delay.as_secs_f64());
        }
        true
    }

    /// The delay of the latest probe that came back.
    pub(super) fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::Relaxed))
    }
}

/// Publishes a probe on `channel` every [`PROBE_INTERVAL`] for the life of the bus (a failed
/// publish is skipped: the canary's readiness check reports a broken link).
pub(super) async fn publish_probes(client: Client, channel: String, probe: Arc<LagProbe>, timeout: Duration) {
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let publish = client.spublish::<(), _, _>(channel.as_str(), probe.payload());
        if !matches!(tokio::time::timeout(timeout, publish).await, Ok(Ok(()))) {
            tracing::debug!("event bus: a lag probe could not be published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_records_the_time_since_it_was_published_and_other_payloads_are_not_probes() {
        let probe = LagProbe::new();
        let payload = probe.payload();
        let later = Instant::now() + Duration::from_millis(700);
        assert!(probe.returned(&payload, later));
        assert!(probe.delay() >= Duration::from_millis(700), "{:?}", probe.delay());
        assert!(probe.delay() < Duration::from_secs(5), "{:?}", probe.delay());
        assert!(!probe.returned("17", later));
        // A malformed probe is a probe (never a canary nonce), and changes nothing.
        assert!(probe.returned("lag:x", later));
        assert!(probe.delay() >= Duration::from_millis(700));
    }
}
