#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! The services that cache, on `FredCache` against the test Redis (`SBA_TEST_REDIS_URL`),
//! with two cache nodes standing for two app instances: a tenant changed and invalidated
//! through one node is seen by the other at once, and concurrent misses on one node load
//! once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sba_application::ports::{Cache, RepositoryError, TenantDirectory};
use sba_application::tenants::TenantCache;
use sba_domain::{Tenant, TenantId, TenantStatus};
use sba_infrastructure::cache::{CacheSettings, FredCache};
use sba_infrastructure::redis::test_support::redis_url;
use sba_infrastructure::system::SystemClock;
use secrecy::SecretString;
use uuid::Uuid;

/// A directory the test edits (the Supabase `tenants` table, say), counting reads.
#[derive(Debug)]
struct EditableDirectory {
    tenant: Mutex<Tenant>,
    reads: AtomicU32,
}

#[async_trait]
impl TenantDirectory for EditableDirectory {
    async fn find(&self, id: TenantId) -> Result<Option<Tenant>, RepositoryError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let tenant = self.tenant.lock().unwrap().clone();
        Ok((tenant.id == id).then_some(tenant))
    }

    async fn registered_origins(&self) -> Result<Vec<String>, RepositoryError> {
        Ok(Vec::new())
    }
}

async fn node() -> Arc<dyn Cache> {
    let settings = CacheSettings { redis_timeout: Duration::from_secs(2), ..CacheSettings::default() };
    Arc::new(FredCache::connect(&SecretString::from(redis_url()), settings).await.expect("the test Redis"))
}

#[tokio::test]
async fn a_tenant_changed_through_one_node_is_seen_by_the_other_at_once() {
    let id = TenantId::from_uuid(Uuid::now_v7());
    let directory =
        Arc::new(EditableDirectory { tenant: Mutex::new(Tenant::active(id)), reads: AtomicU32::new(0) });
    let a = TenantCache::new(directory.clone(), node().await, Arc::new(SystemClock));
    let b = TenantCache::new(directory.clone(), node().await, Arc::new(SystemClock));
    assert_eq!(a.get(id).await.unwrap().unwrap().status, TenantStatus::Active);
    assert_eq!(b.get(id).await.unwrap().unwrap().status, TenantStatus::Active);
    assert_eq!(b.get(id).await.unwrap().unwrap().status, TenantStatus::Active);
    assert_eq!(directory.reads.load(Ordering::SeqCst), 1, "node B read what node A loaded, from Redis");

    directory.tenant.lock().unwrap().status = TenantStatus::Suspended;
    a.invalidate(id).await;
    assert_eq!(a.get(id).await.unwrap().unwrap().status, TenantStatus::Suspended, "node A at once");
    // Node B learns the new namespace version from the invalidation message; a bound for
    // delivery, not a speed measurement (without the message it would wait for its TTL).
    let deadline = Instant::now() + Duration::from_secs(2);
    while b.get(id).await.unwrap().unwrap().status != TenantStatus::Suspended {
        assert!(Instant::now() < deadline, "node B still serves the old tenant");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn concurrent_misses_for_one_tenant_read_the_directory_once() {
    let id = TenantId::from_uuid(Uuid::now_v7());
    let directory =
        Arc::new(EditableDirectory { tenant: Mutex::new(Tenant::active(id)), reads: AtomicU32::new(0) });
    let cache = TenantCache::new(directory.clone(), node().await, Arc::new(SystemClock));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(id).await.unwrap().is_some() })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(directory.reads.load(Ordering::SeqCst), 1);
}
