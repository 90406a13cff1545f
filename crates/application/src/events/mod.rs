//! The worker's side of the event pipeline (ADR 0017): taking queued batches and storing
//! them durably.

mod persister;

pub use persister::{DEFAULT_MAX_ATTEMPTS, EventPersister, PersistError, PersistReport};
