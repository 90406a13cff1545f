//! [`OriginPolicy`]: which browser origins may call the API, from the global allow-list and
//! each tenant's own origins (ADR 0004).
//!
//! Decisions are cached for a short time so that a page's burst of requests costs one
//! directory lookup; failures are never cached and deny (fail closed).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use sba_domain::TenantId;

use crate::ports::Clock;
use crate::tenants::TenantCache;

/// How long a directory answer is reused.
pub const DEFAULT_DECISION_TTL: Duration = Duration::seconds(60);
/// At most this many decisions are kept; a full cache starts over (a flood of random
/// origins cannot grow memory without bound).
const MAX_CACHED: usize = 10_000;

/// Decides CORS for one origin and (when the request is authenticated) one tenant.
#[derive(Clone)]
pub struct OriginPolicy {
    global: Arc<HashSet<String>>,
    tenants: TenantCache,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    cache: Arc<Mutex<DecisionCache>>,
}

/// Each decision with the instant it expires.
type DecisionCache = HashMap<Key, (bool, DateTime<Utc>)>;

impl std::fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginPolicy").field("global", &self.global).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// Listed by any active tenant (preflights and unauthenticated requests).
    Registered(String),
    /// Listed by this tenant.
    Tenant(TenantId, String),
}

impl OriginPolicy {
    /// `global` origins are allowed for every tenant; others come from the directory.
    pub fn new(
        global: impl IntoIterator<Item = String>,
        tenants: TenantCache,
        clock: Arc<dyn Clock>,
        ttl: Duration,
    ) -> Self {
        Self {
            global: Arc::new(global.into_iter().map(|o| o.to_ascii_lowercase()).collect()),
            tenants,
            clock,
            ttl,
            cache: Arc::default(),
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
        let key = match tenant {
            Some(tenant) => Key::Tenant(tenant, origin),
            None => Key::Registered(origin),
        };
        if let Some(allowed) = self.cached(&key) {
            return allowed;
        }
        let answer = match &key {
            Key::Registered(origin) => self.tenants.directory().origin_is_registered(origin).await,
            Key::Tenant(tenant, origin) => self.tenants.get(*tenant).await.map(|found| {
                found.is_some_and(|t| t.status == sba_domain::TenantStatus::Active && t.allows_origin(origin))
            }),
        };
        match answer {
            Ok(allowed) => {
                self.remember(key, allowed);
                allowed
            }
            Err(error) => {
                tracing::warn!(error = %error, "tenant directory lookup for CORS failed; origin denied");
                false
            }
        }
    }

    fn cached(&self, key: &Key) -> Option<bool> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.get(key).filter(|(_, expires)| *expires > self.clock.now()).map(|(allowed, _)| *allowed)
    }

    fn remember(&self, key: Key, allowed: bool) {
        let expires = self.clock.now() + self.ttl;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (allowed, expires));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use chrono::TimeZone;
    use mockall::predicate::eq;
    use sba_domain::{Tenant, TenantStatus};
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockTenantDirectory, RepositoryError};

    const APP: &str = "https://app.tenant-a.test";

    fn tenant_a() -> TenantId {
        TenantId::from_uuid(Uuid::from_u128(0xa))
    }

    /// A clock that tests move forward by hand.
    struct ManualClock(AtomicI64);

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            Utc.timestamp_opt(self.0.load(Ordering::SeqCst), 0).unwrap()
        }
    }

    fn policy(directory: MockTenantDirectory, clock: &Arc<ManualClock>) -> OriginPolicy {
        let tenants = TenantCache::new(Arc::new(directory), clock.clone(), Duration::seconds(60));
        OriginPolicy::new(
            ["https://console.sba.test".to_owned()],
            tenants,
            clock.clone(),
            Duration::seconds(60),
        )
    }

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(1_800_000_000)))
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
        assert!(policy.allows(APP, None).await);
        assert!(!policy.allows("https://evil.test", None).await);
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
        clock.0.fetch_add(61, Ordering::SeqCst);
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
