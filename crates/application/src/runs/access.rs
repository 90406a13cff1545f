//! [`RunAccess`]: whether a run is visible to a tenant, the check behind every run detail
//! route (and the WebSocket channel `run:<id>`), cached in the `run_access` namespace
//! (ADR 0007).
//!
//! Only "visible" is cached: a run never changes tenant and is never deleted, so that
//! answer cannot go stale, while "not found" could become true a moment later (the run may
//! be being created on another node) and is always asked again.

use std::sync::Arc;
use std::time::Duration;

use sba_domain::{RunId, TenantId};

use crate::cache::{CachedNamespace, NamespacePolicy};
use crate::ports::{Cache, Clock, RepositoryError, RunRepository};

/// Run visibility: immutable once true, so cached long.
pub const RUN_ACCESS_NAMESPACE: NamespacePolicy = NamespacePolicy {
    name: "run_access",
    schema: 1,
    ttl: Duration::from_mins(10),
    max_ttl: Duration::from_hours(1),
};

/// Cached run visibility checks.
#[derive(Clone)]
pub struct RunAccess {
    runs: Arc<dyn RunRepository>,
    cached: CachedNamespace<bool>,
}

impl std::fmt::Debug for RunAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunAccess").field("policy", self.cached.policy()).finish_non_exhaustive()
    }
}

impl RunAccess {
    pub fn new(runs: Arc<dyn RunRepository>, cache: Arc<dyn Cache>, clock: Arc<dyn Clock>) -> Self {
        Self::with_policy(runs, cache, clock, RUN_ACCESS_NAMESPACE)
    }

    /// With another TTL policy (configuration).
    pub fn with_policy(
        runs: Arc<dyn RunRepository>,
        cache: Arc<dyn Cache>,
        clock: Arc<dyn Clock>,
        policy: NamespacePolicy,
    ) -> Self {
        Self { runs, cached: CachedNamespace::new(cache, clock, policy) }
    }

    /// Whether run `id` exists in `tenant` (another tenant's run is not visible).
    ///
    /// # Errors
    /// `Unexpected` when the store cannot be read.
    pub async fn visible(&self, tenant: TenantId, id: RunId) -> Result<bool, RepositoryError> {
        let key = id.to_string();
        if self.cached.get(tenant, &key).await.is_some() {
            return Ok(true);
        }
        let visible = self.runs.get(tenant, id).await?.is_some();
        if visible {
            self.cached.set(tenant, &key, &true).await;
        }
        Ok(visible)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::ports::MockRunRepository;
    use crate::testing::{MapCache, TestClock};

    fn run_of(tenant: TenantId, id: RunId) -> sba_domain::AgentRun {
        let new = sba_domain::NewRun {
            tenant_id: tenant,
            user_id: sba_domain::UserId::parse("alice").unwrap(),
            agent: sba_domain::AgentName::parse("bot").unwrap(),
            input: serde_json::json!({}),
            session_id: None,
            metadata: sba_domain::Metadata::default(),
        };
        sba_domain::AgentRun::new(id, new, chrono::DateTime::UNIX_EPOCH)
    }

    #[tokio::test]
    async fn a_visible_run_is_looked_up_once_and_a_missing_one_every_time() {
        let (a, b) = (TenantId::from_uuid(Uuid::from_u128(1)), TenantId::from_uuid(Uuid::from_u128(2)));
        let id = RunId::from_uuid(Uuid::from_u128(9));
        let mut runs = MockRunRepository::new();
        runs.expect_get().withf(move |t, _| *t == a).times(1).returning(|t, id| Ok(Some(run_of(t, id))));
        runs.expect_get().withf(move |t, _| *t == b).times(3).returning(|_, _| Ok(None));
        let access =
            RunAccess::new(Arc::new(runs), Arc::new(MapCache::default()), Arc::new(TestClock::at(0)));
        for _ in 0..3 {
            assert!(access.visible(a, id).await.unwrap());
            assert!(!access.visible(b, id).await.unwrap(), "another tenant's run is not visible");
        }
    }

    #[tokio::test]
    async fn a_store_outage_is_an_error_not_an_invisible_run_and_is_not_cached() {
        let tenant = TenantId::from_uuid(Uuid::from_u128(1));
        let id = RunId::from_uuid(Uuid::from_u128(9));
        let mut runs = MockRunRepository::new();
        let mut calls = mockall::Sequence::new();
        runs.expect_get()
            .times(1)
            .in_sequence(&mut calls)
            .returning(|_, _| Err(RepositoryError::Unexpected(anyhow::anyhow!("connection reset"))));
        runs.expect_get().times(1).in_sequence(&mut calls).returning(|t, id| Ok(Some(run_of(t, id))));
        let cache = Arc::new(MapCache::default());
        let access =
            RunAccess::new(Arc::new(runs), Arc::clone(&cache) as Arc<dyn Cache>, Arc::new(TestClock::at(0)));
        let failed = access.visible(tenant, id).await;
        assert!(matches!(failed, Err(RepositoryError::Unexpected(_))), "{failed:?}");
        assert!(cache.0.lock().unwrap().is_empty(), "a failed lookup caches nothing");
        assert!(access.visible(tenant, id).await.unwrap(), "the next check asks the store again");
    }

    #[test]
    fn debug_output_shows_the_cache_policy() {
        let access = RunAccess::new(
            Arc::new(MockRunRepository::new()),
            Arc::new(MapCache::default()),
            Arc::new(TestClock::at(0)),
        );
        let debug = format!("{access:?}");
        assert!(debug.starts_with("RunAccess") && debug.contains(r#"name: "run_access""#), "{debug}");
    }
}
