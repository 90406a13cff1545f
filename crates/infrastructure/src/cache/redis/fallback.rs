//! What [`FredCache`](super::FredCache) does while Redis fails: the breaker that keeps
//! Redis out of the path, and the deletes and invalidations kept and replayed when it
//! answers again, so other nodes still hear of them.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use sba_application::ports::CacheKey;
use sba_domain::TenantId;

use super::Inner;

/// How long Redis is skipped after a failure.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);
/// Deletes and invalidations kept for replay while Redis is unreachable, at most.
pub const MAX_PENDING: usize = 10_000;

impl Inner {
    pub(super) fn failed(&self, error: &dyn fmt::Display) {
        self.redis_errors.increment(1);
        if self.breaker.record_failure() {
            self.fallback_gauge.set(1.0);
            tracing::warn!(error = %error, "cache: Redis is unreachable; serving from L1 only until it answers");
        }
    }

    pub(super) fn succeeded(self: &Arc<Self>) {
        if self.breaker.record_success() {
            self.fallback_gauge.set(0.0);
            tracing::info!("cache: Redis answers again; L2 is back");
            if !self.pending_is_empty() {
                // Entries this node kept across its own invalidations (the version it bumped
                // locally is replaced by Redis's) must not be served again.
                self.l1.clear();
                tokio::spawn(Arc::clone(self).replay());
            }
        }
    }

    pub(super) fn keep(&self, write: PendingWrite) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.writes.len() >= MAX_PENDING && !pending.writes.contains(&write) {
            if !pending.overflowed {
                pending.overflowed = true;
                tracing::warn!(
                    max = MAX_PENDING,
                    "cache: too many invalidations are waiting for Redis; later ones are dropped, and \
                     other nodes may serve what they invalidate until it expires"
                );
            }
            return;
        }
        if pending.writes.is_empty() {
            tracing::warn!(
                "cache: invalidations cannot reach Redis; they are kept and replayed when it answers"
            );
        }
        pending.writes.insert(write);
    }

    fn pending_is_empty(&self) -> bool {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).writes.is_empty()
    }

    /// Sends the kept deletes and invalidations, one at a time, until done or Redis fails
    /// again (the rest then waits for the next recovery).
    pub(super) async fn replay(self: Arc<Self>) {
        while !self.replaying.swap(true, Ordering::AcqRel) {
            let writes: Vec<PendingWrite> = {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                pending.overflowed = false;
                pending.writes.drain().collect()
            };
            let total = writes.len();
            let mut writes = writes.into_iter();
            let mut replayed = 0_usize;
            for write in writes.by_ref() {
                let sent = match &write {
                    PendingWrite::Namespace(tenant, namespace) => {
                        self.invalidate_in_redis(*tenant, namespace).await
                    }
                    PendingWrite::Key(key) => {
                        let version = self.version(key.tenant, key.namespace).await;
                        self.delete_in_redis(key, version).await
                    }
                };
                if !sent {
                    let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                    pending.writes.insert(write);
                    break;
                }
                replayed += 1;
            }
            self.pending.lock().unwrap_or_else(PoisonError::into_inner).writes.extend(writes);
            self.replaying.store(false, Ordering::Release);
            if total > 0 {
                tracing::info!(
                    replayed,
                    left = total - replayed,
                    "cache: replayed invalidations kept during the outage"
                );
            }
            // More may have been kept meanwhile; a failure waits for the next recovery.
            if replayed < total || self.pending_is_empty() {
                return;
            }
        }
    }
}

/// A delete or invalidation waiting for Redis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum PendingWrite {
    Namespace(TenantId, &'static str),
    Key(CacheKey),
}

#[derive(Debug, Default)]
pub(super) struct Pending {
    writes: HashSet<PendingWrite>,
    /// Whether a write was dropped since the last replay (logged once).
    overflowed: bool,
}
