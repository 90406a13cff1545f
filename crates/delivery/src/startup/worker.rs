//! `sba worker`: background work that no request triggers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sba_application::events::EventPersister;
use sba_application::health::HealthMonitor;
use sba_application::idempotency::Idempotency;
use sba_application::ports::EventQueue as _;
use sba_application::runs::RunService;
use sba_infrastructure::config::{Settings, WorkerSettings};
use sba_infrastructure::internal_store::InternalStore;
use sba_infrastructure::redis::FredEventQueue;
use sba_infrastructure::redis::events::keys::PERSISTERS;
use tokio::sync::watch;

use super::pipeline;
use super::wiring::Wiring;

/// `sba worker`: background work that no request triggers: the run-expiry sweep, the
/// recorded health history and the purge of expired idempotency keys at every tick, and,
/// with Redis, the event persister, which moves the partition queues into the run ledger
/// (ADR 0017).
pub struct Worker {
    runs: RunService,
    health: HealthMonitor,
    idempotency: Idempotency,
    store: InternalStore,
    settings: WorkerSettings,
    /// `None` without Redis: the embedded sequencer stores events at ingest.
    events: Option<EventWork>,
}

/// The persister and what it reads.
struct EventWork {
    persister: EventPersister,
    queue: Arc<FredEventQueue>,
    partitions: u16,
    consumer: String,
    group: String,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// How many runs one sweep expires at most; the next tick takes the rest.
const SWEEP_BATCH: u64 = 500;

/// The first wait after a failed persist pass; it doubles with each failure in a row.
const QUEUE_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between persist passes while the queue keeps failing.
const QUEUE_RETRY_MAX: Duration = Duration::from_secs(5);

impl Worker {
    /// Connects the store and migrates it, like the server does, and with `REDIS_URL` the
    /// event queue, as a consumer of the `persisters` group.
    ///
    /// # Errors
    /// When the store is unreachable, a migration fails or the Redis URL is not usable.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        Self::build_in_group(settings, PERSISTERS).await
    }

    /// Like [`Self::build`], reading the event queues as consumer group `group`. A group
    /// other than `persisters` (a test's, a shadow consumer's) keeps leases and dead letters
    /// of its own; one that does not exist yet is created at the start of the queues, so it
    /// reads their whole backlog.
    ///
    /// # Errors
    /// As [`Self::build`].
    pub async fn build_in_group(settings: &Settings, group: &str) -> anyhow::Result<Self> {
        let wiring = Wiring::connect(settings, 4).await?;
        let events = match &settings.redis {
            None => None,
            Some(redis) => {
                let queue_settings = pipeline::queue_settings(settings, group);
                let consumer = queue_settings.consumer.clone();
                let queue = Arc::new(FredEventQueue::connect(&redis.url, queue_settings).await?);
                Some(EventWork {
                    persister: EventPersister::new(
                        queue.clone(),
                        wiring.store().run_ledger(),
                        settings.worker.max_attempts,
                    )
                    .with_span_links(sba_infrastructure::trace_context::link),
                    queue,
                    partitions: settings.events.partitions,
                    consumer,
                    group: group.to_owned(),
                })
            }
        };
        Ok(Self {
            runs: wiring.run_service(),
            health: wiring.health_monitor(vec![wiring.store().dependency_check()]),
            idempotency: wiring.idempotency(),
            store: wiring.into_store(),
            settings: settings.worker.clone(),
            events,
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

    /// Ticks every sweep interval and, with Redis, persists the event queues, until
    /// `shutdown` completes; then lets the current tick and pass finish, gives up the
    /// partition leases (so another worker takes them at once) and closes the store.
    /// Failures are logged and retried.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        self.log_start();
        let (stop, stopped) = watch::channel(false);
        let signal = async move {
            shutdown.await;
            // The loops see it at their next wait; none may be waiting any more.
            let _ = stop.send(true);
        };
        tokio::join!(signal, self.tick_until(stopped.clone()), self.persist_until(stopped));
        if let Some(events) = &self.events
            && let Err(error) = events.queue.release().await
        {
            tracing::warn!(
                error = format!("{error:#}"),
                "releasing the event partitions failed; other workers take them when the leases lapse"
            );
        }
        self.store.close().await;
        tracing::info!("sba worker stopped");
    }

    fn log_start(&self) {
        let sweep_interval_secs = self.settings.sweep_interval.as_secs();
        let max_run_age_secs = self.settings.max_run_age.as_secs();
        let internal_store = self.store.description();
        if let Some(events) = &self.events {
            tracing::info!(
                sweep_interval_secs,
                max_run_age_secs,
                internal_store,
                partitions = events.partitions,
                max_partitions = self.settings.max_partitions,
                consumer = events.consumer,
                group = events.group,
                batch = self.settings.batch,
                "sba worker is running: run-expiry sweep and event persister"
            );
        } else {
            tracing::info!(
                sweep_interval_secs,
                max_run_age_secs,
                internal_store,
                "sba worker is running: run-expiry sweep (no REDIS_URL: events are stored at ingest, \
                 there is no queue to persist)"
            );
        }
    }

    async fn tick_until(&self, mut stopped: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.settings.sweep_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop_requested(&mut stopped) => return,
                _ = ticks.tick() => self.tick().await,
            }
        }
    }

    /// Persist passes back to back while they find entries; after an empty pass it sleeps
    /// the poll interval, after a queue failure a growing pause (the queue is down or slow).
    async fn persist_until(&self, mut stopped: watch::Receiver<bool>) {
        let Some(events) = &self.events else { return };
        let mut retry = QUEUE_RETRY_FIRST;
        while !*stopped.borrow() {
            let pause = match events.persister.persist_once(self.settings.batch).await {
                Ok(report) => {
                    retry = QUEUE_RETRY_FIRST;
                    if report.entries_read == 0 {
                        Some(self.settings.poll_interval)
                    } else {
                        tracing::debug!(?report, "persisted queued events");
                        None
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        retry_in_ms = retry.as_millis(),
                        "persisting queued events failed"
                    );
                    let pause = retry;
                    retry = (retry * 2).min(QUEUE_RETRY_MAX);
                    Some(pause)
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    () = stop_requested(&mut stopped) => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Completes once a stop is requested (or can no longer be, its sender gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
