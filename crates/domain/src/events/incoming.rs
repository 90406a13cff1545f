//! What an agent sends to be appended to its run: its own id for the event and the
//! validated data. The server gives it a `seq` (ADR 0017).

use std::fmt;

use serde_json::Value;

use super::{EventData, EventKind};
use crate::ValidationError;
use crate::runs::RunStatus;

/// The producer's id for one event, unique within its run: an id seen before is a duplicate,
/// answered with the seq it got then.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProducerId(String);

impl ProducerId {
    pub const MAX_CHARS: usize = 128;

    /// # Errors
    /// When the value is empty, longer than 128 characters, or holds a control character.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let chars = value.chars().count();
        if (1..=Self::MAX_CHARS).contains(&chars) && !value.chars().any(char::is_control) {
            Ok(Self(value.to_owned()))
        } else {
            Err(ValidationError::new("id", "must be 1 to 128 characters without control characters"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProducerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ProducerId> for String {
    fn from(value: ProducerId) -> Self {
        value.0
    }
}

/// One event of an ingest batch, validated, before it has a seq.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    pub producer_id: ProducerId,
    pub data: EventData,
}

impl IncomingEvent {
    /// Parses one event of an ingest batch: the producer's `id`, the `kind` and its `data`.
    ///
    /// # Errors
    /// When the id or the kind is invalid, the data does not fit the kind, or the kind is one
    /// that only the server writes (`run.created` at creation, `run.cancelled` through the
    /// cancel route).
    pub fn parse(id: &str, kind: &str, data: Value) -> Result<Self, ValidationError> {
        let producer_id = ProducerId::parse(id)?;
        let kind: EventKind = kind.parse().map_err(|_| {
            ValidationError::new("kind", "is not an event kind (see the list of kinds in the API reference)")
        })?;
        if matches!(kind, EventKind::RunCreated | EventKind::RunCancelled) {
            return Err(ValidationError::new(
                "kind",
                format!(
                    "`{kind}` is written by the server only (cancel a run with POST /v1/runs/{{id}}/cancel)"
                ),
            ));
        }
        Ok(Self { producer_id, data: EventData::parse(kind, data)? })
    }

    pub const fn kind(&self) -> EventKind {
        self.data.kind()
    }
}

/// Why an ingest batch is refused as a whole: what is wrong with the event at `index`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {index}: {field} {message}")]
pub struct BatchRejection {
    /// The event's position in the batch, from 0.
    pub index: usize,
    /// The field (in the client's vocabulary) that was rejected.
    pub field: &'static str,
    pub message: String,
}

impl BatchRejection {
    pub fn new(index: usize, error: ValidationError) -> Self {
        Self { index, field: error.field, message: error.message }
    }
}

/// The status a run in `current` has after `batch`, by the run state machine: `run.started`,
/// `run.requires_action`, `run.completed` and `run.failed` move it; work (steps, tool calls,
/// usage) on a `queued` run starts it; nothing may follow an event that ends the run.
///
/// A `run.started` on a run already `in_progress` (or `run.requires_action` on one already
/// `requires_action`) leaves it as it is, so that a batch retried with new events after its
/// first part was accepted is not refused.
///
/// # Errors
/// The first event the state machine refuses, with its index. On a run that has already
/// ended every event is refused; the caller answers that as "run terminal", not as an
/// invalid batch.
pub fn status_after(current: RunStatus, batch: &[IncomingEvent]) -> Result<RunStatus, BatchRejection> {
    let mut status = current;
    for (index, event) in batch.iter().enumerate() {
        let kind = event.kind();
        let target = match kind {
            EventKind::RunStarted | EventKind::RunRequiresAction => {
                let target = if kind == EventKind::RunStarted {
                    RunStatus::InProgress
                } else {
                    RunStatus::RequiresAction
                };
                if status == target {
                    continue;
                }
                target
            }
            _ => match kind.ending_status() {
                Some(ending) => ending,
                None if status == RunStatus::Queued => RunStatus::InProgress,
                None if status.is_terminal() => RunStatus::InProgress,
                None => continue,
            },
        };
        status.check_transition(target).map_err(|refused| {
            BatchRejection::new(
                index,
                ValidationError::new(
                    "kind",
                    format!(
                        "`{kind}` is not allowed now: the run would go from {} to {}",
                        refused.from, refused.to
                    ),
                ),
            )
        })?;
        status = target;
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, data: Value) -> IncomingEvent {
        IncomingEvent::parse(&format!("id-{kind}"), kind, data).unwrap()
    }

    fn started() -> IncomingEvent {
        event("run.started", json!({}))
    }

    fn delta() -> IncomingEvent {
        event("step.delta", json!({"step_id": "s1", "text": "hi"}))
    }

    fn completed() -> IncomingEvent {
        event("run.completed", json!({"output": "done"}))
    }

    #[test]
    fn parsing_names_the_field_that_is_wrong_and_refuses_server_only_kinds() {
        assert_eq!(IncomingEvent::parse("", "run.started", json!({})).unwrap_err().field, "id");
        assert_eq!(IncomingEvent::parse("a", "run.teleported", json!({})).unwrap_err().field, "kind");
        assert_eq!(IncomingEvent::parse("a", "step.delta", json!({"text": 1})).unwrap_err().field, "data");
        for server_only in ["run.created", "run.cancelled"] {
            let refused = IncomingEvent::parse("a", server_only, json!({})).unwrap_err();
            assert_eq!(refused.field, "kind");
            assert!(refused.message.contains("server"), "{}", refused.message);
        }
        assert_eq!(
            IncomingEvent::parse("a", "run.started", json!({})).unwrap().kind(),
            EventKind::RunStarted
        );
    }

    #[test]
    fn a_batch_moves_the_run_through_its_state_machine() {
        assert_eq!(status_after(RunStatus::Queued, &[]), Ok(RunStatus::Queued));
        assert_eq!(status_after(RunStatus::Queued, &[started(), delta()]), Ok(RunStatus::InProgress));
        assert_eq!(
            status_after(RunStatus::Queued, &[delta()]),
            Ok(RunStatus::InProgress),
            "work starts a run"
        );
        assert_eq!(status_after(RunStatus::Queued, &[delta(), completed()]), Ok(RunStatus::Completed));
        assert_eq!(
            status_after(RunStatus::InProgress, &[started(), delta()]),
            Ok(RunStatus::InProgress),
            "a repeated run.started is accepted (a retried batch)"
        );
        let failed = event("run.failed", json!({"error": {"code": "x", "message": "y"}}));
        assert_eq!(status_after(RunStatus::RequiresAction, &[failed]), Ok(RunStatus::Failed));
        let waiting = || event("run.requires_action", json!({}));
        assert_eq!(status_after(RunStatus::InProgress, &[waiting()]), Ok(RunStatus::RequiresAction));
        assert_eq!(
            status_after(RunStatus::InProgress, &[waiting(), started(), completed()]),
            Ok(RunStatus::Completed)
        );
    }

    #[test]
    fn an_illegal_move_is_refused_with_the_index_of_its_event() {
        let refused = status_after(RunStatus::Queued, &[completed()]).unwrap_err();
        assert_eq!((refused.index, refused.field), (0, "kind"));
        assert!(refused.message.contains("queued to completed"), "{}", refused.message);
        let after_the_end =
            status_after(RunStatus::InProgress, &[delta(), completed(), delta()]).unwrap_err();
        assert_eq!(after_the_end.index, 2, "nothing may follow the event that ends the run");
        assert_eq!(status_after(RunStatus::Completed, &[delta()]).unwrap_err().index, 0);
        assert_eq!(status_after(RunStatus::Cancelled, &[started()]).unwrap_err().index, 0);
    }

    #[test]
    fn producer_ids_are_one_to_128_characters_without_control_characters() {
        assert_eq!(ProducerId::parse("evt-1").unwrap().as_str(), "evt-1");
        assert!(ProducerId::parse(&"é".repeat(128)).is_ok(), "characters, not bytes");
        assert!(ProducerId::parse("").is_err());
        assert!(ProducerId::parse(&"a".repeat(129)).is_err());
        assert!(ProducerId::parse("a\nb").is_err());
        assert_eq!(ProducerId::parse("").unwrap_err().field, "id");
    }

    #[test]
    fn a_producer_id_reads_back_as_it_was_given() {
        let id = ProducerId::parse("evt-1").unwrap();
        assert_eq!(id.to_string(), "evt-1");
        assert_eq!(String::from(id), "evt-1");
    }
}
