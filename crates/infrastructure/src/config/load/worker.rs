//! `[worker]`: background work of `sba worker`.

use std::time::Duration;

use validator::Validate as _;

use super::Ctx;
use super::parse::{collect_validation, parse_or};
use crate::config::settings::WorkerSettings;

raw_section! {
    pub(super) struct RawWorker {
        sweep_interval_secs: Option<String>,
        max_run_age_secs: Option<String>,
    }
}

pub(super) fn worker_settings(ctx: &mut Ctx<'_>, raw: &RawWorker) -> WorkerSettings {
    let p = &mut ctx.problems;
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
    };
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
