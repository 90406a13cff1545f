//! Who may do what inside a tenant: the permission matrix of `docs/security.md`, in one
//! place. Services ask it ([`authorize`]) before they act; adapters apply the record scope it
//! decides (through [`crate::context::Caller::sees_whole_tenant`]); the WebSocket gateway
//! asks it for its channels (`run:<id>` is [`Action::ReadRuns`], `session:<id>` is
//! [`Action::AccessSession`], `tenant` is [`Action::SubscribeTenant`]).
//!
//! Tenant isolation is not decided here: every port is already scoped to the caller's
//! tenant, so a record of another tenant never reaches this policy.

use sba_domain::{Principal, Role, TenantId, UserId};

/// Everything a caller can ask of the API, with the facts a decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Read and list runs, their steps, tool calls and events (and subscribe to `run:<id>`).
    ReadRuns,
    /// Start a run (owned by the caller).
    CreateRun,
    /// Cancel a run started by `creator`.
    CancelRun { creator: &'a UserId },
    /// Read or list sessions: the caller's own, or all of the tenant's when it
    /// [`sees_whole_tenant`].
    ReadSessions,
    /// Create a session, always owned by the caller.
    CreateSession,
    /// Change sessions: the caller's own, or all of the tenant's when it
    /// [`sees_whole_tenant`].
    UpdateSessions,
    /// Reach the one session owned by `owner` (read it, change it, subscribe to
    /// `session:<id>`). A refusal must look like a missing session (404), so that a user
    /// cannot probe for other users' sessions.
    AccessSession { owner: &'a UserId },
    /// Read documents and search the knowledge base.
    ReadKnowledge,
    /// Add documents to the knowledge base, which every agent run of the tenant may read.
    WriteKnowledge,
    /// Report a run's events (agent ingest).
    IngestEvents,
    /// Read the tenant's audit log.
    ReadAuditLog,
    /// Read the recorded system health, which only the platform's own tenant
    /// (`SBA_AUTH__PLATFORM_TENANT_ID`, `None` when not configured) may.
    ReadSystemHealth { platform_tenant: Option<TenantId> },
    /// Subscribe to the WebSocket `tenant` channel (every run event of the tenant).
    SubscribeTenant,
}

/// A refusal of the policy: the caller is verified and of the right tenant, but its role
/// (or its relation to the record) does not allow the action. The message says who may,
/// never anything about the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(&'static str);

impl Denied {
    /// Who may do what was refused, for the problem's `detail`.
    pub const fn reason(self) -> &'static str {
        self.0
    }
}

/// Whether `principal` may do `action`.
///
/// # Errors
/// [`Denied`] when the permission matrix refuses it.
pub fn authorize(principal: &Principal, action: Action<'_>) -> Result<(), Denied> {
    use Role::{Admin, Agent, Authenticated, Service};

    let role = principal.role;
    let (allowed, refusal) = match action {
        Action::ReadRuns => (true, "runs are readable by every user of the tenant"),
        Action::CreateRun => (matches!(role, Authenticated | Admin | Service), "agents cannot start runs"),
        Action::CancelRun { creator } => (
            match role {
                Admin | Service => true,
                Authenticated => *creator == principal.user_id,
                Agent => false,
            },
            "only the run's creator, tenant administrators and services may cancel a run",
        ),
        Action::ReadSessions | Action::CreateSession | Action::UpdateSessions => {
            (uses_sessions(role), "agents have no access to sessions")
        }
        Action::AccessSession { owner } => (
            uses_sessions(role) && (sees_whole_tenant(role) || *owner == principal.user_id),
            "the session does not exist",
        ),
        Action::ReadKnowledge => (true, "the knowledge base is readable by every user of the tenant"),
        Action::WriteKnowledge => (
            matches!(role, Admin | Service),
            "only tenant administrators and services may write the knowledge base",
        ),
        Action::IngestEvents => {
            (matches!(role, Agent | Service), "only agents and services may report events")
        }
        Action::ReadAuditLog => (role == Admin, "only tenant administrators may read the audit log"),
        Action::ReadSystemHealth { platform_tenant } => (
            matches!(role, Admin | Service) && Some(principal.tenant_id) == platform_tenant,
            "only platform administrators may read the system health history",
        ),
        Action::SubscribeTenant => {
            (role == Admin, "only tenant administrators may subscribe to the tenant channel")
        }
    };
    if allowed { Ok(()) } else { Err(Denied(refusal)) }
}

/// Whether `role` acts on every user's sessions of its tenant (admins and services), or
/// only on its own.
pub const fn sees_whole_tenant(role: Role) -> bool {
    matches!(role, Role::Admin | Role::Service)
}

/// Agents report on runs; they neither own nor read conversations.
const fn uses_sessions(role: Role) -> bool {
    !matches!(role, Role::Agent)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    const PLATFORM: TenantId = TenantId::from_uuid(Uuid::from_u128(1));
    const OTHER_TENANT: TenantId = TenantId::from_uuid(Uuid::from_u128(2));

    /// The columns of the table below, in order.
    const ROLES: [Role; 4] = [Role::Authenticated, Role::Admin, Role::Agent, Role::Service];

    fn caller(role: Role, tenant_id: TenantId) -> Principal {
        Principal { tenant_id, user_id: UserId::parse("me").unwrap(), role }
    }

    /// The permission matrix of `docs/security.md` ("## Permission matrix"), row by row:
    /// the action, then whether `authenticated`, `admin`, `agent`, `service` may do it
    /// (callers of the platform tenant: only system health depends on the tenant).
    #[test]
    fn every_role_may_do_exactly_what_the_documented_matrix_says() {
        let me = UserId::parse("me").unwrap();
        let someone_else = UserId::parse("someone-else").unwrap();
        let matrix: [(&str, Action<'_>, TenantId, [bool; 4]); 17] = [
            ("read runs", Action::ReadRuns, PLATFORM, [true, true, true, true]),
            ("start a run", Action::CreateRun, PLATFORM, [true, true, false, true]),
            ("cancel own run", Action::CancelRun { creator: &me }, PLATFORM, [true, true, false, true]),
            (
                "cancel another user's run",
                Action::CancelRun { creator: &someone_else },
                PLATFORM,
                [false, true, false, true],
            ),
            ("read/list sessions", Action::ReadSessions, PLATFORM, [true, true, false, true]),
            ("create a session", Action::CreateSession, PLATFORM, [true, true, false, true]),
            ("change sessions", Action::UpdateSessions, PLATFORM, [true, true, false, true]),
            ("own session", Action::AccessSession { owner: &me }, PLATFORM, [true, true, false, true]),
            (
                "another user's session",
                Action::AccessSession { owner: &someone_else },
                PLATFORM,
                [false, true, false, true],
            ),
            ("read/search knowledge", Action::ReadKnowledge, PLATFORM, [true, true, true, true]),
            ("write knowledge", Action::WriteKnowledge, PLATFORM, [false, true, false, true]),
            ("ingest events", Action::IngestEvents, PLATFORM, [false, false, true, true]),
            ("read the audit log", Action::ReadAuditLog, PLATFORM, [false, true, false, false]),
            (
                "system health, platform tenant",
                Action::ReadSystemHealth { platform_tenant: Some(PLATFORM) },
                PLATFORM,
                [false, true, false, true],
            ),
            (
                "system health, another tenant",
                Action::ReadSystemHealth { platform_tenant: Some(PLATFORM) },
                OTHER_TENANT,
                [false, false, false, false],
            ),
            (
                "system health, no platform tenant",
                Action::ReadSystemHealth { platform_tenant: None },
                PLATFORM,
                [false, false, false, false],
            ),
            ("subscribe to `tenant`", Action::SubscribeTenant, PLATFORM, [false, true, false, false]),
        ];
        for (name, action, tenant, allowed) in matrix {
            for (role, allowed) in ROLES.into_iter().zip(allowed) {
                assert_eq!(
                    authorize(&caller(role, tenant), action).is_ok(),
                    allowed,
                    "{role} may {}{name}",
                    if allowed { "" } else { "not " }
                );
            }
        }
    }

    #[test]
    fn a_refusal_says_who_may_and_nothing_about_the_record() {
        let other = UserId::parse("victim").unwrap();
        let denied = authorize(&caller(Role::Authenticated, PLATFORM), Action::CancelRun { creator: &other })
            .unwrap_err();
        assert!(denied.reason().contains("creator"), "{denied}");
        assert!(!denied.to_string().contains("victim"), "{denied}");
        let hidden =
            authorize(&caller(Role::Authenticated, PLATFORM), Action::AccessSession { owner: &other })
                .unwrap_err();
        assert_eq!(hidden.reason(), "the session does not exist");
    }

    #[test]
    fn only_admins_and_services_see_the_whole_tenants_sessions() {
        let whole: Vec<Role> = ROLES.into_iter().filter(|role| sees_whole_tenant(*role)).collect();
        assert_eq!(whole, [Role::Admin, Role::Service]);
    }
}
