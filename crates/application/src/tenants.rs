//! [`TenantCache`]: tenant lookups through the `TenantDirectory`, cached in the `tenant`
//! namespace of the [`Cache`] (ADR 0007), because CORS and rate limits need the caller's
//! tenant on every request. An update of a tenant calls [`TenantCache::invalidate`], which
//! every node sees at once.

use std::sync::Arc;
use std::time::Duration;

use sba_domain::ratelimit::Quota;
use sba_domain::{Tenant, TenantId, TenantStatus};
use serde::{Deserialize, Serialize};

use crate::cache::{CachedNamespace, NamespacePolicy};
use crate::ports::{Cache, Clock, RepositoryError, TenantDirectory};

/// How tenants are cached: 60 s, up to 10 min for tenants whose settings do not change.
pub const TENANT_NAMESPACE: NamespacePolicy = NamespacePolicy {
    name: "tenant",
    schema: 1,
    ttl: Duration::from_mins(1),
    max_ttl: Duration::from_mins(10),
};

/// The one key of a tenant's entry in its namespace.
const KEY: &str = "settings";

/// A tenant as cached: the domain type stays free of serialization concerns, and a change
/// here bumps [`TENANT_NAMESPACE`]'s schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedTenant {
    status: String,
    allowed_origins: Vec<String>,
    plan: Option<String>,
    /// `(limit, window seconds)`.
    rate_limit: Option<(u32, u32)>,
}

impl From<&Tenant> for CachedTenant {
    fn from(tenant: &Tenant) -> Self {
        Self {
            status: tenant.status.as_str().to_owned(),
            allowed_origins: tenant.allowed_origins.clone(),
            plan: tenant.plan.clone(),
            rate_limit: tenant.rate_limit.map(|q| (q.limit(), q.window_secs())),
        }
    }
}

impl CachedTenant {
    /// The domain tenant, or `None` when the entry holds something this version does not
    /// know (then it is reloaded).
    fn to_tenant(&self, id: TenantId) -> Option<Tenant> {
        let status = match self.status.as_str() {
            "active" => TenantStatus::Active,
            "suspended" => TenantStatus::Suspended,
            _ => return None,
        };
        let rate_limit = match self.rate_limit {
            None => None,
            Some((limit, window)) => Some(Quota::new(limit, window).ok()?),
        };
        Some(Tenant {
            id,
            status,
            allowed_origins: self.allowed_origins.clone(),
            plan: self.plan.clone(),
            rate_limit,
        })
    }
}

/// Cached tenant lookups (an unknown tenant is cached too, as `None`).
#[derive(Clone)]
pub struct TenantCache {
    directory: Arc<dyn TenantDirectory>,
    cached: CachedNamespace<Option<CachedTenant>>,
}

impl std::fmt::Debug for TenantCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCache").field("policy", self.cached.policy()).finish_non_exhaustive()
    }
}

impl TenantCache {
    pub fn new(directory: Arc<dyn TenantDirectory>, cache: Arc<dyn Cache>, clock: Arc<dyn Clock>) -> Self {
        Self::with_policy(directory, cache, clock, TENANT_NAMESPACE)
    }

    /// With another TTL policy (configuration, tests).
    pub fn with_policy(
        directory: Arc<dyn TenantDirectory>,
        cache: Arc<dyn Cache>,
        clock: Arc<dyn Clock>,
        policy: NamespacePolicy,
    ) -> Self {
        Self { directory, cached: CachedNamespace::new(cache, clock, policy) }
    }

    /// The tenant `id`, from the cache when fresh; failures are not cached.
    ///
    /// # Errors
    /// `Unexpected` when the directory cannot be read (and no previous value is kept).
    pub async fn get(&self, id: TenantId) -> Result<Option<Tenant>, RepositoryError> {
        let cached = self.cached.get_or_load(id, KEY, || self.load(id)).await?;
        let Some(entry) = cached.as_ref() else { return Ok(None) };
        if let Some(tenant) = entry.to_tenant(id) {
            return Ok(Some(tenant));
        }
        tracing::warn!(tenant = %id, "a cached tenant could not be read; reloading it");
        self.cached.delete(id, KEY).await;
        self.directory.find(id).await
    }

    /// Forgets what is cached about `id` on every node: call it after changing the tenant.
    pub async fn invalidate(&self, id: TenantId) {
        self.cached.invalidate(id).await;
    }

    async fn load(&self, id: TenantId) -> Result<Option<CachedTenant>, RepositoryError> {
        Ok(self.directory.find(id).await?.as_ref().map(CachedTenant::from))
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::ports::MockTenantDirectory;
    use crate::testing::{MapCache, TestClock};

    fn cache_with(directory: MockTenantDirectory) -> (TenantCache, Arc<TestClock>) {
        let clock = Arc::new(TestClock::at(1_800_000_000_000));
        (TenantCache::new(Arc::new(directory), Arc::new(MapCache::default()), clock.clone()), clock)
    }

    #[tokio::test]
    async fn lookups_are_cached_for_the_ttl_and_failures_are_not() {
        let id = TenantId::from_uuid(Uuid::from_u128(7));
        let mut directory = MockTenantDirectory::new();
        let mut calls = 0;
        directory.expect_find().times(3).returning(move |id| {
            calls += 1;
            if calls == 1 {
                Err(RepositoryError::Unexpected(anyhow::anyhow!("timeout")))
            } else {
                Ok(Some(Tenant { plan: Some("pro".into()), ..Tenant::active(id) }))
            }
        });
        let (cache, clock) = cache_with(directory);
        let failed = cache.get(id).await;
        assert!(
            matches!(failed, Err(RepositoryError::Unexpected(_))),
            "t=0: the directory fails: {failed:?}"
        );
        assert_eq!(cache.get(id).await.unwrap().unwrap().plan.as_deref(), Some("pro"), "t=0: fetched");
        clock.advance(10_000);
        assert!(cache.get(id).await.unwrap().is_some(), "t=10: cached");
        clock.advance(60_000);
        assert!(cache.get(id).await.unwrap().is_some(), "t=70: expired, fetched again");
        clock.advance(5_000);
        assert!(cache.get(id).await.unwrap().is_some(), "t=75: cached");
    }

    #[tokio::test]
    async fn an_invalidated_tenant_is_read_again_at_once() {
        let id = TenantId::from_uuid(Uuid::from_u128(8));
        let mut directory = MockTenantDirectory::new();
        let mut calls = 0;
        directory.expect_find().times(2).returning(move |id| {
            calls += 1;
            let status = if calls == 1 { TenantStatus::Active } else { TenantStatus::Suspended };
            Ok(Some(Tenant { status, ..Tenant::active(id) }))
        });
        let (cache, _) = cache_with(directory);
        assert_eq!(cache.get(id).await.unwrap().unwrap().status, TenantStatus::Active);
        cache.invalidate(id).await;
        assert_eq!(cache.get(id).await.unwrap().unwrap().status, TenantStatus::Suspended);
    }

    #[tokio::test]
    async fn unknown_tenants_are_cached_as_absent() {
        let id = TenantId::from_uuid(Uuid::from_u128(9));
        let mut directory = MockTenantDirectory::new();
        directory.expect_find().times(1).returning(|_| Ok(None));
        let (cache, _) = cache_with(directory);
        assert!(cache.get(id).await.unwrap().is_none());
        assert!(cache.get(id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_cached_tenant_this_version_cannot_read_is_dropped_and_the_directory_decides() {
        type Answer = fn(TenantId) -> Result<Option<Tenant>, RepositoryError>;
        let answers: [(Answer, &str); 3] = [
            (|_| Err(RepositoryError::Unexpected(anyhow::anyhow!("timeout"))), "Unexpected"),
            (|_| Ok(None), "unknown"),
            (|id| Ok(Some(Tenant::active(id))), "active"),
        ];
        for (answer, expected) in answers {
            let id = TenantId::from_uuid(Uuid::from_u128(11));
            let store = Arc::new(MapCache::default());
            let clock = Arc::new(TestClock::at(1_800_000_000_000));
            let archived =
                CachedTenant { status: "archived".into(), ..CachedTenant::from(&Tenant::active(id)) };
            CachedNamespace::new(store.clone(), clock.clone(), TENANT_NAMESPACE)
                .set(id, KEY, &Some(archived))
                .await;
            assert_eq!(store.0.lock().unwrap().len(), 1, "planted");
            let mut directory = MockTenantDirectory::new();
            directory.expect_find().with(mockall::predicate::eq(id)).times(1).returning(answer);
            let cache = TenantCache::new(Arc::new(directory), store.clone(), clock);
            let got = match cache.get(id).await {
                Err(RepositoryError::Unexpected(_)) => "Unexpected",
                Ok(None) => "unknown",
                Ok(Some(tenant)) if tenant.status == TenantStatus::Active => "active",
                other => panic!("{other:?}"),
            };
            assert_eq!(got, expected);
            assert!(store.0.lock().unwrap().is_empty(), "{expected}: the unreadable entry is dropped");
        }
    }

    #[test]
    fn debug_output_shows_the_cache_policy() {
        let (cache, _) = cache_with(MockTenantDirectory::new());
        let debug = format!("{cache:?}");
        assert!(debug.starts_with("TenantCache") && debug.contains(r#"name: "tenant""#), "{debug}");
    }

    #[test]
    fn cached_tenants_read_back_as_the_same_tenant() {
        let id = TenantId::from_uuid(Uuid::from_u128(10));
        let tenant = Tenant {
            status: TenantStatus::Suspended,
            allowed_origins: vec!["https://app.example.com".into()],
            plan: Some("pro".into()),
            rate_limit: Some(Quota::new(100, 60).unwrap()),
            ..Tenant::active(id)
        };
        assert_eq!(CachedTenant::from(&tenant).to_tenant(id), Some(tenant));
        let unknown = CachedTenant { status: "archived".into(), ..CachedTenant::from(&Tenant::active(id)) };
        assert_eq!(unknown.to_tenant(id), None);
    }
}
