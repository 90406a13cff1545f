//! The Redis keys of run events (ADR 0017, docs/architecture.md "Redis key schema"): every
//! key of one run and its partition's queue carry the partition's hash tag `{ev:<p>}`, so
//! one script touches one Redis Cluster slot.

use sba_domain::RunId;
use sba_domain::events::partition;

/// The keys of one run, in the order `ingest.lua` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKeys {
    /// `sba:{ev:<p>}:r:<run_id>`: hash of `seq` (last assigned), `status`, `terminal`.
    pub run: String,
    /// `sba:{ev:<p>}:ids:<run_id>`: hash of producer id → seq.
    pub ids: String,
    /// `sba:{ev:<p>}:h:<run_id>`: stream of the run's events, entry id `<seq>-1`.
    pub history: String,
    /// `sba:{ev:<p>}:q`: stream of batches to persist, shared by the partition's runs.
    pub queue: String,
}

impl RunKeys {
    /// The keys of `run` among `partitions` partitions.
    pub fn new(run: RunId, partitions: u16) -> Self {
        let p = partition(run, partitions);
        Self {
            run: format!("sba:{{ev:{p}}}:r:{run}"),
            ids: format!("sba:{{ev:{p}}}:ids:{run}"),
            history: format!("sba:{{ev:{p}}}:h:{run}"),
            queue: queue_key(p),
        }
    }

    /// The four keys in the script's order.
    pub fn all(&self) -> [&str; 4] {
        [&self.run, &self.ids, &self.history, &self.queue]
    }
}

/// `sba:{ev:<p>}:q`, the queue of partition `p`.
pub fn queue_key(p: u16) -> String {
    format!("sba:{{ev:{p}}}:q")
}

/// The consumer group that persists the queues; another group (a test, a shadow consumer)
/// keeps leases and dead letters of its own.
pub const PERSISTERS: &str = "persisters";

/// `sba:{ev:<p>}:lease`, the lease of partition `p` for the `persisters` group
/// (`sba:{ev:<p>}:lease:<group>` for another group): the name of the consumer holding it.
pub fn lease_key(p: u16, group: &str) -> String {
    if group == PERSISTERS {
        format!("sba:{{ev:{p}}}:lease")
    } else {
        format!("sba:{{ev:{p}}}:lease:{group}")
    }
}

/// `sba:{ev:<p>}:dl`, the dead letters of partition `p` for the `persisters` group
/// (`sba:{ev:<p>}:dl:<group>` for another group).
pub fn dead_letter_key(p: u16, group: &str) -> String {
    if group == PERSISTERS { format!("sba:{{ev:{p}}}:dl") } else { format!("sba:{{ev:{p}}}:dl:{group}") }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn every_key_of_a_run_carries_its_partition_tag() {
        let run = RunId::from_uuid(Uuid::parse_str("0192f1d2-8a3b-7c4d-9e5f-60718293a4b5").unwrap());
        let keys = RunKeys::new(run, 16);
        assert_eq!(keys.run, format!("sba:{{ev:15}}:r:{run}"));
        assert_eq!(keys.ids, format!("sba:{{ev:15}}:ids:{run}"));
        assert_eq!(keys.history, format!("sba:{{ev:15}}:h:{run}"));
        assert_eq!(keys.queue, "sba:{ev:15}:q");
        assert_eq!(lease_key(15, PERSISTERS), "sba:{ev:15}:lease");
        assert_eq!(dead_letter_key(15, PERSISTERS), "sba:{ev:15}:dl");
        assert_eq!(lease_key(3, "t"), "sba:{ev:3}:lease:t");
    }
}
