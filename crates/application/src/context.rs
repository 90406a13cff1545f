//! What a use case knows about the request it serves.

use sba_domain::Principal;

/// The verified caller plus the request facts that audit entries record.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub principal: Principal,
    /// The client's address as seen by the server (or the trusted proxy chain).
    pub ip: Option<String>,
    pub request_id: String,
}
