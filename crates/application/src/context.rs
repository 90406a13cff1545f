//! What a use case knows about the request it serves.

use std::fmt;
use std::sync::Arc;

use sba_domain::{Principal, Role, TenantId, UserId};

/// The caller's verified bearer token, kept so that adapters acting on the user's behalf
/// (PostgREST, where row-level security reads the token's claims) can forward it. Its
/// `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    pub fn new(token: &str) -> Self {
        Self(Arc::from(token))
    }

    /// The token itself: only for the `Authorization` header of a request on the user's
    /// behalf, never for a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// The verified caller plus the request facts that audit entries record.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub principal: Principal,
    /// The client's address as seen by the server (or the trusted proxy chain).
    pub ip: Option<String>,
    /// The server's own id of this request: made by the server, unique, never the client's.
    pub request_id: String,
    /// The well-formed `X-Request-Id` the client sent, if any (audit entries keep it beside
    /// `request_id`, never in its place).
    pub client_request_id: Option<String>,
    /// The bearer token the principal was verified from (`None` in tests and for work that
    /// no token started).
    pub token: Option<AccessToken>,
}

impl RequestContext {
    /// Who tenant-data ports act for.
    pub fn caller(&self) -> Caller {
        Caller {
            tenant: self.principal.tenant_id,
            user: self.principal.user_id.clone(),
            role: self.principal.role,
            token: self.token.clone(),
        }
    }
}

/// Whom a tenant-data port (sessions, knowledge) acts for: every read and write is scoped to
/// `tenant`, and to `user`'s own records unless [`Caller::sees_whole_tenant`]; an adapter
/// that lets the database enforce it (PostgREST with row-level security) forwards `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub user: UserId,
    pub role: Role,
    pub token: Option<AccessToken>,
}

impl Caller {
    /// Whether the caller acts on every user's records of its tenant (sessions), rather
    /// than on its own only: the permission matrix decides ([`crate::authorization`]).
    pub fn sees_whole_tenant(&self) -> bool {
        crate::authorization::sees_whole_tenant(self.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_token_never_shows_in_debug_output() {
        let token = AccessToken::new("eyJhbGciOiJIUzI1NiJ9.secret.sig");
        assert_eq!(format!("{token:?}"), "AccessToken(<redacted>)");
        assert_eq!(token.expose(), "eyJhbGciOiJIUzI1NiJ9.secret.sig");
    }

    #[test]
    fn a_caller_acts_on_the_whole_tenant_only_as_an_admin_or_a_service() {
        for (role, whole_tenant) in
            [(Role::Authenticated, false), (Role::Admin, true), (Role::Agent, false), (Role::Service, true)]
        {
            let tenant_id = TenantId::from_uuid(uuid::Uuid::from_u128(1));
            let ctx = RequestContext {
                principal: Principal { tenant_id, user_id: UserId::parse("alice").unwrap(), role },
                ip: None,
                request_id: "r-1".into(),
                client_request_id: None,
                token: Some(AccessToken::new("t")),
            };
            let caller = ctx.caller();
            assert_eq!(caller.sees_whole_tenant(), whole_tenant, "{role}");
            assert_eq!(
                (caller.tenant, caller.user.as_str(), caller.role, caller.token),
                (tenant_id, "alice", role, Some(AccessToken::new("t")))
            );
        }
    }
}
