//! `[stream]`: the WebSocket gateway (`GET /v1/stream`): frame size, heartbeat, each
//! connection's outbound queue and subscriptions, and the broadcast rates per tenant and
//! user.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use sba_application::stream::outbound::{DEFAULT_MAX_DELAY, OutboundLimits};
use sba_application::stream::throttle::{ThrottlePolicy, ThrottleRates};

use super::Problems;
use super::parse::{bounded, duration, entries};
use crate::config::report::duration_text;
use crate::config::settings::StreamSettings;

raw_section! {
    pub(super) struct RawStream {
        max_frame_bytes: Option<String>,
        heartbeat_interval: Option<String>,
        heartbeat_timeout: Option<String>,
        max_subscriptions: Option<String>,
        queue_max_messages: Option<String>,
        queue_max_bytes: Option<String>,
        queue_high_water_messages: Option<String>,
        queue_high_water_bytes: Option<String>,
        queue_max_delay: Option<String>,
        tenant_events_per_second: Option<String>,
        user_events_per_second: Option<String>,
        plans: Option<String>,
    }
}

/// The most events per second a broadcast rate may name.
const MAX_RATE: u64 = 1_000_000;

pub(super) fn stream_settings(problems: &mut Problems, raw: &RawStream) -> StreamSettings {
    let p = problems;
    let max_frame_bytes =
        bounded(p, "SBA_STREAM__MAX_FRAME_BYTES", raw.max_frame_bytes.as_deref(), 65_536, 1_024..=16 << 20);
    let heartbeat_interval = duration(
        p,
        "SBA_STREAM__HEARTBEAT_INTERVAL",
        raw.heartbeat_interval.as_deref(),
        Duration::from_secs(20),
        Duration::from_millis(100)..=Duration::from_mins(10),
    );
    let heartbeat_timeout = duration(
        p,
        "SBA_STREAM__HEARTBEAT_TIMEOUT",
        raw.heartbeat_timeout.as_deref(),
        Duration::from_mins(1),
        Duration::from_millis(100)..=Duration::from_mins(30),
    );
    if heartbeat_timeout <= heartbeat_interval {
        p.push(
            "SBA_STREAM__HEARTBEAT_TIMEOUT",
            format!(
                "must be longer than SBA_STREAM__HEARTBEAT_INTERVAL ({}): a client answers the pings",
                duration_text(heartbeat_interval)
            ),
        );
    }
    let max_subscriptions =
        bounded(p, "SBA_STREAM__MAX_SUBSCRIPTIONS", raw.max_subscriptions.as_deref(), 100, 1..=10_000);
    let size = |p: &mut Problems, setting: &str, value: Option<&str>, default: u64, max: u64| {
        usize::try_from(bounded(p, setting, value, default, 1..=max)).unwrap_or(1)
    };
    let max_messages =
        size(p, "SBA_STREAM__QUEUE_MAX_MESSAGES", raw.queue_max_messages.as_deref(), 1024, 1 << 20);
    let max_bytes = size(p, "SBA_STREAM__QUEUE_MAX_BYTES", raw.queue_max_bytes.as_deref(), 4 << 20, 1 << 30);
    let high_water_messages = size(
        p,
        "SBA_STREAM__QUEUE_HIGH_WATER_MESSAGES",
        raw.queue_high_water_messages.as_deref(),
        256,
        1 << 20,
    );
    let high_water_bytes = size(
        p,
        "SBA_STREAM__QUEUE_HIGH_WATER_BYTES",
        raw.queue_high_water_bytes.as_deref(),
        1 << 20,
        1 << 30,
    );
    let outbound = OutboundLimits::new(max_messages, max_bytes, high_water_messages, high_water_bytes)
        .unwrap_or_else(|_| {
            p.push(
                "SBA_STREAM__QUEUE_HIGH_WATER_MESSAGES",
                "each high-water mark must be at most its bound (SBA_STREAM__QUEUE_MAX_MESSAGES, \
                 SBA_STREAM__QUEUE_MAX_BYTES)",
            );
            OutboundLimits::default()
        })
        .with_max_delay(duration(
            p,
            "SBA_STREAM__QUEUE_MAX_DELAY",
            raw.queue_max_delay.as_deref(),
            DEFAULT_MAX_DELAY,
            Duration::from_millis(100)..=Duration::from_mins(10),
        ));
    let rate = |p: &mut Problems, setting: &str, value: Option<&str>, default: u32| {
        let rate = bounded(p, setting, value, u64::from(default), 1..=MAX_RATE);
        u32::try_from(rate).ok().and_then(NonZeroU32::new).unwrap_or(NonZeroU32::MIN)
    };
    let default = ThrottleRates {
        tenant_per_second: rate(
            p,
            "SBA_STREAM__TENANT_EVENTS_PER_SECOND",
            raw.tenant_events_per_second.as_deref(),
            5_000,
        ),
        user_per_second: rate(
            p,
            "SBA_STREAM__USER_EVENTS_PER_SECOND",
            raw.user_events_per_second.as_deref(),
            1_000,
        ),
    };
    let plans = raw.plans.as_deref().map(|text| plan_rates(p, text)).unwrap_or_default();
    StreamSettings {
        max_frame_bytes: usize::try_from(max_frame_bytes).unwrap_or(65_536),
        heartbeat_interval,
        heartbeat_timeout,
        max_subscriptions: usize::try_from(max_subscriptions).unwrap_or(100),
        outbound,
        throttle: ThrottlePolicy { default, plans },
    }
}

/// `<plan>=<tenant events/s>/<user events/s>; ...`.
fn plan_rates(problems: &mut Problems, text: &str) -> HashMap<String, ThrottleRates> {
    const SETTING: &str = "SBA_STREAM__PLANS";
    entries(problems, SETTING, text, |problems, plan, value| {
        let parsed = value.split_once('/').and_then(|(tenant, user)| {
            let rate = |text: &str| {
                text.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|rate| u64::from(*rate) <= MAX_RATE)
                    .and_then(NonZeroU32::new)
            };
            Some(ThrottleRates { tenant_per_second: rate(tenant)?, user_per_second: rate(user)? })
        });
        let valid_name = !plan.is_empty()
            && plan.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        match parsed {
            Some(rates) if valid_name => Some((plan.to_owned(), rates)),
            _ => {
                let shown: String = format!("{plan}={value}").chars().take(60).collect();
                problems.push(
                    SETTING,
                    format!("`{shown}` is not `<plan>=<tenant events/s>/<user events/s>` (1 to {MAX_RATE})"),
                );
                None
            }
        }
    })
    .into_iter()
    .collect()
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use sba_application::stream::outbound::OutboundLimits;

    use super::super::testing::*;

    #[test]
    fn stream_settings_have_defaults() {
        let stream = settings_of(&[]).unwrap().stream;
        assert_eq!(stream.max_frame_bytes, 65_536);
        assert_eq!(
            (stream.heartbeat_interval, stream.heartbeat_timeout),
            (Duration::from_secs(20), Duration::from_mins(1))
        );
        assert_eq!(stream.max_subscriptions, 100);
        assert_eq!(stream.outbound, OutboundLimits::default());
        let rates = stream.throttle.rates_for(None);
        assert_eq!((rates.tenant_per_second.get(), rates.user_per_second.get()), (5_000, 1_000));
    }

    #[test]
    fn stream_settings_are_read_from_their_variables() {
        let set = settings_of(&[
            ("SBA_STREAM__MAX_FRAME_BYTES", "4096"),
            ("SBA_STREAM__HEARTBEAT_INTERVAL", "500ms"),
            ("SBA_STREAM__HEARTBEAT_TIMEOUT", "2s"),
            ("SBA_STREAM__MAX_SUBSCRIPTIONS", "3"),
            ("SBA_STREAM__QUEUE_MAX_MESSAGES", "10"),
            ("SBA_STREAM__QUEUE_MAX_BYTES", "100000"),
            ("SBA_STREAM__QUEUE_HIGH_WATER_MESSAGES", "4"),
            ("SBA_STREAM__QUEUE_HIGH_WATER_BYTES", "50000"),
            ("SBA_STREAM__QUEUE_MAX_DELAY", "3s"),
            ("SBA_STREAM__TENANT_EVENTS_PER_SECOND", "300"),
            ("SBA_STREAM__USER_EVENTS_PER_SECOND", "30"),
            ("SBA_STREAM__PLANS", "pro=20000/5000; free=50/10"),
        ])
        .unwrap();
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        let stream = set.stream;
        assert_eq!(stream.max_frame_bytes, 4096);
        assert_eq!(stream.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(stream.heartbeat_timeout, Duration::from_secs(2));
        assert_eq!(stream.max_subscriptions, 3);
        assert_eq!(
            stream.outbound,
            OutboundLimits::new(10, 100_000, 4, 50_000).unwrap().with_max_delay(Duration::from_secs(3))
        );
        let rate = |plan| {
            let rates = stream.throttle.rates_for(plan);
            (rates.tenant_per_second, rates.user_per_second)
        };
        let n = |n| NonZeroU32::new(n).unwrap();
        assert_eq!(rate(None), (n(300), n(30)));
        assert_eq!(rate(Some("pro")), (n(20_000), n(5_000)));
        assert_eq!(rate(Some("free")), (n(50), n(10)));
    }

    #[test]
    fn invalid_stream_settings_are_each_reported() {
        for (var, bad) in [
            ("SBA_STREAM__MAX_FRAME_BYTES", "100"),
            ("SBA_STREAM__HEARTBEAT_INTERVAL", "20"),
            ("SBA_STREAM__HEARTBEAT_TIMEOUT", "10s"),
            ("SBA_STREAM__MAX_SUBSCRIPTIONS", "0"),
            ("SBA_STREAM__QUEUE_MAX_MESSAGES", "0"),
            ("SBA_STREAM__QUEUE_HIGH_WATER_MESSAGES", "2000"),
            ("SBA_STREAM__QUEUE_MAX_DELAY", "50ms"),
            ("SBA_STREAM__USER_EVENTS_PER_SECOND", "0"),
            ("SBA_STREAM__PLANS", "pro=100"),
            ("SBA_STREAM__PLANS", "pro=0/5"),
            ("SBA_STREAM__PLANS", "p r o=10/5"),
        ] {
            let problems = settings_of(&[(var, bad)]).unwrap_err();
            assert_eq!(problem_settings(&problems), [var], "{var}={bad}");
        }
    }
}
