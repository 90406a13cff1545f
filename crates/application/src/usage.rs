//! Usage summaries for the caller's tenant.

use std::sync::Arc;

use crate::RequestContext;
use crate::ports::{RepositoryError, UsageBucket, UsageGrouping, UsageLedger, UsageRange};

/// Reads of the caller's tenant's usage.
#[derive(Clone, Debug)]
pub struct UsageQueries {
    ledger: Arc<dyn UsageLedger>,
}

impl UsageQueries {
    pub fn new(ledger: Arc<dyn UsageLedger>) -> Self {
        Self { ledger }
    }

    /// Usage of the caller's tenant within `range`, per `group_by` key.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    pub async fn summary(
        &self,
        ctx: &RequestContext,
        range: UsageRange,
        group_by: UsageGrouping,
    ) -> Result<Vec<UsageBucket>, RepositoryError> {
        self.ledger.summary(ctx.principal.tenant_id, range, group_by).await
    }
}
