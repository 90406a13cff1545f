//! Who is calling: the verified identity behind a request.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{TenantId, UserId};

/// The role claimed by a verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An end user of a tenant.
    Authenticated,
    /// An administrator of a tenant.
    Admin,
    /// An agent runtime reporting events.
    Agent,
    /// A trusted backend service of the tenant.
    Service,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::Admin => "admin",
            Self::Agent => "agent",
            Self::Service => "service",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that SBA does not grant access to: Supabase's `anon`, and its `service_role`,
/// which is a platform credential (it bypasses row-level security) rather than a principal
/// of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role")]
pub struct UnknownRole;

impl FromStr for Role {
    type Err = UnknownRole;

    /// Accepts SBA's role names only.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "authenticated" => Ok(Self::Authenticated),
            "admin" => Ok(Self::Admin),
            "agent" => Ok(Self::Agent),
            "service" => Ok(Self::Service),
            _ => Err(UnknownRole),
        }
    }
}

/// The verified caller of a request, always bound to exactly one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supabase_service_role_is_not_a_role() {
        assert_eq!("service_role".parse::<Role>(), Err(UnknownRole));
    }

    #[test]
    fn anonymous_role_is_not_a_role() {
        assert_eq!("anon".parse::<Role>(), Err(UnknownRole));
    }

    #[test]
    fn role_names_round_trip_through_display_and_serde() {
        for role in [Role::Authenticated, Role::Admin, Role::Agent, Role::Service] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
    }
}
