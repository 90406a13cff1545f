//! Run events: the append-only, per-run sequence of everything that happens to a run.
//!
//! Each event has a `seq` (1, 2, 3, … per run, no gaps), a kind and kind-specific data. The
//! data is validated into [`EventData`] before anything is stored, so a batch with one bad
//! event is rejected as a whole.

mod data;
mod incoming;
mod partition;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use data::{EventData, StepRef, ToolCallRef};
pub use incoming::{BatchRejection, IncomingEvent, ProducerId, status_after};
pub use partition::partition;

use crate::ids::{RunId, TenantId};
use crate::runs::RunStatus;

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "run.created")]
    RunCreated,
    #[serde(rename = "run.started")]
    RunStarted,
    #[serde(rename = "run.requires_action")]
    RunRequiresAction,
    #[serde(rename = "run.completed")]
    RunCompleted,
    #[serde(rename = "run.failed")]
    RunFailed,
    #[serde(rename = "run.cancelled")]
    RunCancelled,
    #[serde(rename = "step.created")]
    StepCreated,
    #[serde(rename = "step.delta")]
    StepDelta,
    #[serde(rename = "step.completed")]
    StepCompleted,
    #[serde(rename = "tool_call.started")]
    ToolCallStarted,
    #[serde(rename = "tool_call.completed")]
    ToolCallCompleted,
    #[serde(rename = "usage.reported")]
    UsageReported,
}

/// A string that names no event kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind")]
pub struct UnknownEventKind;

impl EventKind {
    pub const ALL: [Self; 12] = [
        Self::RunCreated,
        Self::RunStarted,
        Self::RunRequiresAction,
        Self::RunCompleted,
        Self::RunFailed,
        Self::RunCancelled,
        Self::StepCreated,
        Self::StepDelta,
        Self::StepCompleted,
        Self::ToolCallStarted,
        Self::ToolCallCompleted,
        Self::UsageReported,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RunCreated => "run.created",
            Self::RunStarted => "run.started",
            Self::RunRequiresAction => "run.requires_action",
            Self::RunCompleted => "run.completed",
            Self::RunFailed => "run.failed",
            Self::RunCancelled => "run.cancelled",
            Self::StepCreated => "step.created",
            Self::StepDelta => "step.delta",
            Self::StepCompleted => "step.completed",
            Self::ToolCallStarted => "tool_call.started",
            Self::ToolCallCompleted => "tool_call.completed",
            Self::UsageReported => "usage.reported",
        }
    }
}

impl EventKind {
    /// The status a run ends in with this event, for the kinds that end a run
    /// (`run.completed`, `run.failed`, `run.cancelled`); `None` for every other kind.
    pub const fn ending_status(self) -> Option<RunStatus> {
        match self {
            Self::RunCompleted => Some(RunStatus::Completed),
            Self::RunFailed => Some(RunStatus::Failed),
            Self::RunCancelled => Some(RunStatus::Cancelled),
            _ => None,
        }
    }

    /// Whether this event ends its run; nothing may follow it in the run's sequence.
    pub const fn is_terminal(self) -> bool {
        self.ending_status().is_some()
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == value).ok_or(UnknownEventKind)
    }
}

/// One stored event of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent {
    pub run_id: RunId,
    pub tenant_id: TenantId,
    /// Position in the run's sequence: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// The producer's id for the event, used to answer duplicates; `None` for server events.
    pub producer_id: Option<String>,
    pub data: EventData,
    pub created_at: DateTime<Utc>,
}

impl RunEvent {
    /// An event the server writes itself (no producer id).
    pub const fn server(
        run_id: RunId,
        tenant_id: TenantId,
        seq: u64,
        data: EventData,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self { run_id, tenant_id, seq, producer_id: None, data, created_at }
    }

    /// `run.created`, seq 1 of `run`.
    pub const fn created(run: &crate::runs::AgentRun) -> Self {
        Self::server(run.id, run.tenant_id, 1, EventData::RunCreated, run.created_at)
    }

    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }

    /// The event's `data` member as clients see it.
    pub fn data_json(&self) -> Value {
        self.data.to_json()
    }

    /// The event as clients see it.
    pub fn view(&self) -> EventView {
        EventView {
            seq: self.seq,
            run_id: self.run_id,
            kind: self.kind(),
            data: self.data_json(),
            created_at: self.created_at,
        }
    }

    /// The JSON text clients see for the event, byte for byte what REST lists, WebSocket
    /// frames and the live bus carry.
    ///
    /// # Errors
    /// Only if `serde_json` cannot write the event's data (it always can: every value is JSON).
    pub fn to_client_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(&self.view())
    }
}

/// An event as clients see it: `{"seq","run_id","kind","data","created_at"}`, in REST lists,
/// WebSocket frames and the live bus alike. The one serialization of an event for clients,
/// so that no two of them can drift apart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    pub seq: u64,
    pub run_id: RunId,
    pub kind: EventKind,
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kind_names_round_trip_and_match_display_and_serde() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert!("run.exploded".parse::<EventKind>().is_err());
    }

    #[test]
    fn exactly_the_ending_kinds_are_terminal_with_a_terminal_status() {
        let terminal: Vec<_> = EventKind::ALL.into_iter().filter(|k| k.is_terminal()).collect();
        assert_eq!(terminal, [EventKind::RunCompleted, EventKind::RunFailed, EventKind::RunCancelled]);
        for kind in terminal {
            assert!(kind.ending_status().is_some_and(RunStatus::is_terminal));
        }
    }

    #[test]
    fn clients_see_an_event_as_seq_run_id_kind_data_and_created_at() {
        let run_id = RunId::from_uuid(uuid::Uuid::from_u128(7));
        let data = EventData::parse(EventKind::StepDelta, json!({"step_id": "s1", "text": "Hel"})).unwrap();
        let created_at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let event =
            RunEvent::server(run_id, TenantId::from_uuid(uuid::Uuid::from_u128(8)), 3, data, created_at);
        assert_eq!(event.data_json(), json!({"step_id": "s1", "text": "Hel"}));
        let text = event.to_client_json().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({
                "seq": 3,
                "run_id": "00000000-0000-0000-0000-000000000007",
                "kind": "step.delta",
                "data": {"step_id": "s1", "text": "Hel"},
                "created_at": "2027-01-15T08:00:00Z",
            })
        );
    }
}
