//! [`OriginPolicy`]: which browser origins may call the API, from the global allow-list and
//! each tenant's own origins (ADR 0004, ADR 0016).
//!
//! An authenticated request is decided with its caller's tenant record, which admission has
//! already loaded. A request without a caller (a preflight, a 401, `/healthz` with an
//! `Origin`) is decided against one in-memory set of every active tenant's origins, read
//! from the directory once per refresh interval: the origin, which the client chooses,
//! never causes a directory call (docs/security.md, "Unauthenticated load").

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use sba_domain::{Tenant, TenantStatus};

use crate::cache::NamespacePolicy;
use crate::ports::{Clock, TenantDirectory};

/// The registered origins' refresh: its `ttl` is the interval (60 s; `SBA_CACHE__TTLS`
/// `cors_origin=<secs>` sets it, as it set the TTL of the per-origin cache this set
/// replaced). The set lives in this process only, not in the cache.
pub const REGISTERED_ORIGIN_NAMESPACE: NamespacePolicy = NamespacePolicy {
    name: "cors_origin",
    schema: 1,
    ttl: Duration::from_mins(1),
    max_ttl: Duration::from_mins(10),
};

/// After a failed read, the next one is tried this soon (or at the refresh interval, when
/// that is sooner): at most one directory call per this interval while it is down.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Origins longer than this are denied without a lookup (a real origin is
/// `scheme://host:port`).
const MAX_ORIGIN_LEN: usize = 300;

/// Decides CORS for one origin, with or without a caller.
#[derive(Clone)]
pub struct OriginPolicy {
    global: Arc<HashSet<String>>,
    registered: Arc<RegisteredOrigins>,
}

impl std::fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginPolicy").field("global", &self.global).finish_non_exhaustive()
    }
}

/// Every active tenant's origins, as last read from the directory.
struct RegisteredOrigins {
    directory: Arc<dyn TenantDirectory>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    /// The last set read successfully (empty until the first read succeeds: deny).
    current: RwLock<Arc<HashSet<String>>>,
    /// When the next read is due, in milliseconds since the epoch (`i64::MIN`: now).
    due_ms: AtomicI64,
    /// Whether a read has succeeded: from then on a caller never waits for a read in
    /// flight, it decides with the set at hand.
    loaded: AtomicBool,
    /// Held while reading: one read at a time; `true` while the directory is failing, so
    /// that a failure is logged once and the recovery once.
    refreshing: tokio::sync::Mutex<bool>,
}

impl OriginPolicy {
    /// `global` origins are allowed for every caller; the tenants' own come from
    /// `directory`, re-read every `interval`.
    pub fn new(
        global: impl IntoIterator<Item = String>,
        directory: Arc<dyn TenantDirectory>,
        clock: Arc<dyn Clock>,
        interval: Duration,
    ) -> Self {
        Self {
            global: Arc::new(global.into_iter().map(|o| o.to_ascii_lowercase()).collect()),
            registered: Arc::new(RegisteredOrigins {
                directory,
                clock,
                interval,
                current: RwLock::default(),
                due_ms: AtomicI64::new(i64::MIN),
                loaded: AtomicBool::new(false),
                refreshing: tokio::sync::Mutex::new(false),
            }),
        }
    }

    /// Whether the page that sent a request without a caller (a preflight, a refused or
    /// anonymous request) may read the answer: the origin is global or some active tenant
    /// lists it. Such an answer carries no tenant's data.
    pub async fn allows_anonymous(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        if self.global.contains(&origin) {
            return true;
        }
        origin.len() <= MAX_ORIGIN_LEN && self.registered.current().await.contains(&origin)
    }

    /// Whether the page that sent an authenticated request may read the answer: the origin
    /// is global or listed by the caller's tenant, which must be active. `tenant` is the
    /// record admission loaded; `None` (unknown, or the directory could not say) allows
    /// global origins only.
    pub fn allows_for(&self, origin: &str, tenant: Option<&Tenant>) -> bool {
        self.global.contains(&origin.to_ascii_lowercase())
            || tenant.is_some_and(|t| t.status == TenantStatus::Active && t.allows_origin(origin))
    }
}

impl RegisteredOrigins {
    /// The set, read again first when due. A caller arriving during a read uses the set
    /// at hand, or waits for the read when none has succeeded yet; it never starts its own.
    async fn current(&self) -> Arc<HashSet<String>> {
        if self.clock.now().timestamp_millis() >= self.due_ms.load(Ordering::Acquire) {
            let mut failing = if self.loaded.load(Ordering::Acquire) {
                match self.refreshing.try_lock() {
                    Ok(guard) => guard,
                    Err(_) => return self.snapshot(),
                }
            } else {
                self.refreshing.lock().await
            };
            // Another caller may have read it while this one waited.
            let now = self.clock.now().timestamp_millis();
            if now >= self.due_ms.load(Ordering::Acquire) {
                let next = match self.directory.registered_origins().await {
                    Ok(origins) => {
                        let origins: HashSet<String> = origins.into_iter().collect();
                        if *failing {
                            tracing::info!(origins = origins.len(), "tenant origins for CORS read again");
                        }
                        *failing = false;
                        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(origins);
                        self.loaded.store(true, Ordering::Release);
                        self.interval
                    }
                    Err(error) => {
                        if !*failing {
                            tracing::warn!(
                                error = %error,
                                "cannot read the tenant origins for CORS; keeping the last ones read"
                            );
                        }
                        *failing = true;
                        self.interval.min(RETRY_AFTER_FAILURE)
                    }
                };
                let next_ms = i64::try_from(next.as_millis()).unwrap_or(i64::MAX);
                self.due_ms.store(now.saturating_add(next_ms), Ordering::Release);
            }
        }
        self.snapshot()
    }

    fn snapshot(&self) -> Arc<HashSet<String>> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use sba_domain::TenantId;
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockTenantDirectory, RepositoryError};
    use crate::testing::{TestClock, logs_of};

    const APP: &str = "https://app.tenant-a.test";
    const CONSOLE: &str = "https://console.sba.test";

    fn clock() -> Arc<TestClock> {
        Arc::new(TestClock::at(1_800_000_000_000))
    }

    fn policy(directory: MockTenantDirectory, clock: &Arc<TestClock>) -> OriginPolicy {
        OriginPolicy::new([CONSOLE.to_owned()], Arc::new(directory), clock.clone(), Duration::from_mins(1))
    }

    fn tenant(status: TenantStatus) -> Tenant {
        Tenant {
            status,
            allowed_origins: vec![APP.to_owned()],
            ..Tenant::active(TenantId::from_uuid(Uuid::from_u128(0xa)))
        }
    }

    #[tokio::test]
    async fn global_origins_are_allowed_for_everyone_without_a_lookup() {
        let policy = policy(MockTenantDirectory::new(), &clock());
        assert!(policy.allows_anonymous(CONSOLE).await);
        assert!(policy.allows_for("HTTPS://CONSOLE.SBA.TEST", Some(&tenant(TenantStatus::Active))));
        assert!(policy.allows_for(CONSOLE, None));
    }

    #[test]
    fn an_authenticated_request_is_decided_by_its_tenant_record_alone() {
        let policy = policy(MockTenantDirectory::new(), &clock());
        assert!(policy.allows_for(APP, Some(&tenant(TenantStatus::Active))));
        assert!(policy.allows_for("HTTPS://APP.TENANT-A.TEST", Some(&tenant(TenantStatus::Active))));
        assert!(!policy.allows_for(APP, Some(&Tenant::active(TenantId::from_uuid(Uuid::from_u128(0xb))))));
        assert!(!policy.allows_for("https://evil.test", Some(&tenant(TenantStatus::Active))));
        assert!(!policy.allows_for(APP, Some(&tenant(TenantStatus::Suspended))), "suspended");
        assert!(!policy.allows_for(APP, None), "no tenant record");
    }

    #[tokio::test]
    async fn a_flood_of_invented_origins_costs_no_directory_call_beyond_the_refresh() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut directory = MockTenantDirectory::new();
        let counted = Arc::clone(&calls);
        directory.expect_registered_origins().returning(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(vec![APP.to_owned()])
        });
        let clock = clock();
        let policy = policy(directory, &clock);
        for i in 0..1_000 {
            assert!(!policy.allows_anonymous(&format!("https://invented-{i}.test")).await);
        }
        assert!(policy.allows_anonymous(APP).await);
        assert!(policy.allows_anonymous("HTTPS://App.Tenant-A.test").await);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one read for the whole flood");
        clock.advance(60_000);
        assert!(!policy.allows_anonymous("https://invented.test").await);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "and one per interval");
        assert!(!policy.allows_anonymous(&format!("https://{}.test", "a".repeat(400))).await);
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_read() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut directory = MockTenantDirectory::new();
        let counted = Arc::clone(&calls);
        directory.expect_registered_origins().returning(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(vec![APP.to_owned()])
        });
        let policy = policy(directory, &clock());
        let answers = futures_util::future::join_all((0..50).map(|_| policy.allows_anonymous(APP))).await;
        assert!(answers.into_iter().all(|allowed| allowed));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn once_a_set_is_loaded_no_request_waits_for_a_slow_read() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut directory = MockTenantDirectory::new();
        let counted = Arc::clone(&calls);
        directory.expect_registered_origins().returning(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(vec![APP.to_owned()])
        });
        let clock = clock();
        let policy = policy(directory, &clock);
        assert!(policy.allows_anonymous(APP).await);
        clock.advance(60_000);
        // A read is in flight (its lock is held): requests decide with the set at hand.
        let reading = policy.registered.refreshing.lock().await;
        assert!(policy.allows_anonymous(APP).await);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        drop(reading);
        assert!(policy.allows_anonymous(APP).await);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_read_keeps_the_last_set_and_is_retried_after_a_pause() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut directory = MockTenantDirectory::new();
        let counted = Arc::clone(&calls);
        directory.expect_registered_origins().returning(move || {
            match counted.fetch_add(1, Ordering::SeqCst) {
                0 => Ok(vec![APP.to_owned()]),
                1 | 2 => Err(RepositoryError::Unexpected(anyhow::anyhow!("connection refused"))),
                _ => Ok(vec![]),
            }
        });
        let clock = clock();
        let policy = policy(directory, &clock);
        assert!(policy.allows_anonymous(APP).await);
        clock.advance(60_000);
        assert!(policy.allows_anonymous(APP).await, "the last good set is kept");
        assert!(policy.allows_anonymous(APP).await);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "no read per request while failing");
        clock.advance(5_000);
        assert!(policy.allows_anonymous(APP).await);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "retried after the pause");
        clock.advance(5_000);
        assert!(!policy.allows_anonymous(APP).await, "the directory's new answer");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn nothing_read_yet_denies_tenant_origins() {
        let mut directory = MockTenantDirectory::new();
        directory
            .expect_registered_origins()
            .times(1)
            .returning(|| Err(RepositoryError::Unexpected(anyhow::anyhow!("connection refused"))));
        let policy = policy(directory, &clock());
        assert!(!policy.allows_anonymous(APP).await);
        assert!(!policy.allows_anonymous(APP).await);
        assert!(policy.allows_anonymous(CONSOLE).await, "global origins need no directory");
    }

    #[tokio::test]
    async fn with_nothing_read_yet_a_failed_read_is_retried_after_the_pause_not_per_request() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut directory = MockTenantDirectory::new();
        let counted = Arc::clone(&calls);
        directory.expect_registered_origins().times(2).returning(move || {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(RepositoryError::Unexpected(anyhow::anyhow!("connection refused")))
            } else {
                Ok(vec![APP.to_owned()])
            }
        });
        let clock = clock();
        let policy = policy(directory, &clock);
        assert!(!policy.allows_anonymous(APP).await, "nothing read: denied");
        clock.advance(4_999);
        assert!(!policy.allows_anonymous(APP).await, "still within the pause: no read");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.advance(1);
        assert!(policy.allows_anonymous(APP).await, "read again after the pause");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_directory_outage_is_logged_when_it_starts_and_when_it_ends_not_at_each_retry() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut directory = MockTenantDirectory::new();
        let counted = Arc::clone(&calls);
        directory.expect_registered_origins().times(4).returning(move || {
            match counted.fetch_add(1, Ordering::SeqCst) {
                1 | 2 => Err(RepositoryError::Unexpected(anyhow::anyhow!("connection refused"))),
                _ => Ok(vec![APP.to_owned()]),
            }
        });
        let clock = clock();
        let policy = policy(directory, &clock);
        let mut logs = Vec::new();
        for pause in [0, 60_000, 5_000, 5_000] {
            clock.advance(pause);
            logs.push(logs_of(async { assert!(policy.allows_anonymous(APP).await) }).await);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let [first_read, outage, retry, recovery] = &logs[..] else { unreachable!() };
        let (down, back) = ("cannot read the tenant origins for CORS", "tenant origins for CORS read again");
        assert!(!first_read.contains(back), "{first_read}");
        assert!(outage.contains(down) && outage.contains("connection refused"), "{outage}");
        assert!(!retry.contains(down), "{retry}");
        assert!(recovery.contains(back) && !recovery.contains(down), "{recovery}");
    }

    #[test]
    fn debug_output_shows_the_global_origins() {
        let policy = policy(MockTenantDirectory::new(), &clock());
        let debug = format!("{policy:?}");
        assert!(debug.starts_with("OriginPolicy") && debug.contains(CONSOLE), "{debug}");
    }
}
