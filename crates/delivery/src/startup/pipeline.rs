//! The event pipeline on Redis (ADR 0017), configured from the settings: the sequencer and
//! the bus the API nodes use, and the queue a worker consumes. Without `REDIS_URL` there is
//! none: the embedded sequencer stores each batch at ingest.

use std::sync::Arc;

use sba_infrastructure::config::Settings;
use sba_infrastructure::redis::events::keys::PERSISTERS;
use sba_infrastructure::redis::{
    FredEventBus, FredEventBusSettings, FredEventQueue, FredEventQueueSettings, FredEventSequencer,
    FredEventSequencerSettings,
};

/// The Redis side of the event pipeline.
#[derive(Debug)]
pub struct RedisPipeline {
    /// Assigns seqs and records each batch in the run's history and its partition queue.
    pub sequencer: Arc<FredEventSequencer>,
    /// The partition queues, read as a consumer of the `persisters` group.
    pub queue: Arc<FredEventQueue>,
    /// Live events between the nodes.
    pub bus: Arc<FredEventBus>,
}

/// The pipeline on the settings' Redis; `None` without `REDIS_URL`. A Redis that is down
/// is not an error: calls fail as unavailable until it connects.
///
/// # Errors
/// When the Redis URL is not usable.
pub async fn redis_pipeline(settings: &Settings) -> anyhow::Result<Option<RedisPipeline>> {
    let Some(redis) = &settings.redis else { return Ok(None) };
    Ok(Some(RedisPipeline {
        sequencer: Arc::new(FredEventSequencer::connect(&redis.url, sequencer_settings(settings)).await?),
        queue: Arc::new(FredEventQueue::connect(&redis.url, queue_settings(settings, PERSISTERS)).await?),
        bus: Arc::new(FredEventBus::connect(&redis.url, bus_settings(settings)).await?),
    }))
}

/// The sequencer alone (what an API node needs besides the bus); `None` without
/// `REDIS_URL`.
///
/// # Errors
/// When the Redis URL is not usable.
pub async fn event_sequencer(settings: &Settings) -> anyhow::Result<Option<Arc<FredEventSequencer>>> {
    let Some(redis) = &settings.redis else { return Ok(None) };
    let sequencer = FredEventSequencer::connect(&redis.url, sequencer_settings(settings)).await?;
    Ok(Some(Arc::new(sequencer)))
}

/// A queue consumer in consumer group `group` (`persisters` for the real work; a group of
/// its own keeps its own leases and dead letters), named by [`consumer_name`]; `None`
/// without `REDIS_URL`.
///
/// # Errors
/// When the Redis URL is not usable.
pub async fn event_queue(settings: &Settings, group: &str) -> anyhow::Result<Option<Arc<FredEventQueue>>> {
    let Some(redis) = &settings.redis else { return Ok(None) };
    let queue = FredEventQueue::connect(&redis.url, queue_settings(settings, group)).await?;
    Ok(Some(Arc::new(queue)))
}

/// The sequencer's keys and bounds from `SBA_EVENTS__*`.
pub(super) fn sequencer_settings(settings: &Settings) -> FredEventSequencerSettings {
    let events = &settings.events;
    FredEventSequencerSettings {
        partitions: events.partitions,
        history_max_len: events.history_max_len,
        history_ttl: events.history_ttl,
        timeout: events.timeout,
        ..FredEventSequencerSettings::default()
    }
}

/// The live bus's settings: its defaults, with the canary timeout and the reorder window
/// from `SBA_EVENTS__*`.
pub(super) fn bus_settings(settings: &Settings) -> FredEventBusSettings {
    FredEventBusSettings {
        canary_timeout: settings.events.canary_timeout,
        reorder_window: settings.events.reorder_window,
        ..FredEventBusSettings::default()
    }
}

/// A consumer's settings from `SBA_EVENTS__*` and `SBA_WORKER__*`.
pub(super) fn queue_settings(settings: &Settings, group: &str) -> FredEventQueueSettings {
    let worker = &settings.worker;
    FredEventQueueSettings {
        partitions: settings.events.partitions,
        max_partitions: worker.max_partitions,
        consumer: consumer_name(),
        group: group.to_owned(),
        lease_ttl: worker.lease_ttl,
        claim_idle: worker.claim_idle,
        timeout: settings.events.timeout,
        ..FredEventQueueSettings::default()
    }
}

/// `<host>-<pid>-<random>`: unique among live consumers (two workers on one host differ by
/// pid, a restarted one by its suffix), and telling an operator which process it is.
pub(super) fn consumer_name() -> String {
    let host = whoami::hostname().unwrap_or_else(|_| "unknown-host".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::time::Duration;

    use sba_infrastructure::config::{EnvSnapshot, LoadOptions, load};

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let dir = std::env::temp_dir().join(format!("sba-pipeline-test-{}", uuid::Uuid::new_v4().simple()));
        let mut env = vec![("SBA_DATA_DIR".to_owned(), dir.display().to_string())];
        env.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        load(
            &EnvSnapshot::from_pairs(env),
            &LoadOptions { config_dir: dir.join("config"), create_dev_secret: false },
        )
        .unwrap()
    }

    #[test]
    fn the_adapters_take_the_event_and_worker_settings() {
        let settings = settings(&[
            ("SBA_EVENTS__PARTITIONS", "32"),
            ("SBA_EVENTS__HISTORY_MAX_LEN", "500"),
            ("SBA_EVENTS__HISTORY_TTL", "2h"),
            ("SBA_EVENTS__TIMEOUT", "300ms"),
            ("SBA_EVENTS__CANARY_TIMEOUT", "400ms"),
            ("SBA_WORKER__MAX_PARTITIONS", "8"),
            ("SBA_WORKER__LEASE_TTL", "4s"),
            ("SBA_WORKER__CLAIM_IDLE", "1m"),
        ]);
        let sequencer = sequencer_settings(&settings);
        assert_eq!(
            (sequencer.partitions, sequencer.history_max_len, sequencer.history_ttl, sequencer.timeout),
            (32, 500, Duration::from_hours(2), Duration::from_millis(300))
        );
        assert_eq!(bus_settings(&settings).canary_timeout, Duration::from_millis(400));
        let queue = queue_settings(&settings, "shadow");
        assert_eq!((queue.partitions, queue.max_partitions, queue.group.as_str()), (32, 8, "shadow"));
        assert_eq!(
            (queue.lease_ttl, queue.claim_idle, queue.timeout),
            (Duration::from_secs(4), Duration::from_mins(1), Duration::from_millis(300))
        );
    }

    #[test]
    fn consumer_names_carry_the_pid_and_differ_between_consumers() {
        let (a, b) = (consumer_name(), consumer_name());
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }

    #[tokio::test]
    async fn without_redis_there_is_no_pipeline() {
        let settings = settings(&[]);
        assert!(redis_pipeline(&settings).await.unwrap().is_none());
        assert!(event_queue(&settings, PERSISTERS).await.unwrap().is_none());
    }
}
