//! The recorded history of dependency health.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::RepositoryError;
use crate::pagination::{Page, PageRequest};

/// One observation of one dependency (platform data: no tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRecord {
    pub id: Uuid,
    pub component: String,
    pub up: bool,
    pub latency_ms: u64,
    /// Why it was down, for operators (never shown to tenants).
    pub detail: Option<String>,
    pub checked_at: DateTime<Utc>,
}

/// Append-only health history.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait HealthLog: std::fmt::Debug + Send + Sync + 'static {
    /// Appends observations.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn record(&self, records: &[HealthRecord]) -> Result<(), RepositoryError>;

    /// One page of the history, newest first, resuming after a `Cursor::Time`.
    ///
    /// # Errors
    /// `Unexpected` on storage failure or a cursor of another listing.
    async fn list(&self, page: PageRequest) -> Result<Page<HealthRecord>, RepositoryError>;
}
