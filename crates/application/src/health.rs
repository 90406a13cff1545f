//! [`HealthMonitor`]: checks every dependency at once, for readiness and for the recorded
//! health history.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use sba_domain::TenantId;

use crate::RequestContext;
use crate::authorization::{Action, authorize};
use crate::error::RestrictedReadError;
use crate::pagination::{Page, PageRequest};
use crate::ports::{Clock, DependencyCheck, HealthLog, HealthRecord, IdGenerator, RepositoryError};

/// How long one check may take before it counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs dependency checks and keeps their history.
#[derive(Clone, Debug)]
pub struct HealthMonitor {
    checks: Vec<Arc<dyn DependencyCheck>>,
    log: Arc<dyn HealthLog>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
}

impl HealthMonitor {
    pub fn new(
        checks: Vec<Arc<dyn DependencyCheck>>,
        log: Arc<dyn HealthLog>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        Self { checks, log, clock, ids }
    }

    /// Checks every dependency concurrently, each bounded by [`CHECK_TIMEOUT`].
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
            if let Some(detail) = &detail {
                tracing::warn!(component = check.component(), detail, "dependency check failed");
            }
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

    fn check(name: &'static str, result: fn() -> anyhow::Result<()>) -> Arc<dyn DependencyCheck> {
        let mut check = MockDependencyCheck::new();
        check.expect_component().return_const(name);
        check.expect_check().returning(result);
        Arc::new(check)
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
