//! Run steps and tool calls: the units of work an agent reports inside a run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::{StepRef, ToolCallRef};
use crate::ids::{RunId, TenantId};
use crate::runs::RunError;
use crate::usage::Usage;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    MessageCreation,
    ToolCalls,
}

impl StepType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MessageCreation => "message_creation",
            Self::ToolCalls => "tool_calls",
        }
    }

    pub fn from_stored(value: &str) -> Option<Self> {
        [Self::MessageCreation, Self::ToolCalls].into_iter().find(|t| t.as_str() == value)
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    InProgress,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl StepStatus {
    pub const ALL: [Self; 5] =
        [Self::InProgress, Self::Completed, Self::Failed, Self::Cancelled, Self::Expired];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn from_stored(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub tenant_id: TenantId,
    pub run_id: RunId,
    pub step_id: StepRef,
    pub step_type: StepType,
    pub status: StepStatus,
    pub last_error: Option<RunError>,
    pub usage: Option<Usage>,
    /// The `seq` of the event that created the step: steps list in this order.
    pub seq: u64,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// Where a tool call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolCallStatus {
    InProgress,
    Completed,
    Failed,
}

impl ToolCallStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn from_stored(value: &str) -> Option<Self> {
        [Self::InProgress, Self::Completed, Self::Failed].into_iter().find(|s| s.as_str() == value)
    }
}

/// One tool invocation inside a `tool_calls` step.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub tenant_id: TenantId,
    pub run_id: RunId,
    pub tool_call_id: ToolCallRef,
    pub step_id: StepRef,
    pub name: String,
    pub arguments: Value,
    pub output: Option<Value>,
    pub status: ToolCallStatus,
    /// The `seq` of the event that started the call: tool calls list in this order.
    pub seq: u64,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant's stored name reads back as that variant, and is its serde name too (the
    /// same names travel in event data).
    fn assert_read_back<T>(
        names: &[(T, &str)],
        as_str: fn(T) -> &'static str,
        from_stored: fn(&str) -> Option<T>,
    ) where
        T: Copy + PartialEq + std::fmt::Debug + Serialize,
    {
        for &(value, name) in names {
            assert_eq!(as_str(value), name, "{value:?}");
            assert_eq!(from_stored(name), Some(value), "{name}");
            assert_eq!(serde_json::to_value(value).unwrap(), name);
        }
    }

    #[test]
    fn every_step_type_reads_back_from_its_stored_name() {
        let names = [(StepType::MessageCreation, "message_creation"), (StepType::ToolCalls, "tool_calls")];
        assert_read_back(&names, StepType::as_str, StepType::from_stored);
        assert_eq!(StepType::from_stored("tool_call"), None);
    }

    #[test]
    fn every_step_status_reads_back_from_its_stored_name() {
        let names = ["in_progress", "completed", "failed", "cancelled", "expired"];
        let names: Vec<_> = StepStatus::ALL.into_iter().zip(names).collect();
        assert_read_back(&names, StepStatus::as_str, StepStatus::from_stored);
        assert_eq!(StepStatus::from_stored("queued"), None);
    }

    #[test]
    fn every_tool_call_status_reads_back_from_its_stored_name() {
        let names = [
            (ToolCallStatus::InProgress, "in_progress"),
            (ToolCallStatus::Completed, "completed"),
            (ToolCallStatus::Failed, "failed"),
        ];
        assert_read_back(&names, ToolCallStatus::as_str, ToolCallStatus::from_stored);
        assert_eq!(ToolCallStatus::from_stored("cancelled"), None);
    }
}
