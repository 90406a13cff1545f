//! [`OriginPolicy`]: which browser origins may call the API, from the global allow-list and
//! each tenant's own origins (ADR 0004).
//!
//! A tenant's origins come from the cached tenant ([`TenantCache`]); whether *any* tenant
//! registered an origin (preflights and unauthenticated requests) is cached platform-wide in
//! the `cors_origin` namespace (ADR 0007), so a page's burst of requests costs one directory
//! lookup. Failures are never cached and deny (fail closed).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sba_domain::{TenantId, TenantStatus};
use uuid::Uuid;

use crate::cache::{CachedNamespace, NamespacePolicy};
use crate::ports::{Cache, Clock};
use crate::tenants::TenantCache;

/// How "is this origin registered by some tenant" answers are cached.
pub const REGISTERED_ORIGIN_NAMESPACE: NamespacePolicy = NamespacePolicy {
    name: "cors_origin",
    schema: 1,
    ttl: Duration::from_mins(1),
    max_ttl: Duration::from_mins(10),
};

/// Origins longer than this are denied without a lookup (a real origin is
/// `scheme://host:port`; this keeps junk out of the directory and the cache).
const MAX_ORIGIN_LEN: usize = 300;

/// The scope of platform-wide cache entries (no tenant owns them).
fn platform() -> TenantId {
    TenantId::from_uuid(Uuid::nil())
}

/// Decides CORS for one origin and (when the request is authenticated) one tenant.
#[derive(Clone)]
pub struct OriginPolicy {
    global: Arc<HashSet<String>>,
    tenants: TenantCache,
    registered: CachedNamespace<bool>,
}

impl std::fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginPolicy").field("global", &self.global).finish_non_exhaustive()
    }
}

impl OriginPolicy {
    /// `global` origins are allowed for every tenant; others come from the directory.
    pub fn new(
        global: impl IntoIterator<Item = String>,
        tenants: TenantCache,
        cache: Arc<dyn Cache>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_policy(global, tenants, cache, clock, REGISTERED_ORIGIN_NAMESPACE)
    }

    /// With another TTL policy for registered origins (configuration).
    pub fn with_policy(
        global: impl IntoIterator<Item = String>,
        tenants: TenantCache,
        cache: Arc<dyn Cache>,
        clock: Arc<dyn Clock>,
        registered: NamespacePolicy,
    ) -> Self {
        Self {
            global: Arc::new(global.into_iter().map(|o| o.to_ascii_lowercase()).collect()),
            tenants,
            registered: CachedNamespace::new(cache, clock, registered),
        }
    }

    /// Whether a request from `origin` may be read by the page that sent it. `tenant` is
    /// the verified caller's tenant, or `None` before authentication (preflights, 401s):
    /// then any active tenant's origin is enough, since such a response carries no data.
    pub async fn allows(&self, origin: &str, tenant: Option<TenantId>) -> bool {
        let origin = origin.to_ascii_lowercase();
        if self.global.contains(&origin) {
            return true;
        }
        if origin.len() > MAX_ORIGIN_LEN {
            return false;
        }
        let answer = match tenant {
            Some(tenant) => self.tenants.get(tenant).await.map(|found| {
                found.is_some_and(|t| t.status == TenantStatus::Active && t.allows_origin(&origin))
            }),
            None => self
                .registered
                .get_or_load(platform(), &origin, || self.tenants.directory().origin_is_registered(&origin))
                .await
                .map(|registered| *registered),
        };
        answer.unwrap_or_else(|error| {
            tracing::warn!(error = %error, "tenant directory lookup for CORS failed; origin denied");
            false
        })
    }

    /// Forgets which origins are registered, on every node: call it after a tenant's
    /// origins change (with [`TenantCache::invalidate`] for that tenant).
    pub async fn invalidate_registered(&self) {
        self.registered.invalidate(platform()).await;
    }
}

#[cfg(test)]
mod tests {
    use mockall::predicate::eq;
    use sba_domain::{Tenant, TenantStatus};
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockTenantDirectory, RepositoryError};
    use crate::testing::{MapCache, TestClock};

    const APP: &str = "https://app.tenant-a.test";

    fn tenant_a() -> TenantId {
        TenantId::from_uuid(Uuid::from_u128(0xa))
    }

    fn policy(directory: MockTenantDirectory, clock: &Arc<TestClock>) -> OriginPolicy {
        let cache: Arc<dyn Cache> = Arc::new(MapCache::default());
        let tenants = TenantCache::new(Arc::new(directory), Arc::clone(&cache), clock.clone());
        OriginPolicy::new(["https://console.sba.test".to_owned()], tenants, cache, clock.clone())
    }

    fn clock() -> Arc<TestClock> {
        Arc::new(TestClock::at(1_800_000_000_000))
    }

    fn tenant(status: TenantStatus) -> Tenant {
        Tenant { status, allowed_origins: vec![APP.to_owned()], ..Tenant::active(tenant_a()) }
    }

    #[tokio::test]
    async fn global_origins_are_allowed_for_everyone_without_a_lookup() {
        let policy = policy(MockTenantDirectory::new(), &clock());
        assert!(policy.allows("https://console.sba.test", None).await);
        assert!(policy.allows("HTTPS://CONSOLE.SBA.TEST", Some(tenant_a())).await);
    }

    #[tokio::test]
    async fn a_tenant_origin_is_allowed_for_that_tenant_only() {
        let mut directory = MockTenantDirectory::new();
        directory.expect_find().returning(|id| Ok((id == tenant_a()).then(|| tenant(TenantStatus::Active))));
        let policy = policy(directory, &clock());
        assert!(policy.allows(APP, Some(tenant_a())).await);
        assert!(!policy.allows(APP, Some(TenantId::from_uuid(Uuid::from_u128(0xb)))).await);
        assert!(!policy.allows("https://evil.test", Some(tenant_a())).await);
    }

    #[tokio::test]
    async fn a_suspended_tenant_allows_no_origin() {
        let mut directory = MockTenantDirectory::new();
        directory.expect_find().returning(|_| Ok(Some(tenant(TenantStatus::Suspended))));
        assert!(!policy(directory, &clock()).allows(APP, Some(tenant_a())).await);
    }

    #[tokio::test]
    async fn unauthenticated_requests_need_an_origin_some_tenant_registered() {
        let mut directory = MockTenantDirectory::new();
        directory.expect_origin_is_registered().with(eq(APP)).times(1).returning(|_| Ok(true));
        directory
            .expect_origin_is_registered()
            .with(eq("https://evil.test"))
            .times(1)
            .returning(|_| Ok(false));
        let policy = policy(directory, &clock());
        for _ in 0..3 {
            assert!(policy.allows(APP, None).await, "looked up once, then cached");
            assert!(!policy.allows("https://evil.test", None).await);
        }
        assert!(!policy.allows(&format!("https://{}.test", "a".repeat(400)), None).await, "no lookup");
    }

    #[tokio::test]
    async fn decisions_are_cached_until_the_ttl_passes() {
        let mut directory = MockTenantDirectory::new();
        directory.expect_find().times(2).returning(|_| Ok(Some(tenant(TenantStatus::Active))));
        let clock = clock();
        let policy = policy(directory, &clock);
        for _ in 0..5 {
            assert!(policy.allows(APP, Some(tenant_a())).await);
        }
        clock.advance(61_000);
        assert!(policy.allows(APP, Some(tenant_a())).await);
    }

    #[tokio::test]
    async fn a_directory_failure_denies_and_is_not_cached() {
        let mut directory = MockTenantDirectory::new();
        let mut calls = 0;
        directory.expect_find().times(2).returning(move |_| {
            calls += 1;
            if calls == 1 {
                Err(RepositoryError::Unexpected(anyhow::anyhow!("connection refused")))
            } else {
                Ok(Some(tenant(TenantStatus::Active)))
            }
        });
        let policy = policy(directory, &clock());
        assert!(!policy.allows(APP, Some(tenant_a())).await);
        assert!(policy.allows(APP, Some(tenant_a())).await);
    }
}
