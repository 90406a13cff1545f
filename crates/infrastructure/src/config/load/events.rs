//! `[events]`: the event pipeline on Redis (ADR 0017): partitions, run history, call bound,
//! and how long the readiness canary of the live bus may take.

use std::time::Duration;

use sba_application::health::CHECK_TIMEOUT;

use super::Problems;
use super::parse::{bounded, duration};
use crate::config::settings::EventsSettings;

raw_section! {
    pub(super) struct RawEvents {
        partitions: Option<String>,
        history_max_len: Option<String>,
        history_ttl: Option<String>,
        timeout: Option<String>,
        canary_timeout: Option<String>,
        reorder_window: Option<String>,
    }
}

/// P when unset.
const DEFAULT_PARTITIONS: u64 = 16;
/// The fewest events a run's history may keep: readers resume from it after a lost
/// message, so it must hold more than a burst.
const MIN_HISTORY_MAX_LEN: u64 = 100;

pub(super) fn events_settings(problems: &mut Problems, raw: &RawEvents) -> EventsSettings {
    let partitions =
        bounded(problems, "SBA_EVENTS__PARTITIONS", raw.partitions.as_deref(), DEFAULT_PARTITIONS, 1..=1_024);
    let history_max_len = bounded(
        problems,
        "SBA_EVENTS__HISTORY_MAX_LEN",
        raw.history_max_len.as_deref(),
        10_000,
        MIN_HISTORY_MAX_LEN..=100_000_000,
    );
    EventsSettings {
        partitions: u16::try_from(partitions).unwrap_or(16),
        history_max_len,
        history_ttl: duration(
            problems,
            "SBA_EVENTS__HISTORY_TTL",
            raw.history_ttl.as_deref(),
            Duration::from_hours(24),
            Duration::from_secs(1)..=Duration::from_hours(24 * 30),
        ),
        timeout: duration(
            problems,
            "SBA_EVENTS__TIMEOUT",
            raw.timeout.as_deref(),
            Duration::from_secs(1),
            Duration::from_millis(1)..=Duration::from_secs(30),
        ),
        // Past the readiness check's own bound the check is cut off before the canary's
        // verdict: a longer canary timeout would never apply.
        canary_timeout: duration(
            problems,
            "SBA_EVENTS__CANARY_TIMEOUT",
            raw.canary_timeout.as_deref(),
            Duration::from_secs(1),
            Duration::from_millis(10)..=CHECK_TIMEOUT,
        ),
        reorder_window: duration(
            problems,
            "SBA_EVENTS__REORDER_WINDOW",
            raw.reorder_window.as_deref(),
            Duration::from_millis(500),
            Duration::ZERO..=Duration::from_secs(5),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::*;
    use crate::config::settings::EventsSettings;

    #[test]
    fn event_settings_default_to_sixteen_partitions_and_a_day_of_history() {
        assert_eq!(
            settings_of(&[]).unwrap().events,
            EventsSettings {
                partitions: 16,
                history_max_len: 10_000,
                history_ttl: Duration::from_hours(24),
                timeout: Duration::from_secs(1),
                canary_timeout: Duration::from_secs(1),
                reorder_window: Duration::from_millis(500),
            }
        );
        let events = settings_of(&[
            ("SBA_EVENTS__PARTITIONS", "64"),
            ("SBA_EVENTS__HISTORY_MAX_LEN", "500"),
            ("SBA_EVENTS__HISTORY_TTL", "90m"),
            ("SBA_EVENTS__TIMEOUT", "250ms"),
            ("SBA_EVENTS__CANARY_TIMEOUT", "300ms"),
            ("SBA_EVENTS__REORDER_WINDOW", "0s"),
        ])
        .unwrap()
        .events;
        assert_eq!(
            events,
            EventsSettings {
                partitions: 64,
                history_max_len: 500,
                history_ttl: Duration::from_mins(90),
                timeout: Duration::from_millis(250),
                canary_timeout: Duration::from_millis(300),
                reorder_window: Duration::ZERO,
            }
        );
    }

    #[test]
    fn out_of_range_event_settings_are_each_reported() {
        for (var, bad) in [
            ("SBA_EVENTS__PARTITIONS", "0"),
            ("SBA_EVENTS__PARTITIONS", "1025"),
            ("SBA_EVENTS__HISTORY_MAX_LEN", "99"),
            ("SBA_EVENTS__HISTORY_TTL", "0s"),
            ("SBA_EVENTS__HISTORY_TTL", "3600"),
            ("SBA_EVENTS__TIMEOUT", "1m"),
            ("SBA_EVENTS__CANARY_TIMEOUT", "5ms"),
            ("SBA_EVENTS__CANARY_TIMEOUT", "3s"),
            ("SBA_EVENTS__REORDER_WINDOW", "6s"),
        ] {
            let problems = settings_of(&[(var, bad)]).unwrap_err();
            assert_eq!(problem_settings(&problems), [var], "{var}={bad}");
        }
    }
}
