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
    use sba_domain::{Principal, Role, TenantId, UserId};
    use uuid::Uuid;

    use super::*;
    use crate::ports::MockUsageLedger;

    fn ctx() -> RequestContext {
        RequestContext {
            principal: Principal {
                tenant_id: TenantId::from_uuid(Uuid::from_u128(1)),
                user_id: UserId::parse("u").unwrap(),
                role: Role::Authenticated,
            },
            ip: None,
            request_id: "r".into(),
            client_request_id: None,
            token: None,
        }
    }

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
