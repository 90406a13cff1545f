//! [`StaticTenantDirectory`]: the embedded `TenantDirectory`, filled from configuration
//! (`SBA_CORS__TENANT_ORIGINS`). It stands in until the Supabase `tenants` table serves the
//! port; every tenant it is not told about counts as active with no origins of its own.

use std::collections::HashMap;

use async_trait::async_trait;
use sba_application::ports::{RepositoryError, TenantDirectory};
use sba_domain::{Tenant, TenantId, TenantStatus};

/// Tenants known from configuration.
#[derive(Debug, Clone, Default)]
pub struct StaticTenantDirectory {
    tenants: HashMap<TenantId, Tenant>,
}

impl StaticTenantDirectory {
    /// A directory where each listed tenant allows its listed origins.
    pub fn new(origins: impl IntoIterator<Item = (TenantId, Vec<String>)>) -> Self {
        let tenants = origins
            .into_iter()
            .map(|(id, allowed_origins)| (id, Tenant { id, status: TenantStatus::Active, allowed_origins }))
            .collect();
        Self { tenants }
    }
}

#[async_trait]
impl TenantDirectory for StaticTenantDirectory {
    async fn find(&self, id: TenantId) -> Result<Option<Tenant>, RepositoryError> {
        // Development mode accepts any tenant named by a valid token (ARCHITECTURE §7).
        Ok(Some(self.tenants.get(&id).cloned().unwrap_or(Tenant {
            id,
            status: TenantStatus::Active,
            allowed_origins: Vec::new(),
        })))
    }

    async fn origin_is_registered(&self, origin: &str) -> Result<bool, RepositoryError> {
        Ok(self.tenants.values().any(|t| t.status == TenantStatus::Active && t.allows_origin(origin)))
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[tokio::test]
    async fn listed_tenants_allow_their_origins_and_unknown_tenants_exist_without_origins() {
        let a = TenantId::from_uuid(Uuid::from_u128(0xa));
        let b = TenantId::from_uuid(Uuid::from_u128(0xb));
        let directory = StaticTenantDirectory::new([(a, vec!["https://a.test".to_owned()])]);
        assert!(directory.find(a).await.unwrap().unwrap().allows_origin("https://a.test"));
        let unknown = directory.find(b).await.unwrap().unwrap();
        assert_eq!(unknown.status, TenantStatus::Active);
        assert!(unknown.allowed_origins.is_empty());
        assert!(directory.origin_is_registered("https://a.test").await.unwrap());
        assert!(!directory.origin_is_registered("https://b.test").await.unwrap());
    }
}
