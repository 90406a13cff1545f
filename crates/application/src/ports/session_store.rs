//! Storage of sessions (Supabase `sessions`, or the embedded store).

use async_trait::async_trait;
use sba_domain::{Session, SessionId, SessionUpdate};

use super::RepositoryError;
use crate::context::Caller;
use crate::pagination::{Page, PageRequest};

/// Sessions of the caller's tenant. Every method is scoped to `caller.tenant`: a session of
/// another tenant is indistinguishable from a missing one.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SessionStore: std::fmt::Debug + Send + Sync + 'static {
    /// Stores a new session (its id, tenant, user and times are set by the caller).
    ///
    /// # Errors
    /// `Conflict` when the id exists; `Unexpected` on storage failure.
    async fn create(&self, caller: &Caller, session: &Session) -> Result<(), RepositoryError>;

    /// The session `id`, or `None` when it does not exist for the caller's tenant.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn get(&self, caller: &Caller, id: SessionId) -> Result<Option<Session>, RepositoryError>;

    /// One page of the tenant's sessions, newest first (by creation time, then id), resuming
    /// after a `Cursor::Time` of a previous page.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn list(&self, caller: &Caller, page: PageRequest) -> Result<Page<Session>, RepositoryError>;

    /// Applies `update` (with `updated_at` = `now`) and returns the session as stored, or
    /// `None` when it does not exist for the caller's tenant.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn update(
        &self,
        caller: &Caller,
        id: SessionId,
        update: &SessionUpdate,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Session>, RepositoryError>;
}
