//! [`PostgrestTenantDirectory`]: the `tenants` table, read with the service-role key
//! (platform work).

use async_trait::async_trait;
use sba_application::ports::{RepositoryError, TenantDirectory};
use sba_domain::{Tenant, TenantId};
use serde::de::IgnoredAny;

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

/// An origin as an element of a PostgreSQL array literal: double-quoted, with `"` and `\`
/// escaped, so no character of it can end the element or the array.
fn array_element(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[async_trait]
impl TenantDirectory for PostgrestTenantDirectory {
    async fn find(&self, id: TenantId) -> Result<Option<Tenant>, RepositoryError> {
        let call = Call::get("reading a tenant", TABLE).query("select", COLUMNS).query("id", eq(id));
        let rows: Vec<TenantRow> = self.client.fetch(Acting::Platform, call).await?;
        rows.into_iter().next().map(TenantRow::into_tenant).transpose()
    }

    async fn origin_is_registered(&self, origin: &str) -> Result<bool, RepositoryError> {
        // Stored origins are lower case (a check constraint), as browsers send them.
        let origin = origin.to_lowercase();
        let call = Call::get("looking up an origin", TABLE)
            .query("select", "id")
            .query("status", "eq.active")
            .query("cors_origins", format!("cs.{{{}}}", array_element(&origin)))
            .query("limit", "1");
        // Only whether a row came back matters.
        let rows: Vec<IgnoredAny> = self.client.fetch(Acting::Platform, call).await?;
        Ok(!rows.is_empty())
    }
}
