//! [`TenantCache`]: tenant lookups through the `TenantDirectory`, cached per node for a
//! short time, because CORS and rate limits need the caller's tenant on every request.
//! (Issue 6 moves this onto the distributed `Cache` port with invalidation.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};
use sba_domain::{Tenant, TenantId};

use crate::ports::{Clock, RepositoryError, TenantDirectory};

/// How long a tenant read from the directory is reused.
pub const DEFAULT_TENANT_TTL: Duration = Duration::seconds(60);
/// At most this many tenants are kept; a full cache starts over.
const MAX_CACHED: usize = 10_000;

/// Cached tenant lookups.
#[derive(Clone)]
pub struct TenantCache {
    directory: Arc<dyn TenantDirectory>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    entries: Arc<Mutex<Entries>>,
}

/// Each tenant (or its absence) with the instant the entry expires.
type Entries = HashMap<TenantId, (Option<Tenant>, DateTime<Utc>)>;

impl std::fmt::Debug for TenantCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCache").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl TenantCache {
    pub fn new(directory: Arc<dyn TenantDirectory>, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self { directory, clock, ttl, entries: Arc::default() }
    }

    /// The directory behind the cache (for lookups that are not by tenant).
    pub fn directory(&self) -> &Arc<dyn TenantDirectory> {
        &self.directory
    }

    /// The tenant `id`, from the cache when fresh; failures are not cached.
    ///
    /// # Errors
    /// `Unexpected` when the directory cannot be read.
    pub async fn get(&self, id: TenantId) -> Result<Option<Tenant>, RepositoryError> {
        let now = self.clock.now();
        {
            let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((tenant, expires)) = entries.get(&id)
                && *expires > now
            {
                return Ok(tenant.clone());
            }
        }
        let tenant = self.directory.find(id).await?;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_CACHED {
            entries.clear();
        }
        entries.insert(id, (tenant.clone(), now + self.ttl));
        Ok(tenant)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockClock, MockTenantDirectory};

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
                Ok(Some(Tenant::active(id)))
            }
        });
        let times = Arc::new(Mutex::new(vec![0_i64, 0, 10, 20, 70, 75]));
        let mut clock = MockClock::new();
        clock.expect_now().returning(move || {
            let mut times = times.lock().unwrap();
            Utc.timestamp_opt(1_800_000_000 + times.remove(0), 0).unwrap()
        });
        let cache = TenantCache::new(Arc::new(directory), Arc::new(clock), Duration::seconds(60));
        assert!(cache.get(id).await.is_err(), "t=0: the directory fails");
        assert!(cache.get(id).await.unwrap().is_some(), "t=0: fetched");
        assert!(cache.get(id).await.unwrap().is_some(), "t=10: cached");
        assert!(cache.get(id).await.unwrap().is_some(), "t=20: cached");
        assert!(cache.get(id).await.unwrap().is_some(), "t=70: expired, fetched again");
        assert!(cache.get(id).await.unwrap().is_some(), "t=75: cached");
    }
}
