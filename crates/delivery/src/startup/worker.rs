//! `sba worker`: background work that no request triggers.

use std::future::Future;

use anyhow::Context as _;
use sba_application::health::HealthMonitor;
use sba_application::idempotency::Idempotency;
use sba_application::runs::RunService;
use sba_infrastructure::config::{Settings, WorkerSettings};
use sba_infrastructure::internal_store::InternalStore;

use super::wiring::Wiring;

/// `sba worker`: background work that no request triggers. Today that is the run-expiry
/// sweep, the recorded health history and the purge of expired idempotency keys; the event
/// persisters join it when the durable queue exists.
pub struct Worker {
    runs: RunService,
    health: HealthMonitor,
    idempotency: Idempotency,
    store: InternalStore,
    settings: WorkerSettings,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// How many runs one sweep expires at most; the next tick takes the rest.
const SWEEP_BATCH: u64 = 500;

impl Worker {
    /// Connects the store and migrates it, like the server does.
    ///
    /// # Errors
    /// When the store is unreachable or a migration fails.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let wiring = Wiring::connect(settings, 4).await?;
        Ok(Self {
            runs: wiring.run_service(),
            health: wiring.health_monitor(vec![wiring.store().dependency_check()]),
            idempotency: wiring.idempotency(),
            store: wiring.into_store(),
            settings: settings.worker.clone(),
        })
    }

    /// Expires overdue runs once, in batches until none is left; returns how many.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn sweep_once(&self) -> anyhow::Result<usize> {
        let max_age =
            chrono::Duration::from_std(self.settings.max_run_age).context("max run age is out of range")?;
        let mut total = 0;
        loop {
            let expired = self.runs.expire_overdue(max_age, SWEEP_BATCH).await?;
            total += expired;
            if (expired as u64) < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }

    /// One round of background work; failures are logged and retried at the next tick.
    async fn tick(&self) {
        match self.sweep_once().await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired overdue runs"),
            Err(error) => tracing::error!(error = format!("{error:#}"), "run-expiry sweep failed"),
        }
        if let Err(error) = self.record_health().await {
            tracing::error!(error = format!("{error:#}"), "recording health failed");
        }
        match self.idempotency.purge_expired().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired idempotency keys"),
            Err(error) => tracing::error!(error = format!("{error:#}"), "purging idempotency keys failed"),
        }
    }

    /// Checks every dependency and appends the results to the health history.
    ///
    /// # Errors
    /// When the history cannot be written.
    pub async fn record_health(&self) -> anyhow::Result<Vec<sba_application::ports::HealthRecord>> {
        Ok(self.health.check_and_record().await?)
    }

    /// Sweeps every interval until `shutdown` completes; a failed sweep is logged and retried
    /// at the next tick.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(
            sweep_interval_secs = self.settings.sweep_interval.as_secs(),
            max_run_age_secs = self.settings.max_run_age.as_secs(),
            internal_store = self.store.description(),
            "sba worker is running: run-expiry sweep"
        );
        let mut ticks = tokio::time::interval(self.settings.sweep_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticks.tick() => self.tick().await,
            }
        }
        self.store.close().await;
        tracing::info!("sba worker stopped");
    }
}
