//! Ports: what the application needs from storage, identity and time.
//!
//! Every port is `Debug + Send + Sync + 'static` (services over `Arc<dyn Port>` derive
//! `Debug`), returns application errors only (never a driver's
//! error type), and has a mockall mock for the crate's unit tests (ADR 0013).

mod audit_log;
mod cache;
mod clock;
mod dependency_check;
mod error;
mod event_bus;
mod event_queue;
mod event_sequencer;
mod health_log;
mod idempotency;
mod knowledge_store;
mod rate_limiter;
mod run_details;
mod run_ledger;
mod run_repository;
mod session_store;
mod tenant_directory;
mod token_verifier;
mod usage_ledger;

pub use audit_log::AuditLog;
pub use cache::{Cache, CacheEntry, CacheKey, Decoded, EntryMeta};
pub use clock::{Clock, IdGenerator};
pub use dependency_check::DependencyCheck;
pub use error::{ConflictKind, RepositoryError};
pub use event_bus::{BusMessage, EventBus, EventBusError, EventChannel, LiveEvent, Subscription};
pub use event_queue::{DeadLetter, EventQueue, QueueError, QueuedEntry};
pub use event_sequencer::{
    AppendOutcome, AppendRequest, AppendedEvent, EventSequencer, SeedOutcome, SequencerError,
    ServerAppendOutcome, ServerEvent, StatusChange,
};
pub use health_log::{HealthLog, HealthRecord};
pub use idempotency::{IdempotencyStore, Reservation, StoredResponse};
pub use knowledge_store::KnowledgeStore;
pub use rate_limiter::{RateLimitError, RateLimiter};
pub use run_details::{EventLog, StepRepository, ToolCallRepository};
pub use run_ledger::{ApplyOutcome, LedgerError, RunEnding, RunLedger, SkippedEvent};
pub use run_repository::{RunFilter, RunRepository};
pub use session_store::SessionStore;
pub use tenant_directory::TenantDirectory;
pub use token_verifier::{TokenError, TokenVerifier, VerifiedToken};
pub use usage_ledger::{UsageBucket, UsageGrouping, UsageLedger, UsageRange};

#[cfg(test)]
pub use {
    audit_log::MockAuditLog,
    cache::MockCache,
    clock::{MockClock, MockIdGenerator},
    dependency_check::MockDependencyCheck,
    event_bus::MockEventBus,
    event_queue::MockEventQueue,
    event_sequencer::MockEventSequencer,
    health_log::MockHealthLog,
    idempotency::MockIdempotencyStore,
    knowledge_store::MockKnowledgeStore,
    rate_limiter::MockRateLimiter,
    run_details::{MockEventLog, MockStepRepository, MockToolCallRepository},
    run_ledger::MockRunLedger,
    run_repository::MockRunRepository,
    session_store::MockSessionStore,
    tenant_directory::MockTenantDirectory,
    token_verifier::MockTokenVerifier,
    usage_ledger::MockUsageLedger,
};
