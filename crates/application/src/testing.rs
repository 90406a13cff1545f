//! Shared stand-ins for the unit tests of the application services: a map cache and a clock
//! the test moves (the ports' mockall mocks are beside each port).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_domain::TenantId;

use crate::ports::{Cache, CacheEntry, CacheKey, Clock};

/// A cache that keeps entries in a map (a stand-in for an adapter: these tests are
/// about the services' decisions; the adapters have their own tests on Redis).
#[derive(Debug, Default)]
pub struct MapCache(pub Mutex<HashMap<CacheKey, CacheEntry>>);

#[async_trait]
impl Cache for MapCache {
    async fn get(&self, key: &CacheKey) -> Option<CacheEntry> {
        self.0.lock().unwrap().get(key).cloned()
    }
    async fn set(&self, key: &CacheKey, entry: CacheEntry) {
        self.0.lock().unwrap().insert(key.clone(), entry);
    }
    async fn delete(&self, key: &CacheKey) {
        self.0.lock().unwrap().remove(key);
    }
    async fn invalidate_namespace(&self, tenant: TenantId, namespace: &'static str) {
        self.0.lock().unwrap().retain(|k, _| k.tenant != tenant || k.namespace != namespace);
    }
}

/// A clock the test moves (Unix milliseconds).
#[derive(Debug)]
pub struct TestClock(pub AtomicI64);

impl TestClock {
    pub fn at(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst)).unwrap_or_default()
    }
}
