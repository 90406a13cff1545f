//! The system clock and id generator.

use chrono::{DateTime, SubsecRound, Utc};
use sba_application::ports::{Clock, IdGenerator};
use uuid::Uuid;

/// Wall-clock time, truncated to microseconds: the precision PostgreSQL stores, so a value
/// reads back exactly as it was written.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// Time-ordered UUIDv7 ids: they index well and sort by creation.
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidV7Generator;

impl IdGenerator for UuidV7Generator {
    fn new_id(&self) -> Uuid {
        Uuid::now_v7()
    }
}
