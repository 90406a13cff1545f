//! Idempotency keys: a retried mutation answers like the original instead of running twice.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_domain::{TenantId, UserId};
use serde_json::Value;

use super::RepositoryError;

/// The response a completed request gave, replayed for retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Value,
}

/// What reserving a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The key was free (or expired) and is now reserved for this request.
    Reserved,
    /// A request with this key is still being handled.
    InProgress { request_hash: String },
    /// A request with this key completed; its response can be replayed.
    Completed { request_hash: String, response: StoredResponse },
}

/// Idempotency keys per tenant and user, kept until they expire.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: std::fmt::Debug + Send + Sync + 'static {
    /// Reserves `key` for a request whose body hashes to `request_hash`, unless an unexpired
    /// reservation exists, which is returned instead. Atomic: of two concurrent reservations
    /// of one key, exactly one gets `Reserved`.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn reserve(
        &self,
        tenant: TenantId,
        user: &UserId,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Reservation, RepositoryError>;

    /// Stores the response of the request that holds the reservation.
    ///
    /// # Errors
    /// `NotFound` when the reservation is gone; `Unexpected` on storage failure.
    async fn complete(
        &self,
        tenant: TenantId,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), RepositoryError>;

    /// Drops a reservation whose request failed, so that a retry can run.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn release(&self, tenant: TenantId, user: &UserId, key: &str) -> Result<(), RepositoryError>;

    /// Deletes every key expired at `now`; returns how many.
    ///
    /// # Errors
    /// `Unexpected` on storage failure.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, RepositoryError>;
}
