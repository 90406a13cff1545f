//! The event pipeline's use cases (ADR 0017): agents' batches in ([`IngestService`]), queued
//! batches stored durably by the worker ([`EventPersister`]).

mod batch;
mod ingest;
mod persister;
mod pipeline;

pub use batch::{RawEvent, malformed_event};
pub use ingest::{IngestError, IngestReceipt, IngestService, MAX_BATCH_EVENTS};
pub use persister::{DEFAULT_MAX_ATTEMPTS, EventPersister, PersistError, PersistReport};
pub use pipeline::{EventPipeline, SeedError};

/// A count or seq as a span attribute: an integer (the trace exporter sends unsigned values
/// as text).
pub(crate) fn span_int<T: TryInto<i64>>(value: T) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::span_int;

    #[test]
    fn counts_and_seqs_become_span_integers_and_those_beyond_i64_saturate() {
        assert_eq!(span_int(0_usize), 0);
        assert_eq!(span_int(500_usize), 500);
        assert_eq!(span_int(1_u64 << 40), 1 << 40);
        assert_eq!(span_int(i64::MAX.unsigned_abs()), i64::MAX);
        assert_eq!(span_int(u64::MAX), i64::MAX, "saturates instead of wrapping negative");
    }
}
