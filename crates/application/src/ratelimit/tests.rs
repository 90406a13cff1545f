//! Unit tests of [`RateLimits`](super::RateLimits) with mocks of the distributed and the
//! fallback limiter.

use sba_domain::ratelimit::{HttpLimitKey, TenantAggregateKey};

use super::*;
use crate::ports::{MockRateLimiter, RateLimitError};

fn quota() -> Quota {
    Quota::new(10, 60).unwrap()
}

fn key() -> RateLimitKey<'static> {
    HttpLimitKey { tenant: None, ip: None, method: "GET", route: "/v1/runs" }.into()
}

fn allowed() -> Decision {
    Decision::Allowed { remaining: 9, reset_us: 6_000_000 }
}

fn unavailable() -> Result<Decision, RateLimitError> {
    Err(RateLimitError::Unavailable(anyhow::anyhow!("connection refused")))
}

#[test]
fn rules_win_then_the_tenants_quota_then_its_plan_then_the_default() {
    let q = |limit| Quota::new(limit, 60).unwrap();
    let policies = LimitPolicies {
        default: q(10),
        rules: vec![Rule {
            name: "create-run".into(),
            method: Some("POST".into()),
            route: "/v1/runs".into(),
            quota: q(5),
        }],
        plans: HashMap::from([("pro".to_owned(), q(100))]),
        exempt: vec!["/healthz".into()],
        tenant_aggregate_factor: None,
    };
    let id = sba_domain::TenantId::from_uuid(uuid::Uuid::from_u128(1));
    let pro = Tenant { plan: Some("pro".into()), ..Tenant::active(id) };
    let special = Tenant { rate_limit: Some(q(1000)), ..pro.clone() };
    let unknown_plan = Tenant { plan: Some("gold".into()), ..Tenant::active(id) };
    assert_eq!(policies.quota_for("post", "/v1/runs", Some(&special)), Some(("create-run", q(5))));
    assert_eq!(policies.quota_for("GET", "/v1/runs", None), Some(("default", q(10))));
    assert_eq!(policies.quota_for("GET", "/v1/runs", Some(&pro)), Some(("pro", q(100))));
    assert_eq!(policies.quota_for("GET", "/v1/runs", Some(&special)), Some(("tenant", q(1000))));
    assert_eq!(policies.quota_for("GET", "/v1/runs", Some(&unknown_plan)), Some(("default", q(10))));
    assert_eq!(policies.quota_for("GET", "/healthz", None), None);
}

#[tokio::test]
async fn redis_failures_fall_back_in_open_mode_and_skip_redis_while_the_breaker_is_open() {
    let mut distributed = MockRateLimiter::new();
    distributed.expect_check().times(1).returning(|_, _, _| unavailable());
    let mut fallback = MockRateLimiter::new();
    fallback.expect_check().times(3).returning(|_, _, _| Ok(allowed()));
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(fallback), FailMode::Open);
    for _ in 0..3 {
        assert_eq!(limits.check(key(), "default", quota(), 1).await, Verdict::Decided(allowed()));
    }
    assert!(limits.fallback_active());
}

#[tokio::test]
async fn closed_mode_refuses_while_redis_is_unreachable() {
    let mut distributed = MockRateLimiter::new();
    distributed.expect_check().returning(|_, _, _| unavailable());
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(MockRateLimiter::new()), FailMode::Closed);
    assert_eq!(limits.check(key(), "default", quota(), 1).await, Verdict::Unavailable);
}

#[tokio::test]
async fn a_key_known_to_be_over_its_limit_is_refused_without_asking_redis() {
    let mut distributed = MockRateLimiter::new();
    distributed
        .expect_check()
        .times(1)
        .returning(|_, _, _| Ok(Decision::Denied { retry_after_us: 30_000_000, reset_us: 60_000_000 }));
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(MockRateLimiter::new()), FailMode::Open);
    for _ in 0..5 {
        let Verdict::Decided(Decision::Denied { retry_after_us, reset_us }) =
            limits.check(key(), "default", quota(), 1).await
        else {
            panic!("expected a denial");
        };
        assert!(retry_after_us > 29_000_000 && retry_after_us <= 30_000_000, "{retry_after_us}");
        assert!(reset_us > 59_000_000 && reset_us <= 60_000_000, "the quota's own reset: {reset_us}");
    }
}

#[tokio::test]
async fn remembered_denials_stay_within_their_bound_under_a_flood_of_keys() {
    let mut distributed = MockRateLimiter::new();
    distributed
        .expect_check()
        .returning(|_, _, _| Ok(Decision::Denied { retry_after_us: 600_000_000, reset_us: 600_000_000 }));
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(MockRateLimiter::new()), FailMode::Open);
    let flood = usize::try_from(MAX_DENIED * 3).unwrap();
    for i in 0..flood {
        let route = format!("/v1/runs/{i}");
        let key = HttpLimitKey { tenant: None, ip: None, method: "GET", route: &route };
        limits.check(key.into(), "default", quota(), 1).await;
    }
    limits.denied.run_pending_tasks();
    assert!(limits.denied.entry_count() <= MAX_DENIED, "{}", limits.denied.entry_count());
}

#[tokio::test]
async fn a_remembered_denial_ends_when_the_key_may_pass_again() {
    let mut distributed = MockRateLimiter::new();
    let mut calls = 0;
    distributed.expect_check().times(2).returning(move |_, _, _| {
        calls += 1;
        Ok(if calls == 1 { Decision::Denied { retry_after_us: 1_000, reset_us: 1_000 } } else { allowed() })
    });
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(MockRateLimiter::new()), FailMode::Open);
    assert!(
        !matches!(limits.check(key(), "default", quota(), 1).await, Verdict::Decided(d) if d.is_allowed())
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!limits.denied.contains_key(&key().to_string()), "the memory lets go of it");
    assert_eq!(limits.check(key(), "default", quota(), 1).await, Verdict::Decided(allowed()));
}

/// A limiter that answers its first two checks only once both are waiting (two requests
/// of one key in flight together), denying every check for `retry`.
#[derive(Debug)]
struct DeniesTwoTogether {
    both_asked: tokio::sync::Barrier,
    calls: AtomicU64,
    retry: Duration,
}

#[async_trait::async_trait]
impl RateLimiter for DeniesTwoTogether {
    async fn check(&self, _: &str, _: Quota, _: u32) -> Result<Decision, crate::ports::RateLimitError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < 2 {
            self.both_asked.wait().await;
        }
        let retry_after_us = u64::try_from(self.retry.as_micros()).unwrap();
        Ok(Decision::Denied { retry_after_us, reset_us: retry_after_us })
    }
}

#[tokio::test]
async fn denials_of_one_key_decided_together_are_remembered_until_they_end_then_forgotten() {
    let limiter = Arc::new(DeniesTwoTogether {
        both_asked: tokio::sync::Barrier::new(2),
        calls: AtomicU64::new(0),
        retry: Duration::from_millis(300),
    });
    let limits = RateLimits::new(limiter.clone(), Arc::new(MockRateLimiter::new()), FailMode::Open);
    let together =
        tokio::join!(limits.check(key(), "default", quota(), 1), limits.check(key(), "default", quota(), 1));
    assert!(matches!(
        together,
        (Verdict::Decided(Decision::Denied { .. }), Verdict::Decided(Decision::Denied { .. }))
    ));
    // The second denial replaced the first in the memory: the key is still refused locally.
    assert!(matches!(
        limits.check(key(), "default", quota(), 1).await,
        Verdict::Decided(Decision::Denied { .. })
    ));
    assert_eq!(limiter.calls.load(Ordering::SeqCst), 2, "refused without asking the limiter");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(!limits.denied.contains_key(&key().to_string()), "forgotten once it ended");
}

#[tokio::test]
async fn an_allowed_request_with_a_fifth_of_its_quota_left_or_less_counts_as_near_the_limit() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut distributed = MockRateLimiter::new();
    let mut left = [3, 2, 0].into_iter();
    distributed
        .expect_check()
        .times(3)
        .returning(move |_, _, _| Ok(Decision::Allowed { remaining: left.next().unwrap(), reset_us: 1 }));
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(MockRateLimiter::new()), FailMode::Open);
    for _ in 0..3 {
        limits.check(key(), "default", quota(), 1).await; // a quota of 10
    }
    let counted = |name: &str| {
        snapshotter.snapshot().into_vec().into_iter().find_map(|(key, _, _, value)| {
            let labels: Vec<_> =
                key.key().labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
            let default_policy = labels.contains(&("policy".to_owned(), "default".to_owned()));
            (key.key().name() == name && default_policy && !labels.iter().any(|(k, _)| k == "outcome"))
                .then_some(value)
        })
    };
    assert_eq!(counted("sba_ratelimit_near_limit_total"), Some(DebugValue::Counter(2)), "2 and 0 left of 10");
}

#[tokio::test]
async fn denials_are_logged_at_most_once_a_second_and_the_next_line_counts_those_left_out() {
    let mut distributed = MockRateLimiter::new();
    distributed
        .expect_check()
        .times(1)
        .returning(|_, _, _| Ok(Decision::Denied { retry_after_us: 30_000_000, reset_us: 60_000_000 }));
    // A limiter running for an hour (its log clock counts from its start).
    let limits = RateLimits {
        started: Instant::now().checked_sub(Duration::from_hours(1)).unwrap(),
        ..RateLimits::new(Arc::new(distributed), Arc::new(MockRateLimiter::new()), FailMode::Open)
    };
    let flood = crate::testing::logs_of(async {
        for _ in 0..5 {
            limits.check(key(), "default", quota(), 1).await;
        }
    })
    .await;
    assert_eq!(flood.matches("rate limited").count(), 1, "{flood}");
    assert!(flood.contains("policy=\"default\"") && flood.contains("suppressed=0"), "{flood}");
    // The line was logged a second ago: the next denial is logged, with the four left out.
    limits.last_denial_log_us.fetch_sub(1_000_000, Ordering::Relaxed);
    let next = crate::testing::logs_of(async {
        limits.check(key(), "default", quota(), 1).await;
    })
    .await;
    assert_eq!(next.matches("rate limited").count(), 1, "{next}");
    assert!(next.contains("suppressed=4"), "{next}");
}

#[test]
fn debug_output_shows_the_fail_mode_and_whether_the_fallback_decides() {
    let limits =
        RateLimits::new(Arc::new(MockRateLimiter::new()), Arc::new(MockRateLimiter::new()), FailMode::Closed);
    let debug = format!("{limits:?}");
    assert!(
        debug.starts_with("RateLimits")
            && debug.contains("fail_mode: Closed")
            && debug.contains("fallback_active: false"),
        "{debug}"
    );
}

#[tokio::test]
async fn recovery_is_automatic_once_the_breaker_closes() {
    let mut distributed = MockRateLimiter::new();
    let mut calls = 0;
    distributed.expect_check().times(2).returning(move |_, _, _| {
        calls += 1;
        if calls == 1 { unavailable() } else { Ok(allowed()) }
    });
    let mut fallback = MockRateLimiter::new();
    fallback.expect_check().times(1).returning(|_, _, _| Ok(allowed()));
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(fallback), FailMode::Open);
    limits.check(key(), "default", quota(), 1).await;
    assert!(limits.fallback_active());
    limits.breaker.end_open_period(); // the breaker's second has passed
    limits.check(key(), "default", quota(), 1).await;
    assert!(!limits.fallback_active());
}

fn aggregate_key() -> RateLimitKey<'static> {
    let tenant = sba_domain::TenantId::from_uuid(uuid::Uuid::from_u128(1));
    TenantAggregateKey { tenant, method: "GET", route: "/v1/runs" }.into()
}

fn aggregate_quota() -> Quota {
    Quota::new(30, 60).unwrap()
}

fn denied() -> Decision {
    Decision::Denied { retry_after_us: 2_000_000, reset_us: 60_000_000 }
}

fn limiter_answering(own: Decision, all: Option<Decision>) -> RateLimits {
    let mut distributed = MockRateLimiter::new();
    distributed
        .expect_check()
        .withf(|key, _, _| key.contains("|*|"))
        .times(usize::from(all.is_some()))
        .returning(move |_, _, _| {
            all.ok_or_else(|| RateLimitError::Unavailable(anyhow::anyhow!("not asked")))
        });
    distributed
        .expect_check()
        .withf(|key, _, _| !key.contains("|*|"))
        .times(1)
        .returning(move |_, _, _| Ok(own));
    RateLimits::new(Arc::new(distributed), Arc::new(MockRateLimiter::new()), FailMode::Open)
}

#[test]
fn the_aggregate_quota_is_the_request_quota_times_the_factor_and_off_by_default() {
    let mut policies = LimitPolicies {
        default: quota(),
        rules: vec![],
        plans: HashMap::new(),
        exempt: vec![],
        tenant_aggregate_factor: None,
    };
    assert_eq!(policies.aggregate_quota(quota()), None);
    policies.tenant_aggregate_factor = NonZeroU32::new(3);
    assert_eq!(policies.aggregate_quota(quota()), Some(Quota::new(30, 60).unwrap()));
}

#[tokio::test]
async fn a_request_passes_only_if_its_own_key_and_its_tenants_aggregate_both_pass() {
    let limits = limiter_answering(allowed(), Some(denied()));
    let (verdict, reported) = limits
        .check_with_aggregate(key(), "default", quota(), Some((aggregate_key(), aggregate_quota())))
        .await;
    assert_eq!(verdict, Verdict::Decided(denied()));
    assert_eq!(reported, Some(aggregate_quota()), "the aggregate refused: its policy is reported");
}

#[tokio::test]
async fn a_client_refused_under_its_own_quota_does_not_use_up_the_aggregate() {
    let limits = limiter_answering(denied(), None);
    let (verdict, reported) = limits
        .check_with_aggregate(key(), "default", quota(), Some((aggregate_key(), aggregate_quota())))
        .await;
    assert_eq!(verdict, Verdict::Decided(denied()));
    assert_eq!(reported, None);
}

#[tokio::test]
async fn the_headers_report_whichever_bucket_has_fewer_requests_left() {
    let tight_aggregate = Decision::Allowed { remaining: 3, reset_us: 1 };
    let limits = limiter_answering(allowed(), Some(tight_aggregate));
    let aggregate = Some((aggregate_key(), aggregate_quota()));
    let (verdict, reported) = limits.check_with_aggregate(key(), "default", quota(), aggregate).await;
    assert_eq!((verdict, reported), (Verdict::Decided(tight_aggregate), Some(aggregate_quota())));

    let roomy_aggregate = Decision::Allowed { remaining: 29, reset_us: 1 };
    let limits = limiter_answering(allowed(), Some(roomy_aggregate));
    let (verdict, reported) = limits.check_with_aggregate(key(), "default", quota(), aggregate).await;
    assert_eq!((verdict, reported), (Verdict::Decided(allowed()), None));
}

#[tokio::test]
async fn an_exhausted_aggregate_refuses_without_charging_the_own_key() {
    let mut distributed = MockRateLimiter::new();
    distributed
        .expect_check()
        .withf(|key, _, _| !key.contains("|*|"))
        .times(1)
        .returning(|_, _, _| Ok(allowed()));
    distributed
        .expect_check()
        .withf(|key, _, _| key.contains("|*|"))
        .times(1)
        .returning(|_, _, _| Ok(Decision::Denied { retry_after_us: 30_000_000, reset_us: 60_000_000 }));
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(MockRateLimiter::new()), FailMode::Open);
    let aggregate = Some((aggregate_key(), aggregate_quota()));
    for _ in 0..3 {
        let (verdict, _) = limits.check_with_aggregate(key(), "default", quota(), aggregate).await;
        assert!(matches!(verdict, Verdict::Decided(Decision::Denied { .. })), "{verdict:?}");
    }
}

#[tokio::test]
async fn open_mode_is_unavailable_when_the_fallback_fails_too() {
    let mut distributed = MockRateLimiter::new();
    distributed.expect_check().times(1).returning(|_, _, _| unavailable());
    let mut fallback = MockRateLimiter::new();
    fallback.expect_check().times(2).returning(|_, _, _| unavailable());
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(fallback), FailMode::Open);
    for _ in 0..2 {
        assert_eq!(limits.check(key(), "default", quota(), 1).await, Verdict::Unavailable);
    }
}

#[tokio::test]
async fn closed_mode_never_asks_the_fallback_and_skips_redis_while_the_breaker_is_open() {
    let mut distributed = MockRateLimiter::new();
    distributed.expect_check().times(1).returning(|_, _, _| unavailable());
    let mut fallback = MockRateLimiter::new();
    fallback.expect_check().never();
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(fallback), FailMode::Closed);
    for _ in 0..3 {
        assert_eq!(limits.check(key(), "default", quota(), 1).await, Verdict::Unavailable);
    }
    assert!(limits.fallback_active());
}

#[tokio::test]
async fn a_denial_by_the_fallback_is_not_remembered_once_redis_is_back() {
    let mut distributed = MockRateLimiter::new();
    let mut calls = 0;
    distributed.expect_check().times(2).returning(move |_, _, _| {
        calls += 1;
        if calls == 1 { unavailable() } else { Ok(allowed()) }
    });
    let mut fallback = MockRateLimiter::new();
    fallback
        .expect_check()
        .times(1)
        .returning(|_, _, _| Ok(Decision::Denied { retry_after_us: 600_000_000, reset_us: 600_000_000 }));
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(fallback), FailMode::Open);
    assert!(matches!(
        limits.check(key(), "default", quota(), 1).await,
        Verdict::Decided(Decision::Denied { .. })
    ));
    limits.breaker.end_open_period();
    assert_eq!(
        limits.check(key(), "default", quota(), 1).await,
        Verdict::Decided(allowed()),
        "the node's own view does not outlive the outage"
    );
}

#[tokio::test]
async fn an_outage_on_the_own_key_leaves_the_aggregate_unasked_and_unreported() {
    let mut distributed = MockRateLimiter::new();
    distributed
        .expect_check()
        .withf(|key, _, _| !key.contains("|*|"))
        .times(1)
        .returning(|_, _, _| unavailable());
    distributed.expect_check().withf(|key, _, _| key.contains("|*|")).never();
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(MockRateLimiter::new()), FailMode::Closed);
    let aggregate = Some((aggregate_key(), aggregate_quota()));
    let outcome = limits.check_with_aggregate(key(), "default", quota(), aggregate).await;
    assert_eq!(outcome, (Verdict::Unavailable, None));
}

#[tokio::test]
async fn an_outage_on_the_aggregate_in_closed_mode_refuses_and_reports_the_aggregate() {
    let mut distributed = MockRateLimiter::new();
    distributed
        .expect_check()
        .withf(|key, _, _| !key.contains("|*|"))
        .times(1)
        .returning(|_, _, _| Ok(allowed()));
    distributed
        .expect_check()
        .withf(|key, _, _| key.contains("|*|"))
        .times(1)
        .returning(|_, _, _| unavailable());
    let mut fallback = MockRateLimiter::new();
    fallback.expect_check().never();
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(fallback), FailMode::Closed);
    let aggregate = Some((aggregate_key(), aggregate_quota()));
    let outcome = limits.check_with_aggregate(key(), "default", quota(), aggregate).await;
    assert_eq!(outcome, (Verdict::Unavailable, Some(aggregate_quota())));
}

#[tokio::test]
async fn an_outage_on_the_aggregate_in_open_mode_is_decided_by_the_fallback() {
    let mut distributed = MockRateLimiter::new();
    distributed
        .expect_check()
        .withf(|key, _, _| !key.contains("|*|"))
        .times(1)
        .returning(|_, _, _| Ok(allowed()));
    distributed
        .expect_check()
        .withf(|key, _, _| key.contains("|*|"))
        .times(1)
        .returning(|_, _, _| unavailable());
    let mut fallback = MockRateLimiter::new();
    fallback.expect_check().withf(|key, _, _| key.contains("|*|")).times(1).returning(|_, _, _| Ok(denied()));
    let limits = RateLimits::new(Arc::new(distributed), Arc::new(fallback), FailMode::Open);
    let aggregate = Some((aggregate_key(), aggregate_quota()));
    let outcome = limits.check_with_aggregate(key(), "default", quota(), aggregate).await;
    assert_eq!(outcome, (Verdict::Decided(denied()), Some(aggregate_quota())));
}
