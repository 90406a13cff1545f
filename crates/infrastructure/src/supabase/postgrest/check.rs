//! Readiness of PostgREST.

use async_trait::async_trait;
use serde::de::IgnoredAny;

use super::client::{Acting, Call, PostgrestClient};
use super::tenants::TABLE;

/// Readiness of PostgREST and the database behind it (`supabase` in `/readyz`): one
/// platform read of at most one tenant id.
#[derive(Debug, Clone)]
pub(super) struct PostgrestCheck {
    client: PostgrestClient,
}

impl PostgrestCheck {
    pub(super) const fn new(client: PostgrestClient) -> Self {
        Self { client }
    }
}

#[async_trait]
impl sba_application::ports::DependencyCheck for PostgrestCheck {
    fn component(&self) -> &'static str {
        "supabase"
    }

    async fn check(&self) -> anyhow::Result<()> {
        let call = Call::get("checking readiness", TABLE).query("select", "id").query("limit", "1");
        let _: Vec<IgnoredAny> = self.client.fetch(Acting::Platform, call).await?;
        Ok(())
    }
}
