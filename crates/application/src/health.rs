//! [`HealthMonitor`]: checks every dependency at once, for readiness and for the recorded
//! health history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;

use sba_domain::TenantId;

use crate::RequestContext;
use crate::authorization::{Action, authorize};
use crate::error::RestrictedReadError;
use crate::pagination::{Page, PageRequest};
use crate::ports::{Clock, DependencyCheck, HealthLog, HealthRecord, IdGenerator, RepositoryError};

/// How long one check may take before it counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a readiness answer is reused: a flood of `/readyz` calls costs one round of
/// checks per this interval.
pub const READINESS_TTL: Duration = Duration::from_secs(1);

/// Runs dependency checks and keeps their history.
#[derive(Clone, Debug)]
pub struct HealthMonitor {
    checks: Vec<Arc<dyn DependencyCheck>>,
    log: Arc<dyn HealthLog>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    /// Whether each component was up at its last check: a state change is logged, a
    /// repeated state is not.
    states: Arc<Mutex<HashMap<&'static str, bool>>>,
    /// The last readiness answer and when it was made. The lock is held while checking,
    /// so concurrent callers share one round of checks.
    readiness: Arc<tokio::sync::Mutex<Option<LastReadiness>>>,
}

/// A readiness answer and when it was made.
type LastReadiness = (DateTime<Utc>, Arc<[HealthRecord]>);

impl HealthMonitor {
    pub fn new(
        checks: Vec<Arc<dyn DependencyCheck>>,
        log: Arc<dyn HealthLog>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        Self { checks, log, clock, ids, states: Arc::default(), readiness: Arc::default() }
    }

    /// The readiness of every dependency, checked at most once per [`READINESS_TTL`]: a
    /// caller within that interval gets the last answer, and callers arriving while a round
    /// of checks runs wait for it instead of starting their own.
    pub async fn readiness(&self) -> Arc<[HealthRecord]> {
        let mut last = self.readiness.lock().await;
        if let Some((at, records)) = last.as_ref()
            && (self.clock.now() - *at).to_std().is_ok_and(|age| age < READINESS_TTL)
        {
            return Arc::clone(records);
        }
        let records: Arc<[HealthRecord]> = self.check_all().await.into();
        *last = Some((self.clock.now(), Arc::clone(&records)));
        records
    }

    /// Checks every dependency concurrently, each bounded by [`CHECK_TIMEOUT`]. A component
    /// that goes down is logged (with the cause) once, and once again when it is back.
    pub async fn check_all(&self) -> Vec<HealthRecord> {
        join_all(self.checks.iter().map(|check| async move {
            let started = Instant::now();
            let outcome = tokio::time::timeout(CHECK_TIMEOUT, check.check()).await;
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let detail = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(format!("{error:#}")),
                Err(_) => Some(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
            };
            self.log_change(check.component(), detail.as_deref());
            HealthRecord {
                id: self.ids.new_id(),
                component: check.component().to_owned(),
                up: detail.is_none(),
                latency_ms,
                detail,
                checked_at: self.clock.now(),
            }
        }))
        .await
    }

    /// Logs `component`'s state when it differs from its last check's.
    fn log_change(&self, component: &'static str, failure: Option<&str>) {
        let up = failure.is_none();
        let was_up = self.states.lock().unwrap_or_else(PoisonError::into_inner).insert(component, up);
        match (was_up, failure) {
            (Some(false), None) => tracing::info!(component, "dependency is back up"),
            (None | Some(true), Some(detail)) => tracing::warn!(component, detail, "dependency check failed"),
            _ => {}
        }
    }

    /// Checks every dependency and appends the results to the history.
    ///
    /// # Errors
    /// `Unexpected` when the history cannot be written (the checks still ran).
    pub async fn check_and_record(&self) -> Result<Vec<HealthRecord>, RepositoryError> {
        let records = self.check_all().await;
        self.log.record(&records).await?;
        Ok(records)
    }

    /// The recorded history, newest first.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    pub async fn history(&self, page: PageRequest) -> Result<Page<HealthRecord>, RepositoryError> {
        self.log.list(page).await
    }
}

/// `GET /v1/system/health`: the recorded history, for platform administrators only.
#[derive(Clone, Debug)]
pub struct SystemHealthQueries {
    monitor: HealthMonitor,
    platform_tenant: Option<TenantId>,
}

impl SystemHealthQueries {
    pub fn new(monitor: HealthMonitor, platform_tenant: Option<TenantId>) -> Self {
        Self { monitor, platform_tenant }
    }

    /// One page of the history, newest first.
    ///
    /// # Errors
    /// `Forbidden` unless the caller is a platform administrator; `Unexpected` on storage
    /// failure.
    pub async fn history(
        &self,
        ctx: &RequestContext,
        page: PageRequest,
    ) -> Result<Page<HealthRecord>, RestrictedReadError> {
        authorize(&ctx.principal, Action::ReadSystemHealth { platform_tenant: self.platform_tenant })?;
        self.monitor.history(page).await.map_err(|e| {
            RestrictedReadError::Unexpected(anyhow::Error::new(e).context("reading health history"))
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockClock, MockDependencyCheck, MockHealthLog, MockIdGenerator};
    use crate::testing::{TestClock, logs_of};

    fn check(name: &'static str, result: fn() -> anyhow::Result<()>) -> Arc<dyn DependencyCheck> {
        let mut check = MockDependencyCheck::new();
        check.expect_component().return_const(name);
        check.expect_check().returning(result);
        Arc::new(check)
    }

    /// A dependency that answers after a moment, `up` or not as told, counting its checks.
    #[derive(Debug, Default)]
    struct CountingCheck {
        calls: std::sync::atomic::AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl DependencyCheck for CountingCheck {
        fn component(&self) -> &'static str {
            "redis"
        }

        async fn check(&self) -> anyhow::Result<()> {
            use std::sync::atomic::Ordering;
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.down.load(Ordering::SeqCst) { Err(anyhow::anyhow!("connection refused")) } else { Ok(()) }
        }
    }

    fn monitor_of(check: &Arc<CountingCheck>, clock: &Arc<crate::testing::TestClock>) -> HealthMonitor {
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(Uuid::now_v7);
        let check: Arc<dyn DependencyCheck> = check.clone();
        HealthMonitor::new(vec![check], Arc::new(MockHealthLog::new()), clock.clone(), Arc::new(ids))
    }

    #[tokio::test]
    async fn readiness_is_checked_once_per_interval_and_concurrent_callers_share_the_check() {
        use std::sync::atomic::Ordering;
        let check = Arc::new(CountingCheck::default());
        let clock = Arc::new(crate::testing::TestClock::at(1_800_000_000_000));
        let monitor = monitor_of(&check, &clock);
        let answers = join_all((0..20).map(|_| monitor.readiness())).await;
        assert!(answers.iter().all(|records| records.len() == 1 && records[0].up));
        assert_eq!(check.calls.load(Ordering::SeqCst), 1, "twenty concurrent probes, one check");
        clock.advance(999);
        monitor.readiness().await;
        assert_eq!(check.calls.load(Ordering::SeqCst), 1, "within the interval: the last answer");
        clock.advance(1);
        check.down.store(true, Ordering::SeqCst);
        let records = monitor.readiness().await;
        assert_eq!(check.calls.load(Ordering::SeqCst), 2);
        assert!(!records[0].up, "a new answer once the interval has passed (exactly 1 s here)");
    }

    /// A monitor of `checks` writing its history to `log`.
    fn monitor_with(checks: Vec<Arc<dyn DependencyCheck>>, log: MockHealthLog) -> HealthMonitor {
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(Uuid::now_v7);
        HealthMonitor::new(checks, Arc::new(log), Arc::new(TestClock::at(1_800_000_000_000)), Arc::new(ids))
    }

    fn outage() -> RepositoryError {
        RepositoryError::Unexpected(anyhow::anyhow!("connection lost"))
    }

    /// A dependency that never answers (a mock's answer is ready at once, so this one is
    /// written by hand).
    #[derive(Debug)]
    struct SilentCheck;

    #[async_trait::async_trait]
    impl DependencyCheck for SilentCheck {
        fn component(&self) -> &'static str {
            "database"
        }

        async fn check(&self) -> anyhow::Result<()> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dependency_that_does_not_answer_in_time_is_down_with_the_timeout_as_its_cause() {
        let monitor = monitor_with(vec![Arc::new(SilentCheck)], MockHealthLog::new());
        let mut records = Vec::new();
        let logs = logs_of(async { records = monitor.check_all().await }).await;
        assert_eq!(records.len(), 1);
        assert!(!records[0].up);
        assert_eq!(records[0].detail.as_deref(), Some("no answer within 2000 ms"));
        assert!(
            logs.contains("dependency check failed") && logs.contains("no answer within 2000 ms"),
            "{logs}"
        );
    }

    #[tokio::test]
    async fn a_history_that_cannot_be_written_is_unexpected_after_the_checks_ran() {
        let mut database = MockDependencyCheck::new();
        database.expect_component().return_const("database");
        database.expect_check().times(1).returning(|| Ok(()));
        let mut log = MockHealthLog::new();
        log.expect_record().withf(|records| records.len() == 1).times(1).returning(|_| Err(outage()));
        let recorded = monitor_with(vec![Arc::new(database)], log).check_and_record().await;
        assert!(matches!(recorded, Err(RepositoryError::Unexpected(_))), "{recorded:?}");
    }

    const PLATFORM: Uuid = Uuid::from_u128(0xf);

    fn ctx(tenant: Uuid, role: sba_domain::Role) -> RequestContext {
        RequestContext {
            principal: sba_domain::Principal {
                tenant_id: TenantId::from_uuid(tenant),
                user_id: sba_domain::UserId::parse("ops").unwrap(),
                role,
            },
            ip: None,
            request_id: "r".into(),
            client_request_id: None,
            token: None,
        }
    }

    fn queries(log: MockHealthLog) -> SystemHealthQueries {
        SystemHealthQueries::new(monitor_with(Vec::new(), log), Some(TenantId::from_uuid(PLATFORM)))
    }

    #[tokio::test]
    async fn a_history_that_cannot_be_read_is_unexpected_for_a_platform_admin() {
        let mut log = MockHealthLog::new();
        log.expect_list().times(1).returning(|_| Err(outage()));
        let read = queries(log).history(&ctx(PLATFORM, sba_domain::Role::Admin), PageRequest::first(5)).await;
        assert!(matches!(read, Err(RestrictedReadError::Unexpected(_))), "{read:?}");
    }

    #[tokio::test]
    async fn the_history_is_forbidden_to_other_tenants_admins_without_reading_the_log() {
        let mut log = MockHealthLog::new();
        log.expect_list().never();
        let other = Uuid::from_u128(0xb);
        let read = queries(log).history(&ctx(other, sba_domain::Role::Admin), PageRequest::first(5)).await;
        assert!(matches!(read, Err(RestrictedReadError::Forbidden(_))), "{read:?}");
    }

    /// The log lines written while `run` runs (on this thread).
    #[tokio::test]
    async fn a_failing_dependency_is_logged_once_when_it_goes_down_and_once_when_it_is_back() {
        use std::sync::atomic::Ordering;
        let check = Arc::new(CountingCheck::default());
        let clock = Arc::new(crate::testing::TestClock::at(1_800_000_000_000));
        let monitor = monitor_of(&check, &clock);
        let logs = logs_of(async {
            for down in [false, true, true, true, false, false, true] {
                check.down.store(down, Ordering::SeqCst);
                monitor.check_all().await;
            }
        })
        .await;
        assert_eq!(logs.matches("dependency check failed").count(), 2, "{logs}");
        assert_eq!(logs.matches("dependency is back up").count(), 1, "{logs}");
        assert!(logs.contains("connection refused"), "the cause is logged: {logs}");
    }

    #[tokio::test]
    async fn records_every_component_with_the_cause_of_a_failure() {
        let mut log = MockHealthLog::new();
        log.expect_record()
            .withf(|records| {
                records.len() == 2
                    && records[0].component == "database"
                    && records[0].up
                    && records[0].detail.is_none()
                    && records[1].component == "redis"
                    && !records[1].up
                    && records[1].detail.as_deref() == Some("connection refused")
            })
            .times(1)
            .returning(|_| Ok(()));
        let mut clock = MockClock::new();
        clock.expect_now().returning(|| Utc.timestamp_opt(1_800_000_000, 0).unwrap());
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(Uuid::now_v7);
        let monitor = HealthMonitor::new(
            vec![check("database", || Ok(())), check("redis", || Err(anyhow::anyhow!("connection refused")))],
            Arc::new(log),
            Arc::new(clock),
            Arc::new(ids),
        );
        let records = monitor.check_and_record().await.unwrap();
        assert_eq!(records.iter().filter(|r| r.up).count(), 1);
    }
}
