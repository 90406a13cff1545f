//! [`PostgrestTenantDirectory`]: the `tenants` table, read with the service-role key
//! (platform work).

use async_trait::async_trait;
use sba_application::ports::{RepositoryError, TenantDirectory};
use sba_domain::{Tenant, TenantId};
use serde::Deserialize;

use super::client::{Acting, Call, PostgrestClient};
use super::eq;
use crate::tenant_data::TenantRow;

pub(super) const TABLE: &str = "tenants";
const COLUMNS: &str = "id,status,cors_origins,plan,rate_limit_requests,rate_limit_window_secs";

/// Tenants from Supabase's `tenants` table. Platform work: requests carry the service-role
/// key, never a user's token.
#[derive(Debug, Clone)]
pub struct PostgrestTenantDirectory {
    client: PostgrestClient,
}

impl PostgrestTenantDirectory {
    pub(super) const fn new(client: PostgrestClient) -> Self {
        Self { client }
    }
}

/// Tenants read per request when collecting the registered origins: PostgREST may cap a
/// response (`db-max-rows`), so the rows are paged.
const ORIGIN_PAGE: usize = 1000;

/// The origins column of a `tenants` row.
#[derive(Deserialize)]
struct OriginsRow {
    cors_origins: Vec<String>,
}

#[async_trait]
impl TenantDirectory for PostgrestTenantDirectory {
    async fn find(&self, id: TenantId) -> Result<Option<Tenant>, RepositoryError> {
        let call = Call::get("reading a tenant", TABLE).query("select", COLUMNS).query("id", eq(id));
        let rows: Vec<TenantRow> = self.client.fetch(Acting::Platform, call).await?;
        rows.into_iter().next().map(TenantRow::into_tenant).transpose()
    }

    async fn registered_origins(&self) -> Result<Vec<String>, RepositoryError> {
        let mut origins = Vec::new();
        let mut offset = 0_usize;
        loop {
            let call = Call::get("reading the registered origins", TABLE)
                .query("select", "cors_origins")
                .query("status", "eq.active")
                .query("cors_origins", "neq.{}")
                .query("order", "id")
                .query("limit", ORIGIN_PAGE.to_string())
                .query("offset", offset.to_string());
            let rows: Vec<OriginsRow> = self.client.fetch(Acting::Platform, call).await?;
            let last = rows.len() < ORIGIN_PAGE;
            offset += rows.len();
            // Stored origins are lower case (a check constraint), as browsers send them.
            origins.extend(rows.into_iter().flat_map(|row| row.cors_origins).map(|o| o.to_lowercase()));
            if last {
                break;
            }
        }
        Ok(origins)
    }
}
