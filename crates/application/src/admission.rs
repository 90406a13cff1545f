//! [`TenantAdmission`]: whether the tenant of a verified caller may use the service. Every
//! entry point applies this one rule (ADR 0012): the HTTP authentication middleware on each
//! request, and the WebSocket gateway at the handshake and on `op: auth`.
//!
//! An active tenant is admitted; a suspended one and one the directory does not know are
//! refused; when the directory cannot be read and nothing usable is cached the caller is
//! refused too, never guessed (a suspended tenant must not get through while the directory
//! is down). Lookups go through the [`TenantCache`]. Development mode's "any tenant named
//! by a valid token is accepted" is the embedded tenant directory's answer, not a rule
//! here: that directory knows every tenant as active.

use sba_domain::{Principal, Tenant, TenantId, TenantStatus};

use crate::ports::RepositoryError;
use crate::tenants::TenantCache;

/// A tenant that may use the service, with its settings (plan, quota, origins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedTenant(Tenant);

impl AdmittedTenant {
    pub const fn tenant(&self) -> &Tenant {
        &self.0
    }
}

/// Why a caller's tenant is refused.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// The tenant is suspended. Its settings are kept: a refused caller still counts
    /// against its tenant's quota.
    #[error("tenant {} is suspended", .0.id)]
    Suspended(Tenant),
    /// The directory does not know the tenant.
    #[error("tenant {0} is unknown")]
    Unknown(TenantId),
    /// The directory cannot be read and nothing is cached.
    #[error("the tenant directory is unavailable")]
    DirectoryUnavailable(#[source] RepositoryError),
}

/// Admits or refuses callers by their tenant.
#[derive(Debug, Clone)]
pub struct TenantAdmission {
    tenants: TenantCache,
}

impl TenantAdmission {
    pub const fn new(tenants: TenantCache) -> Self {
        Self { tenants }
    }

    /// Whether `principal`'s tenant may use the service now.
    ///
    /// # Errors
    /// [`AdmissionError::Suspended`], [`AdmissionError::Unknown`], or
    /// [`AdmissionError::DirectoryUnavailable`] when the directory fails and no previous
    /// answer is cached (logged here, once, with its cause).
    pub async fn admit(&self, principal: &Principal) -> Result<AdmittedTenant, AdmissionError> {
        match self.tenants.get(principal.tenant_id).await {
            Ok(Some(tenant)) if tenant.status == TenantStatus::Suspended => {
                Err(AdmissionError::Suspended(tenant))
            }
            Ok(Some(tenant)) => Ok(AdmittedTenant(tenant)),
            Ok(None) => Err(AdmissionError::Unknown(principal.tenant_id)),
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "tenant lookup failed; the caller is refused");
                Err(AdmissionError::DirectoryUnavailable(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sba_domain::{Role, UserId};
    use uuid::Uuid;

    use super::*;
    use crate::ports::{MockCache, MockTenantDirectory};
    use crate::testing::{MapCache, TestClock};

    fn principal(n: u128) -> Principal {
        Principal {
            tenant_id: TenantId::from_uuid(Uuid::from_u128(n)),
            user_id: UserId::parse("alice").unwrap(),
            role: Role::Authenticated,
        }
    }

    fn admission(directory: MockTenantDirectory) -> (TenantAdmission, Arc<TestClock>) {
        let clock = Arc::new(TestClock::at(1_800_000_000_000));
        let tenants = TenantCache::new(Arc::new(directory), Arc::new(MapCache::default()), clock.clone());
        (TenantAdmission::new(tenants), clock)
    }

    fn directory_answering(
        answer: fn(TenantId) -> Result<Option<Tenant>, RepositoryError>,
    ) -> MockTenantDirectory {
        let mut directory = MockTenantDirectory::new();
        directory.expect_find().returning(answer);
        directory
    }

    fn failure() -> RepositoryError {
        RepositoryError::Unexpected(anyhow::anyhow!("connection refused"))
    }

    #[tokio::test]
    async fn active_tenants_are_admitted_with_their_settings() {
        let (admission, _) = admission(directory_answering(|id| {
            Ok(Some(Tenant { plan: Some("pro".into()), ..Tenant::active(id) }))
        }));
        let admitted = admission.admit(&principal(1)).await.unwrap();
        assert_eq!(admitted.tenant().plan.as_deref(), Some("pro"));
        assert_eq!(admitted.tenant().id, principal(1).tenant_id);
    }

    #[tokio::test]
    async fn suspended_tenants_are_refused_and_keep_their_settings() {
        let (admission, _) = admission(directory_answering(|id| {
            Ok(Some(Tenant {
                status: TenantStatus::Suspended,
                plan: Some("pro".into()),
                ..Tenant::active(id)
            }))
        }));
        let Err(AdmissionError::Suspended(tenant)) = admission.admit(&principal(2)).await else {
            panic!("a suspended tenant is refused")
        };
        assert_eq!(tenant.plan.as_deref(), Some("pro"));
    }

    #[tokio::test]
    async fn tenants_the_directory_does_not_know_are_refused() {
        let (admission, _) = admission(directory_answering(|_| Ok(None)));
        let refused = admission.admit(&principal(3)).await;
        assert!(
            matches!(refused, Err(AdmissionError::Unknown(id)) if id == principal(3).tenant_id),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_directory_with_nothing_cached_refuses_rather_than_guesses() {
        let (admission, _) = admission(directory_answering(|_| Err(failure())));
        let refused = admission.admit(&principal(4)).await;
        assert!(matches!(refused, Err(AdmissionError::DirectoryUnavailable(_))), "{refused:?}");
    }

    #[tokio::test]
    async fn a_failing_directory_is_bridged_by_the_previous_answer() {
        let mut directory = MockTenantDirectory::new();
        let mut calls = 0;
        directory.expect_find().times(2).returning(move |id| {
            calls += 1;
            if calls == 1 { Ok(Some(Tenant::active(id))) } else { Err(failure()) }
        });
        let (admission, clock) = admission(directory);
        assert!(admission.admit(&principal(5)).await.is_ok());
        clock.advance(70_000); // past the entry's TTL: reloaded, and the reload fails
        assert!(admission.admit(&principal(5)).await.is_ok(), "the stale answer is served");
    }

    #[tokio::test]
    async fn a_refused_tenant_stays_refused_while_the_directory_is_down() {
        type Answer = fn(TenantId) -> Result<Option<Tenant>, RepositoryError>;
        let answers: [Answer; 2] =
            [|id| Ok(Some(Tenant { status: TenantStatus::Suspended, ..Tenant::active(id) })), |_| Ok(None)];
        for first in answers {
            let mut directory = MockTenantDirectory::new();
            let mut calls = 0;
            directory.expect_find().times(2).returning(move |id| {
                calls += 1;
                if calls == 1 { first(id) } else { Err(failure()) }
            });
            let (admission, clock) = admission(directory);
            let before = admission.admit(&principal(7)).await;
            clock.advance(70_000); // past the entry's TTL: reloaded, and the reload fails
            let during = admission.admit(&principal(7)).await;
            match (before, during) {
                (Err(AdmissionError::Suspended(_)), Err(AdmissionError::Suspended(_)))
                | (Err(AdmissionError::Unknown(_)), Err(AdmissionError::Unknown(_))) => {}
                other => panic!("the previous refusal stands: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_cache_that_answers_nothing_leaves_the_decision_to_the_directory() {
        let mut cache = MockCache::new();
        cache.expect_get().returning(|_| None);
        cache.expect_set().returning(|_, _| ());
        let mut directory = MockTenantDirectory::new();
        let mut calls = 0;
        directory.expect_find().times(2).returning(move |id| {
            calls += 1;
            let status = if calls == 1 { TenantStatus::Active } else { TenantStatus::Suspended };
            Ok(Some(Tenant { status, ..Tenant::active(id) }))
        });
        let clock = Arc::new(TestClock::at(1_800_000_000_000));
        let admission = TenantAdmission::new(TenantCache::new(Arc::new(directory), Arc::new(cache), clock));
        assert!(admission.admit(&principal(6)).await.is_ok());
        let refused = admission.admit(&principal(6)).await;
        assert!(matches!(refused, Err(AdmissionError::Suspended(_))), "{refused:?}");
    }
}
