//! Shared stand-ins for the unit tests of the application services: a map cache, a clock
//! the test moves and a capture of log lines (the ports' mockall mocks are beside each port).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

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

/// The log lines (INFO and above) written while `run` runs on this thread.
pub async fn logs_of<F: std::future::Future<Output = ()>>(run: F) -> String {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let guard = tracing::subscriber::set_default(subscriber);
    // A call site first met by a parallel test without a subscriber stays disabled for
    // every thread until the interest cache is rebuilt.
    tracing::callsite::rebuild_interest_cache();
    run.await;
    drop(guard);
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}
