//! An agent's batch as it arrives: its events before validation, and how each is parsed or
//! refused (by index, so the agent knows which event to fix).

use sba_domain::ValidationError;
use sba_domain::events::{BatchRejection, IncomingEvent};
use serde_json::Value;

/// One event as the agent sent it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    pub id: String,
    pub kind: String,
    pub data: Value,
}

/// Every event of the batch parsed, or the first invalid one's index and reason.
pub(super) fn parse_batch(batch: Vec<RawEvent>) -> Result<Vec<IncomingEvent>, BatchRejection> {
    batch
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            IncomingEvent::parse(&raw.id, &raw.kind, raw.data)
                .map_err(|error| BatchRejection::new(index, error))
        })
        .collect()
}

/// The rejection of an event that is not a JSON object with `id`, `kind` and `data` (the
/// route's decoder uses it, so both kinds of invalid event read the same).
pub fn malformed_event(index: usize, message: impl Into<String>) -> BatchRejection {
    BatchRejection::new(index, ValidationError::new("event", message))
}
