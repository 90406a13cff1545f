//! Domain model of SBA: entities, newtype ids, value objects and state machines.
//!
//! This crate performs no I/O and knows no framework; everything here is plain data and
//! pure functions, so every other layer can depend on it.

pub mod audit;
pub mod events;
pub mod http_method;
pub mod ids;
pub mod knowledge;
pub mod origin;
pub mod principal;
pub mod ratelimit;
pub mod runs;
pub mod sessions;
pub mod steps;
pub mod tenant;
pub mod usage;

pub use audit::{AuditEntry, AuditOutcome};
pub use http_method::HttpMethod;
pub use ids::{AuditEntryId, ChunkId, DocumentId, IdParseError, RunId, SessionId, TenantId, UserId};
pub use origin::WebOrigin;
pub use principal::{Principal, Role};
pub use runs::{AgentName, AgentRun, InvalidTransition, Metadata, NewRun, RunError, RunStatus, StoredRun};
pub use sessions::{Session, SessionTitle, SessionUpdate};
pub use tenant::{Tenant, TenantStatus};

/// A value given to a domain constructor that does not satisfy its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field (in the client's vocabulary) that was rejected.
    pub field: &'static str,
    /// Why it was rejected, fit to show to the client.
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}
