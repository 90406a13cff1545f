//! The event pipeline's use cases (ADR 0017): agents' batches in ([`IngestService`]), queued
//! batches stored durably by the worker ([`EventPersister`]).

mod ingest;
mod persister;
mod pipeline;

pub use ingest::{IngestError, IngestReceipt, IngestService, MAX_BATCH_EVENTS, RawEvent, malformed_event};
pub use persister::{DEFAULT_MAX_ATTEMPTS, EventPersister, PersistError, PersistReport};
pub use pipeline::{EventPipeline, SeedError};
