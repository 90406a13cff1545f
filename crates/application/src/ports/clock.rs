//! Time and identity sources, as ports so that tests can fix them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The current time.
#[cfg_attr(test, mockall::automock)]
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// New unique identifiers (time-ordered UUIDv7 in production).
#[cfg_attr(test, mockall::automock)]
pub trait IdGenerator: std::fmt::Debug + Send + Sync + 'static {
    fn new_id(&self) -> Uuid;
}
