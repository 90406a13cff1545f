//! `[worker]`: background work of `sba worker`: the run-expiry sweep and the event
//! persister's pace, leases and retries.

use std::time::Duration;

use validator::Validate as _;

use super::Ctx;
use super::parse::{bounded, collect_validation, duration, parse_or};
use crate::config::report::duration_text;
use crate::config::settings::{EventsSettings, WorkerSettings};

raw_section! {
    pub(super) struct RawWorker {
        sweep_interval_secs: Option<String>,
        max_run_age_secs: Option<String>,
        in_process: Option<String>,
        batch: Option<String>,
        poll_interval: Option<String>,
        claim_idle: Option<String>,
        lease_ttl: Option<String>,
        max_partitions: Option<String>,
        max_attempts: Option<String>,
    }
}

/// `events`: the partitions `max_partitions` defaults to and is bounded by.
pub(super) fn worker_settings(ctx: &mut Ctx<'_>, raw: &RawWorker, events: &EventsSettings) -> WorkerSettings {
    let in_process = !ctx.production;
    let p = &mut ctx.problems;
    let partitions = u64::from(events.partitions);
    let max_partitions =
        bounded(p, "SBA_WORKER__MAX_PARTITIONS", raw.max_partitions.as_deref(), partitions, 1..=partitions);
    let worker = WorkerSettings {
        sweep_interval: Duration::from_secs(parse_or(
            p,
            "SBA_WORKER__SWEEP_INTERVAL_SECS",
            raw.sweep_interval_secs.as_deref(),
            60,
        )),
        max_run_age: Duration::from_secs(parse_or(
            p,
            "SBA_WORKER__MAX_RUN_AGE_SECS",
            raw.max_run_age_secs.as_deref(),
            86_400,
        )),
        in_process: parse_or(p, "SBA_WORKER__IN_PROCESS", raw.in_process.as_deref(), in_process),
        batch: usize::try_from(bounded(p, "SBA_WORKER__BATCH", raw.batch.as_deref(), 256, 1..=10_000))
            .unwrap_or(256),
        poll_interval: duration(
            p,
            "SBA_WORKER__POLL_INTERVAL",
            raw.poll_interval.as_deref(),
            Duration::from_millis(50),
            Duration::from_millis(1)..=Duration::from_secs(10),
        ),
        claim_idle: duration(
            p,
            "SBA_WORKER__CLAIM_IDLE",
            raw.claim_idle.as_deref(),
            Duration::from_secs(30),
            Duration::from_millis(100)..=Duration::from_hours(1),
        ),
        lease_ttl: duration(
            p,
            "SBA_WORKER__LEASE_TTL",
            raw.lease_ttl.as_deref(),
            Duration::from_secs(10),
            Duration::from_millis(100)..=Duration::from_mins(10),
        ),
        max_partitions: u16::try_from(max_partitions).unwrap_or(events.partitions),
        max_attempts: bounded(p, "SBA_WORKER__MAX_ATTEMPTS", raw.max_attempts.as_deref(), 5, 1..=1_000),
    };
    // The persister renews its leases when it polls: sleeping past the TTL would lose them.
    if worker.poll_interval >= worker.lease_ttl {
        p.push(
            "SBA_WORKER__POLL_INTERVAL",
            format!(
                "must be shorter than SBA_WORKER__LEASE_TTL ({}): the worker renews its leases when it polls",
                duration_text(worker.lease_ttl)
            ),
        );
    }
    collect_validation(
        p,
        worker.validate(),
        &[
            ("sweep_interval", "SBA_WORKER__SWEEP_INTERVAL_SECS"),
            ("max_run_age", "SBA_WORKER__MAX_RUN_AGE_SECS"),
        ],
    );
    worker
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::*;

    #[test]
    fn the_worker_runs_in_process_by_default_in_development_only() {
        assert!(settings_of(&[]).unwrap().worker.in_process);
        assert!(!settings_of(&production_env()).unwrap().worker.in_process);
        let mut env = production_env();
        env.push(("SBA_WORKER__IN_PROCESS", "true"));
        assert!(settings_of(&env).unwrap().worker.in_process);
        assert!(!settings_of(&[("SBA_WORKER__IN_PROCESS", "false")]).unwrap().worker.in_process);
    }

    #[test]
    fn persister_settings_have_defaults_and_take_durations_with_units() {
        let worker = settings_of(&[]).unwrap().worker;
        assert_eq!(worker.batch, 256);
        assert_eq!(worker.poll_interval, Duration::from_millis(50));
        assert_eq!(worker.claim_idle, Duration::from_secs(30));
        assert_eq!(worker.lease_ttl, Duration::from_secs(10));
        assert_eq!(worker.max_partitions, 16, "all partitions");
        assert_eq!(worker.max_attempts, 5);

        let worker = settings_of(&[
            ("SBA_WORKER__BATCH", "32"),
            ("SBA_WORKER__POLL_INTERVAL", "200ms"),
            ("SBA_WORKER__CLAIM_IDLE", "2m"),
            ("SBA_WORKER__LEASE_TTL", "5s"),
            ("SBA_WORKER__MAX_PARTITIONS", "8"),
            ("SBA_WORKER__MAX_ATTEMPTS", "3"),
        ])
        .unwrap()
        .worker;
        assert_eq!(worker.batch, 32);
        assert_eq!(worker.poll_interval, Duration::from_millis(200));
        assert_eq!(worker.claim_idle, Duration::from_mins(2));
        assert_eq!(worker.lease_ttl, Duration::from_secs(5));
        assert_eq!(worker.max_partitions, 8);
        assert_eq!(worker.max_attempts, 3);
    }

    #[test]
    fn max_partitions_defaults_to_and_is_bounded_by_the_partition_count() {
        assert_eq!(settings_of(&[("SBA_EVENTS__PARTITIONS", "64")]).unwrap().worker.max_partitions, 64);
        let problems =
            settings_of(&[("SBA_EVENTS__PARTITIONS", "4"), ("SBA_WORKER__MAX_PARTITIONS", "5")]).unwrap_err();
        assert_eq!(problem_settings(&problems), ["SBA_WORKER__MAX_PARTITIONS"]);
    }

    #[test]
    fn a_poll_interval_not_shorter_than_the_lease_is_refused() {
        let problems =
            settings_of(&[("SBA_WORKER__POLL_INTERVAL", "5s"), ("SBA_WORKER__LEASE_TTL", "5s")]).unwrap_err();
        assert_eq!(problem_settings(&problems), ["SBA_WORKER__POLL_INTERVAL"]);
        assert!(problems.to_string().contains("shorter than SBA_WORKER__LEASE_TTL (5s)"), "{problems}");
    }

    #[test]
    fn invalid_persister_settings_are_each_reported() {
        for (var, bad) in [
            ("SBA_WORKER__IN_PROCESS", "sometimes"),
            ("SBA_WORKER__BATCH", "0"),
            ("SBA_WORKER__POLL_INTERVAL", "50"),
            ("SBA_WORKER__CLAIM_IDLE", "10ms"),
            ("SBA_WORKER__LEASE_TTL", "1h"),
            ("SBA_WORKER__MAX_PARTITIONS", "0"),
            ("SBA_WORKER__MAX_ATTEMPTS", "0"),
        ] {
            let problems = settings_of(&[(var, bad)]).unwrap_err();
            assert_eq!(problem_settings(&problems), [var], "{var}={bad}");
        }
    }
}
