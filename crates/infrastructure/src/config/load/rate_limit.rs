//! `[rate_limit]`: HTTP and WebSocket quotas (ADR 0006).

use std::time::Duration;

use sba_application::ratelimit::{FailMode, Rule};
use sba_application::ratelimit_ws::WsOp;
use sba_domain::ratelimit::Quota;

use super::Problems;
use super::parse::{bounded, entries, parse_or, quota};
use crate::config::settings::RateLimitSettings;

/// The default quota when none is configured: 600 requests a minute per tenant, IP, method
/// and route.
const DEFAULT_QUOTA: Quota = Quota::per_minute(match std::num::NonZeroU32::new(600) {
    Some(limit) => limit,
    None => std::num::NonZeroU32::MIN,
});

/// The largest tenant aggregate factor: beyond it the aggregate limits nothing real.
const MAX_AGGREGATE_FACTOR: u64 = 10_000;

raw_section! {
    pub(super) struct RawRateLimit {
        enabled: Option<String>,
        default: Option<String>,
        rules: Option<String>,
        plans: Option<String>,
        ws: Option<String>,
        ws_close_after: Option<String>,
        fail_mode: Option<String>,
        redis_timeout_ms: Option<String>,
        tenant_aggregate_factor: Option<String>,
    }
}

pub(super) fn rate_limit_settings(problems: &mut Problems, raw: &RawRateLimit) -> RateLimitSettings {
    let default = raw.default.as_deref().and_then(|text| quota(problems, "SBA_RATE_LIMIT__DEFAULT", text));
    let rules = raw.rules.as_deref().map(|text| limit_rules(problems, text)).unwrap_or_default();
    let plans = raw
        .plans
        .as_deref()
        .map(|text| {
            entries(problems, "SBA_RATE_LIMIT__PLANS", text, |problems, plan, value| {
                let valid = !plan.is_empty()
                    && plan.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !valid {
                    problems.push(
                        "SBA_RATE_LIMIT__PLANS",
                        format!("`{plan}` is not a plan name ([A-Za-z0-9._-])"),
                    );
                    return None;
                }
                Some((plan.to_owned(), quota(problems, "SBA_RATE_LIMIT__PLANS", value)?))
            })
        })
        .unwrap_or_default();
    let fail_mode = match raw.fail_mode.as_deref().map(str::trim) {
        None | Some("open") => FailMode::Open,
        Some("closed") => FailMode::Closed,
        Some(other) => {
            problems.push("SBA_RATE_LIMIT__FAIL_MODE", format!("`{other}` is not `open` or `closed`"));
            FailMode::Open
        }
    };
    let timeout_ms =
        bounded(problems, "SBA_RATE_LIMIT__REDIS_TIMEOUT_MS", raw.redis_timeout_ms.as_deref(), 50, 1..=5_000);
    let mut ws_quotas = default_ws_quotas();
    if let Some(text) = raw.ws.as_deref() {
        for (op, quota) in entries(problems, "SBA_RATE_LIMIT__WS", text, |problems, op, value| {
            let Some(op) = WsOp::parse(op) else {
                problems.push(
                    "SBA_RATE_LIMIT__WS",
                    format!("`{op}` is not subscribe, unsubscribe, ping or auth"),
                );
                return None;
            };
            Some((op, quota(problems, "SBA_RATE_LIMIT__WS", value)?))
        }) {
            ws_quotas.insert(op, quota);
        }
    }
    let ws_close_after: u32 =
        parse_or(problems, "SBA_RATE_LIMIT__WS_CLOSE_AFTER", raw.ws_close_after.as_deref(), 10);
    if ws_close_after == 0 {
        problems.push("SBA_RATE_LIMIT__WS_CLOSE_AFTER", "must be at least 1");
    }
    let tenant_aggregate_factor = raw.tenant_aggregate_factor.as_deref().and_then(|text| {
        let factor = bounded(
            problems,
            "SBA_RATE_LIMIT__TENANT_AGGREGATE_FACTOR",
            Some(text),
            1,
            1..=MAX_AGGREGATE_FACTOR,
        );
        u32::try_from(factor).ok().and_then(std::num::NonZeroU32::new)
    });
    RateLimitSettings {
        tenant_aggregate_factor,
        ws_quotas,
        ws_close_after,
        enabled: parse_or(problems, "SBA_RATE_LIMIT__ENABLED", raw.enabled.as_deref(), true),
        default: default.unwrap_or(DEFAULT_QUOTA),
        rules,
        plans,
        fail_mode,
        redis_timeout: Duration::from_millis(timeout_ms),
    }
}

/// Per minute: 60 subscribes and unsubscribes, 120 pings, 10 token refreshes.
fn default_ws_quotas() -> std::collections::HashMap<WsOp, Quota> {
    [(WsOp::Subscribe, 60), (WsOp::Unsubscribe, 60), (WsOp::Ping, 120), (WsOp::Auth, 10)]
        .into_iter()
        .filter_map(|(op, limit)| Some((op, Quota::per_minute(std::num::NonZeroU32::new(limit)?))))
        .collect()
}

/// `<name> <METHOD|*> <route template> <limit>/<window>; ...`.
fn limit_rules(problems: &mut Problems, text: &str) -> Vec<Rule> {
    const SETTING: &str = "SBA_RATE_LIMIT__RULES";
    let mut rules = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split_whitespace().collect();
        let [name, method, route, limit] = parts.as_slice() else {
            problems.push(
                SETTING,
                "each rule must look like `<name> <METHOD|*> <route template> <limit>/<secs>`",
            );
            continue;
        };
        let valid_name = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        // `*`: the one bucket of a client's CORS preflights (`OPTIONS *`).
        if !valid_name || !(route.starts_with('/') || *route == "*") {
            problems.push(
                SETTING,
                format!(
                    "rule `{name}`: the name must be [A-Za-z0-9._-] and the route start with / (or be *)"
                ),
            );
            continue;
        }
        let Some(quota) = quota(problems, SETTING, limit) else { continue };
        let method = (*method != "*").then(|| method.to_ascii_uppercase());
        rules.push(Rule { name: (*name).to_owned(), method, route: (*route).to_owned(), quota });
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use sba_application::ratelimit::FailMode;
    use sba_application::ratelimit_ws::WsOp;
    use sba_domain::ratelimit::Quota;

    #[test]
    fn rate_limit_settings_parse_quotas_rules_plans_and_tenant_quotas() {
        let a = "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";
        let plans = format!("{a}=pro");
        let limits = format!("{a}=1000/60");
        let settings = settings_of(&[
            ("SBA_RATE_LIMIT__DEFAULT", "100/60"),
            ("SBA_RATE_LIMIT__RULES", "create-run POST /v1/runs 20/60; any * /v1/usage 5/1"),
            ("SBA_RATE_LIMIT__PLANS", "pro=600/60; free=60/60"),
            ("SBA_RATE_LIMIT__FAIL_MODE", "closed"),
            ("SBA_TENANTS__PLANS", &plans),
            ("SBA_TENANTS__RATE_LIMITS", &limits),
        ])
        .unwrap();
        let limit = &settings.rate_limit;
        assert_eq!(limit.default, Quota::new(100, 60).unwrap());
        assert_eq!(limit.rules.len(), 2);
        assert_eq!(limit.rules[0].method.as_deref(), Some("POST"));
        assert_eq!(limit.rules[1].method, None);
        assert_eq!(
            limit.plans,
            [
                ("pro".to_owned(), Quota::new(600, 60).unwrap()),
                ("free".to_owned(), Quota::new(60, 60).unwrap())
            ]
        );
        assert_eq!(limit.fail_mode, FailMode::Closed);
        assert_eq!(settings.tenants.plans[0].1, "pro");
        assert_eq!(limit.ws_quotas[&WsOp::Auth], Quota::new(10, 60).unwrap(), "defaults");
        assert_eq!(limit.ws_close_after, 10);
        let ws = settings_of(&[("SBA_RATE_LIMIT__WS", "ping=5/1"), ("SBA_RATE_LIMIT__WS_CLOSE_AFTER", "3")])
            .unwrap();
        assert_eq!(ws.rate_limit.ws_quotas[&WsOp::Ping], Quota::new(5, 1).unwrap());
        assert_eq!(ws.rate_limit.ws_quotas[&WsOp::Subscribe], Quota::new(60, 60).unwrap());
        assert_eq!(ws.rate_limit.ws_close_after, 3);
        assert_eq!(settings.tenants.rate_limits[0].1, Quota::new(1000, 60).unwrap());
        assert_eq!(limit.tenant_aggregate_factor, None, "the tenant aggregate is off by default");
        let aggregate = settings_of(&[("SBA_RATE_LIMIT__TENANT_AGGREGATE_FACTOR", "20")]).unwrap();
        assert_eq!(aggregate.rate_limit.tenant_aggregate_factor.map(std::num::NonZeroU32::get), Some(20));

        for (var, bad) in [
            ("SBA_RATE_LIMIT__DEFAULT", "100"),
            ("SBA_RATE_LIMIT__DEFAULT", "0/60"),
            ("SBA_RATE_LIMIT__RULES", "POST /v1/runs 20/60"),
            ("SBA_RATE_LIMIT__RULES", "x POST v1/runs 20/60"),
            ("SBA_RATE_LIMIT__PLANS", "pro"),
            ("SBA_RATE_LIMIT__FAIL_MODE", "maybe"),
            ("SBA_RATE_LIMIT__REDIS_TIMEOUT_MS", "0"),
            ("SBA_TENANTS__PLANS", "acme=pro"),
            ("SBA_RATE_LIMIT__WS", "publish=5/1"),
            ("SBA_RATE_LIMIT__WS_CLOSE_AFTER", "0"),
            ("SBA_TENANTS__RATE_LIMITS", "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e=fast"),
            ("SBA_RATE_LIMIT__TENANT_AGGREGATE_FACTOR", "0"),
            ("SBA_RATE_LIMIT__TENANT_AGGREGATE_FACTOR", "many"),
            ("SBA_RATE_LIMIT__TENANT_AGGREGATE_FACTOR", "10001"),
        ] {
            let problems = settings_of(&[(var, bad)]).unwrap_err();
            assert_eq!(problem_settings(&problems), [var], "{var}={bad}");
        }
    }
}
