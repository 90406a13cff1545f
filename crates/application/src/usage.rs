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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use mockall::predicate::eq;

    use super::*;
    use crate::ports::MockUsageLedger;

    // User `u` (authenticated) of tenant 1.
    use crate::testing::user_context as ctx;

    fn november() -> UsageRange {
        let from = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        UsageRange::new(from, from + chrono::TimeDelta::days(30)).unwrap()
    }

    #[tokio::test]
    async fn a_ledger_outage_is_returned_as_unexpected_not_as_an_empty_summary() {
        let mut ledger = MockUsageLedger::new();
        ledger
            .expect_summary()
            .with(eq(ctx().principal.tenant_id), eq(november()), eq(UsageGrouping::Model))
            .times(1)
            .returning(|_, _, _| Err(RepositoryError::Unexpected(anyhow::anyhow!("statement timeout"))));
        let failed =
            UsageQueries::new(Arc::new(ledger)).summary(&ctx(), november(), UsageGrouping::Model).await;
        assert!(matches!(failed, Err(RepositoryError::Unexpected(_))), "{failed:?}");
    }
}
