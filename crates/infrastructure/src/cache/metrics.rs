//! The cache's metrics, shared by both adapters: `sba_cache_requests_total` and
//! `sba_cache_invalidations_total`.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

/// What the cache metrics count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CacheEvent {
    L1Hit,
    L1Miss,
    L2Hit,
    L2Miss,
    NamespaceInvalidated,
    KeyInvalidated,
}

/// `sba_cache_requests_total{tier, namespace, result}` and
/// `sba_cache_invalidations_total{namespace, scope}`, with handles kept per namespace:
/// looking a counter up by its labels costs more than the L1 hit it counts.
#[derive(Debug, Default)]
pub(crate) struct CacheMetrics {
    namespaces: RwLock<HashMap<&'static str, NamespaceCounters>>,
}

#[derive(Debug)]
struct NamespaceCounters {
    l1_hit: metrics::Counter,
    l1_miss: metrics::Counter,
    l2_hit: metrics::Counter,
    l2_miss: metrics::Counter,
    namespace_invalidated: metrics::Counter,
    key_invalidated: metrics::Counter,
}

impl NamespaceCounters {
    fn new(namespace: &'static str) -> Self {
        let request = |tier: &'static str, result: &'static str| metrics::counter!("sba_cache_requests_total", "tier" => tier, "namespace" => namespace, "result" => result);
        let invalidation = |scope: &'static str| metrics::counter!("sba_cache_invalidations_total", "namespace" => namespace, "scope" => scope);
        Self {
            l1_hit: request("l1", "hit"),
            l1_miss: request("l1", "miss"),
            l2_hit: request("l2", "hit"),
            l2_miss: request("l2", "miss"),
            namespace_invalidated: invalidation("namespace"),
            key_invalidated: invalidation("key"),
        }
    }

    fn counter(&self, event: CacheEvent) -> &metrics::Counter {
        match event {
            CacheEvent::L1Hit => &self.l1_hit,
            CacheEvent::L1Miss => &self.l1_miss,
            CacheEvent::L2Hit => &self.l2_hit,
            CacheEvent::L2Miss => &self.l2_miss,
            CacheEvent::NamespaceInvalidated => &self.namespace_invalidated,
            CacheEvent::KeyInvalidated => &self.key_invalidated,
        }
    }
}

impl CacheMetrics {
    /// Namespaces are code constants, so the map stays small.
    pub(crate) fn record(&self, namespace: &'static str, event: CacheEvent) {
        if let Some(counters) = self.namespaces.read().unwrap_or_else(PoisonError::into_inner).get(namespace)
        {
            counters.counter(event).increment(1);
            return;
        }
        let mut namespaces = self.namespaces.write().unwrap_or_else(PoisonError::into_inner);
        namespaces
            .entry(namespace)
            .or_insert_with(|| NamespaceCounters::new(namespace))
            .counter(event)
            .increment(1);
    }
}
