//! The namespace version table: which version of each tenant's namespace this node reads
//! and writes, trusted for `version_ttl` after Redis confirmed it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use fred::interfaces::KeysInterface as _;
use sba_domain::TenantId;

use super::Inner;
use crate::cache::keys::version_key;
use crate::observe::Operation;

/// Namespace versions a node holds at most; beyond that it forgets them (they are read
/// again).
const MAX_VERSIONS: usize = 100_000;

static READ_VERSION: Operation = Operation::redis("cache.read_version");

impl Inner {
    /// The namespace's current version: the node's copy while trusted, else Redis's; when
    /// Redis does not answer, the node's copy however old (0 if it has none).
    pub(super) async fn version(self: &Arc<Self>, tenant: TenantId, namespace: &'static str) -> u64 {
        match self.versions.known(tenant, namespace) {
            Known::Trusted(version) => version,
            Known::Unsure(local) => self.read_version(tenant, namespace, local).await,
        }
    }

    async fn read_version(
        self: &Arc<Self>,
        tenant: TenantId,
        namespace: &'static str,
        local: Option<u64>,
    ) -> u64 {
        match self
            .redis(&READ_VERSION, self.client.get::<Option<u64>, _>(version_key(tenant, namespace)))
            .await
        {
            Some(stored) => {
                let version = stored.unwrap_or(0);
                self.versions.confirm(tenant, namespace, version);
                version
            }
            None => local.unwrap_or(0),
        }
    }
}

/// The namespace versions this node knows.
pub(super) struct Versions {
    started: Instant,
    trust_ms: u64,
    map: RwLock<HashMap<(TenantId, &'static str), Version>>,
}

#[derive(Default)]
struct Version {
    value: AtomicU64,
    /// When Redis last confirmed `value` (milliseconds since `started`, plus one); 0: read it
    /// again before trusting it.
    confirmed_at: AtomicU64,
}

/// What [`Versions::known`] found.
enum Known {
    Trusted(u64),
    /// Not confirmed lately: the node's copy, if any.
    Unsure(Option<u64>),
}

impl Versions {
    pub(super) fn new(trust: Duration) -> Self {
        Self {
            started: Instant::now(),
            trust_ms: u64::try_from(trust.as_millis()).unwrap_or(u64::MAX),
            map: RwLock::default(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<(TenantId, &'static str), Version>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks a namespace up by any `&str` (messages carry it as text): a map of
    /// `&'static str` keys is also a map of shorter-lived ones, for reading.
    fn find<'s, R>(&self, tenant: TenantId, namespace: &'s str, f: impl FnOnce(&Version) -> R) -> Option<R> {
        let map = self.read();
        let map: &HashMap<(TenantId, &'s str), Version> = &map;
        map.get(&(tenant, namespace)).map(f)
    }

    fn known(&self, tenant: TenantId, namespace: &str) -> Known {
        let now = self.now();
        self.find(tenant, namespace, |version| {
            let value = version.value.load(Ordering::Acquire);
            let confirmed_at = version.confirmed_at.load(Ordering::Acquire);
            if confirmed_at != 0 && now.saturating_sub(confirmed_at) < self.trust_ms {
                Known::Trusted(value)
            } else {
                Known::Unsure(Some(value))
            }
        })
        .unwrap_or(Known::Unsure(None))
    }

    pub(super) fn local(&self, tenant: TenantId, namespace: &str) -> Option<u64> {
        self.find(tenant, namespace, |version| version.value.load(Ordering::Acquire))
    }

    /// What Redis holds: it replaces the node's copy.
    pub(super) fn confirm(&self, tenant: TenantId, namespace: &'static str, value: u64) {
        let now = self.now();
        self.upsert(tenant, namespace, |version| {
            version.value.store(value, Ordering::Release);
            version.confirmed_at.store(now, Ordering::Release);
        });
    }

    /// A newer version (announced, or made by this node's `INCR`): applied when greater.
    /// `false` when the node does not know the namespace (it reads it when needed).
    pub(super) fn advance(&self, tenant: TenantId, namespace: &str, value: u64) -> bool {
        let now = self.now();
        self.find(tenant, namespace, |version| {
            if version.value.fetch_max(value, Ordering::AcqRel) <= value {
                version.confirmed_at.store(now, Ordering::Release);
            }
        })
        .is_some()
    }

    /// An invalidation that could not reach Redis: a version of this node's own, read
    /// again from Redis as soon as it answers.
    pub(super) fn bump_local(&self, tenant: TenantId, namespace: &'static str) {
        self.upsert(tenant, namespace, |version| {
            version.value.fetch_add(1, Ordering::AcqRel);
            version.confirmed_at.store(0, Ordering::Release);
        });
    }

    fn upsert(&self, tenant: TenantId, namespace: &'static str, f: impl Fn(&Version)) {
        if self.find(tenant, namespace, &f).is_some() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_VERSIONS && !map.contains_key(&(tenant, namespace)) {
            map.clear();
        }
        f(map.entry((tenant, namespace)).or_default());
    }

    pub(super) fn clear(&self) {
        self.map.write().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn versions_are_trusted_for_a_while_and_only_move_forward_on_messages() {
        let versions = Versions::new(Duration::from_millis(500));
        let tenant = TenantId::from_uuid(Uuid::now_v7());
        assert!(matches!(versions.known(tenant, "run"), Known::Unsure(None)));
        assert!(!versions.advance(tenant, "run", 3), "unknown namespaces are read when needed");
        versions.confirm(tenant, "run", 5);
        assert!(matches!(versions.known(tenant, "run"), Known::Trusted(5)));
        assert!(versions.advance(tenant, "run", 4));
        assert!(matches!(versions.known(tenant, "run"), Known::Trusted(5)));
        assert!(versions.advance(tenant, &String::from("run"), 6));
        assert!(matches!(versions.known(tenant, "run"), Known::Trusted(6)));
        std::thread::sleep(Duration::from_millis(550));
        assert!(matches!(versions.known(tenant, "run"), Known::Unsure(Some(6))));
        versions.bump_local(tenant, "run");
        assert!(matches!(versions.known(tenant, "run"), Known::Unsure(Some(7))));
        versions.confirm(tenant, "run", 2);
        assert!(matches!(versions.known(tenant, "run"), Known::Trusted(2)), "Redis is the authority");
    }
}
