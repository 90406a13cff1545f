//! The worker's side of the event pipeline (ADR 0017): taking queued batches and storing
//! them durably.

mod ingest;
mod persister;

pub use ingest::{IngestError, IngestReceipt, IngestService, MAX_BATCH_EVENTS, RawEvent, malformed_event};
pub use persister::{DEFAULT_MAX_ATTEMPTS, EventPersister, PersistError, PersistReport};
