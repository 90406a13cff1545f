//! `[demo]`: the built-in demo agent `echo`.

use sba_application::demo::{DEFAULT_MAX_RUNS, DEFAULT_WORDS_PER_SECOND};

use super::Ctx;
use super::parse::{bounded, parse_or};
use crate::config::settings::DemoSettings;

raw_section! {
    pub(super) struct RawDemo {
        echo_agent: Option<String>,
        words_per_second: Option<String>,
        max_runs: Option<String>,
    }
}

/// On by default in development only: in production the demo agent answers runs of agent
/// `echo` only when an operator turns it on.
pub(super) fn demo_settings(ctx: &mut Ctx<'_>, raw: &RawDemo) -> DemoSettings {
    let p = &mut ctx.problems;
    let echo_agent = parse_or(p, "SBA_DEMO__ECHO_AGENT", raw.echo_agent.as_deref(), !ctx.production);
    let words_per_second = bounded(
        p,
        "SBA_DEMO__WORDS_PER_SECOND",
        raw.words_per_second.as_deref(),
        u64::from(DEFAULT_WORDS_PER_SECOND),
        1..=1_000,
    );
    let max_runs =
        bounded(p, "SBA_DEMO__MAX_RUNS", raw.max_runs.as_deref(), DEFAULT_MAX_RUNS as u64, 1..=10_000);
    DemoSettings {
        echo_agent,
        words_per_second: u32::try_from(words_per_second).unwrap_or(DEFAULT_WORDS_PER_SECOND),
        max_runs: usize::try_from(max_runs).unwrap_or(DEFAULT_MAX_RUNS),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn the_echo_agent_is_on_in_development_and_off_in_production_unless_enabled() {
        let development = settings_of(&[]).unwrap().demo;
        assert!(development.echo_agent);
        assert_eq!((development.words_per_second, development.max_runs), (20, 64));
        assert!(!settings_of(&[("SBA_DEMO__ECHO_AGENT", "false")]).unwrap().demo.echo_agent);
        assert!(!settings_of(&production_env()).unwrap().demo.echo_agent);
        let mut enabled = production_env();
        enabled.push(("SBA_DEMO__ECHO_AGENT", "true"));
        assert!(settings_of(&enabled).unwrap().demo.echo_agent);
    }

    #[test]
    fn the_pace_and_the_concurrent_runs_are_bounded_and_known_settings() {
        let set =
            settings_of(&[("SBA_DEMO__WORDS_PER_SECOND", "1000"), ("SBA_DEMO__MAX_RUNS", "3")]).unwrap();
        assert_eq!((set.demo.words_per_second, set.demo.max_runs), (1_000, 3));
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        for bad in [
            ("SBA_DEMO__WORDS_PER_SECOND", "0"),
            ("SBA_DEMO__WORDS_PER_SECOND", "1001"),
            ("SBA_DEMO__MAX_RUNS", "0"),
            ("SBA_DEMO__ECHO_AGENT", "yes please"),
        ] {
            let problems = settings_of(&[bad]).unwrap_err();
            assert_eq!(problem_settings(&problems), [bad.0]);
        }
    }
}
