//! Audit entries: who did what to which resource, and how it ended.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AuditEntryId, TenantId};

/// How an audited attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The mutation was carried out.
    Success,
    /// The mutation was refused (not allowed, invalid, conflicting).
    Denied,
    /// The mutation failed for a reason outside the caller's control.
    Error,
}

impl AuditOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }

    /// Parses the stored representation; `None` for anything else.
    pub fn from_stored(value: &str) -> Option<Self> {
        match value {
            "success" => Some(Self::Success),
            "denied" => Some(Self::Denied),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audited mutation attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: AuditEntryId,
    pub tenant_id: TenantId,
    /// The token subject that acted.
    pub actor: String,
    /// What was attempted, as `resource.verb` (for example `run.cancel`).
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub outcome: AuditOutcome,
    pub ip: Option<String>,
    /// The server's own id of the request (always server-made, unique); `None` for the
    /// platform's own changes.
    pub request_id: Option<String>,
    /// The `X-Request-Id` the client sent, if a well-formed one: for correlating with the
    /// client's logs only, since the client chooses it (any value, any number of times).
    pub client_request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_reads_back_from_its_stored_name_which_is_its_serde_and_display_name() {
        for (outcome, name) in [
            (AuditOutcome::Success, "success"),
            (AuditOutcome::Denied, "denied"),
            (AuditOutcome::Error, "error"),
        ] {
            assert_eq!(outcome.as_str(), name);
            assert_eq!(AuditOutcome::from_stored(name), Some(outcome));
            assert_eq!(outcome.to_string(), name);
            assert_eq!(serde_json::to_value(outcome).unwrap(), name);
        }
        assert_eq!(AuditOutcome::from_stored("Success"), None);
        assert_eq!(AuditOutcome::from_stored(""), None);
    }
}
