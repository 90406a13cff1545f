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

/// A request of user `u`, role authenticated, in the tenant of UUID 1.
pub fn user_context() -> crate::RequestContext {
    crate::RequestContext {
        principal: sba_domain::Principal {
            tenant_id: TenantId::from_uuid(uuid::Uuid::from_u128(1)),
            user_id: sba_domain::UserId::parse("u").unwrap(),
            role: sba_domain::Role::Authenticated,
        },
        ip: None,
        request_id: "r".into(),
        client_request_id: None,
        token: None,
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
    // A call site first met by a parallel test, on a thread without a subscriber, would be
    // cached as "never" for every thread; under this global one no call site ever is, so
    // each event asks the current thread's subscriber. Without it a race remained: a call
    // site registered while this capture began kept "never" (1 failure in ~10 runs of the
    // crate's tests with `cargo test`).
    static KEEP_CALL_SITES_ASKING: std::sync::Once = std::sync::Once::new();
    KEEP_CALL_SITES_ASKING.call_once(|| {
        // Fails only if a global subscriber exists already: then that one decides.
        let _ = tracing::subscriber::set_global_default(AskEachTime);
    });
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    run.await;
    drop(guard);
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

/// A global subscriber that records nothing and keeps every call site's interest at
/// "sometimes" (see [`logs_of`]).
struct AskEachTime;

impl tracing::Subscriber for AskEachTime {
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
