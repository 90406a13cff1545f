//! [`StaticTenantDirectory`]: the embedded `TenantDirectory`, filled from configuration
//! (`SBA_CORS__TENANT_ORIGINS`, `SBA_TENANTS__PLANS`, `SBA_TENANTS__RATE_LIMITS`). It stands
//! in until the Supabase `tenants` table serves the port; every tenant it is not told about
//! counts as active with no settings of its own.

use std::collections::HashMap;

use async_trait::async_trait;
use sba_application::ports::{RepositoryError, TenantDirectory};
use sba_domain::{Tenant, TenantId, TenantStatus};

use crate::config::{CorsSettings, TenantSettings};

/// Tenants known from configuration.
#[derive(Debug, Clone, Default)]
pub struct StaticTenantDirectory {
    tenants: HashMap<TenantId, Tenant>,
}

impl StaticTenantDirectory {
    /// A directory of exactly these tenants.
    pub fn new(tenants: impl IntoIterator<Item = Tenant>) -> Self {
        Self { tenants: tenants.into_iter().map(|t| (t.id, t)).collect() }
    }

    /// The tenants the settings describe, merged by id.
    pub fn from_settings(cors: &CorsSettings, settings: &TenantSettings) -> Self {
        let mut tenants: HashMap<TenantId, Tenant> = HashMap::new();
        for (id, origins) in &cors.tenant_origins {
            tenants.entry(*id).or_insert_with(|| Tenant::active(*id)).allowed_origins.clone_from(origins);
        }
        for (id, plan) in &settings.plans {
            tenants.entry(*id).or_insert_with(|| Tenant::active(*id)).plan = Some(plan.clone());
        }
        for (id, quota) in &settings.rate_limits {
            tenants.entry(*id).or_insert_with(|| Tenant::active(*id)).rate_limit = Some(*quota);
        }
        Self { tenants }
    }
}

#[async_trait]
impl TenantDirectory for StaticTenantDirectory {
    async fn find(&self, id: TenantId) -> Result<Option<Tenant>, RepositoryError> {
        // Development mode accepts any tenant named by a valid token (docs/architecture.md,
        // "Public contract").
        Ok(Some(self.tenants.get(&id).cloned().unwrap_or_else(|| Tenant::active(id))))
    }

    async fn registered_origins(&self) -> Result<Vec<String>, RepositoryError> {
        Ok(self
            .tenants
            .values()
            .filter(|t| t.status == TenantStatus::Active)
            .flat_map(|t| t.allowed_origins.iter().map(|o| o.to_ascii_lowercase()))
            .collect())
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
        let directory = StaticTenantDirectory::new([Tenant {
            allowed_origins: vec!["https://a.test".to_owned()],
            ..Tenant::active(a)
        }]);
        assert!(directory.find(a).await.unwrap().unwrap().allows_origin("https://a.test"));
        let unknown = directory.find(b).await.unwrap().unwrap();
        assert_eq!(unknown.status, TenantStatus::Active);
        assert!(unknown.allowed_origins.is_empty());
        assert_eq!(directory.registered_origins().await.unwrap(), ["https://a.test"]);
    }
}
