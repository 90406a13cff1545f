//! The platform's directory of tenants (Supabase `tenants`, or the embedded one).

use async_trait::async_trait;
use sba_domain::{Tenant, TenantId};

use super::RepositoryError;

/// Platform lookups of tenants. Adapters read with platform credentials: this is system
/// work, never a user's data.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TenantDirectory: std::fmt::Debug + Send + Sync + 'static {
    /// The tenant `id`, or `None` when the directory does not know it.
    ///
    /// # Errors
    /// `Unexpected` when the directory cannot be read.
    async fn find(&self, id: TenantId) -> Result<Option<Tenant>, RepositoryError>;

    /// Every origin some active tenant lists among its allowed origins, in lower case (in
    /// any order, possibly repeated). CORS keeps this set in memory and refreshes it per
    /// interval, so a request's origin, which the client chooses, never causes a lookup.
    ///
    /// # Errors
    /// `Unexpected` when the directory cannot be read (all of it).
    async fn registered_origins(&self) -> Result<Vec<String>, RepositoryError>;
}
