//! Tenants as the platform knows them: status and the browser origins they allow.

use std::fmt;

use crate::ids::TenantId;
use crate::ratelimit::Quota;

/// Whether a tenant may use the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantStatus {
    Active,
    /// Every request of a suspended tenant is refused.
    Suspended,
}

impl TenantStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tenant's platform-level settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub status: TenantStatus,
    /// Exact browser origins (`scheme://host[:port]`) allowed to call the API with this
    /// tenant's tokens, on top of the global allow-list.
    pub allowed_origins: Vec<String>,
    /// The plan, whose configured quota is the tenant's default (`None`: the global default).
    pub plan: Option<String>,
    /// A quota set for this tenant alone; wins over its plan's.
    pub rate_limit: Option<Quota>,
}

impl Tenant {
    /// An active tenant with no settings of its own.
    pub fn active(id: TenantId) -> Self {
        Self { id, status: TenantStatus::Active, allowed_origins: Vec::new(), plan: None, rate_limit: None }
    }

    /// Whether `origin` is one of this tenant's own allowed origins (exact, ASCII
    /// case-insensitive match, as browsers serialise origins in lower case).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(origins: &[&str]) -> Tenant {
        Tenant {
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            ..Tenant::active(TenantId::from_uuid(uuid::Uuid::nil()))
        }
    }

    #[test]
    fn an_origin_matches_only_exactly_ignoring_ascii_case() {
        let tenant = tenant(&["https://app.example.com"]);
        assert!(tenant.allows_origin("https://app.example.com"));
        assert!(tenant.allows_origin("HTTPS://APP.example.com"));
        assert!(!tenant.allows_origin("https://app.example.com:8443"));
        assert!(!tenant.allows_origin("https://evil.app.example.com"));
        assert!(!tenant.allows_origin("http://app.example.com"));
    }

    #[test]
    fn tenant_statuses_are_named_active_and_suspended() {
        for (status, name) in [(TenantStatus::Active, "active"), (TenantStatus::Suspended, "suspended")] {
            assert_eq!(status.as_str(), name);
            assert_eq!(status.to_string(), name);
        }
    }
}
