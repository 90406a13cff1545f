//! Who may do what inside a tenant: the permission matrix of `docs/security.md`, in one
//! place. Services ask it before they act; adapters apply the record scope it decides
//! (through [`crate::context::Caller::sees_whole_tenant`]).

use sba_domain::Role;

/// Whether `role` acts on every user's sessions of its tenant (admins and services), or
/// only on its own.
pub const fn sees_whole_tenant(role: Role) -> bool {
    matches!(role, Role::Admin | Role::Service)
}
