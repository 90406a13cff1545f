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

    /// Whether any active tenant lists `origin` among its allowed origins. Answers CORS
    /// preflights, which carry no token and so name no tenant.
    ///
    /// # Errors
    /// `Unexpected` when the directory cannot be read.
    async fn origin_is_registered(&self, origin: &str) -> Result<bool, RepositoryError>;
}
