//! Typed, validated event data, one shape per [`EventKind`].

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::EventKind;
use crate::ValidationError;
use crate::runs::RunError;
use crate::steps::{StepType, ToolCallStatus};
use crate::usage::Usage;

macro_rules! producer_ref {
    ($(#[$meta:meta])* $name:ident, $field:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = 128;

            /// # Errors
            /// When the value is empty, longer than 128 characters, or has characters other
            /// than `[A-Za-z0-9_.:-]`.
            pub fn parse(value: &str) -> Result<Self, ValidationError> {
                let ok = !value.is_empty()
                    && value.len() <= Self::MAX_LEN
                    && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
                if ok {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(ValidationError::new($field, "must be 1 to 128 characters of [A-Za-z0-9_.:-]"))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

producer_ref!(
    /// A step's id, chosen by the agent runtime and unique within its run.
    StepRef,
    "step_id"
);
producer_ref!(
    /// A tool call's id, chosen by the agent runtime and unique within its run.
    ToolCallRef,
    "tool_call_id"
);

/// What an event carries, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    RunCreated,
    RunStarted,
    RunRequiresAction,
    RunCompleted { output: Value },
    RunFailed { error: RunError },
    RunCancelled,
    StepCreated { step_id: StepRef, step_type: StepType },
    StepDelta { step_id: StepRef, text: String },
    StepCompleted { step_id: StepRef },
    ToolCallStarted { tool_call_id: ToolCallRef, step_id: StepRef, name: String, arguments: Value },
    ToolCallCompleted { tool_call_id: ToolCallRef, output: Value, status: ToolCallStatus },
    UsageReported(Usage),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Completed {
    #[serde(default)]
    output: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Failed {
    error: RunError,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepCreated {
    step_id: StepRef,
    r#type: StepType,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepDelta {
    step_id: StepRef,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepOnly {
    step_id: StepRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolStarted {
    tool_call_id: ToolCallRef,
    step_id: StepRef,
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolCompleted {
    tool_call_id: ToolCallRef,
    #[serde(default)]
    output: Value,
    status: ToolCallStatus,
}

/// The longest tool name accepted.
const MAX_TOOL_NAME: usize = 128;

impl EventData {
    /// Validates `data` for `kind`. Missing data counts as `{}`.
    ///
    /// # Errors
    /// A [`ValidationError`] on field `data` saying what is wrong.
    pub fn parse(kind: EventKind, data: Value) -> Result<Self, ValidationError> {
        let data = if data.is_null() { json!({}) } else { data };
        Self::parse_from(kind, data)
    }

    /// Validates the data `deserializer` reads for `kind`, as [`Self::parse`] does but
    /// without building a [`Value`] first: how stored events are read back in bulk. Here
    /// `null` is refused like any other data that is not an object.
    ///
    /// # Errors
    /// A [`ValidationError`] on field `data` saying what is wrong.
    pub fn parse_from<'de, D>(kind: EventKind, data: D) -> Result<Self, ValidationError>
    where
        D: Deserializer<'de>,
    {
        let invalid = |e: D::Error| ValidationError::new("data", format!("invalid `{kind}` data: {e}"));
        Ok(match kind {
            EventKind::RunCreated => Empty::deserialize(data).map(|_| Self::RunCreated).map_err(invalid)?,
            EventKind::RunStarted => Empty::deserialize(data).map(|_| Self::RunStarted).map_err(invalid)?,
            EventKind::RunRequiresAction => {
                Empty::deserialize(data).map(|_| Self::RunRequiresAction).map_err(invalid)?
            }
            EventKind::RunCancelled => {
                Empty::deserialize(data).map(|_| Self::RunCancelled).map_err(invalid)?
            }
            EventKind::RunCompleted => {
                let d = Completed::deserialize(data).map_err(invalid)?;
                Self::RunCompleted { output: d.output }
            }
            EventKind::RunFailed => {
                let d = Failed::deserialize(data).map_err(invalid)?;
                Self::RunFailed { error: d.error }
            }
            EventKind::StepCreated => {
                let d = StepCreated::deserialize(data).map_err(invalid)?;
                Self::StepCreated { step_id: d.step_id, step_type: d.r#type }
            }
            EventKind::StepDelta => {
                let d = StepDelta::deserialize(data).map_err(invalid)?;
                Self::StepDelta { step_id: d.step_id, text: d.text }
            }
            EventKind::StepCompleted => {
                let d = StepOnly::deserialize(data).map_err(invalid)?;
                Self::StepCompleted { step_id: d.step_id }
            }
            EventKind::ToolCallStarted => {
                let d = ToolStarted::deserialize(data).map_err(invalid)?;
                if d.name.is_empty() || d.name.len() > MAX_TOOL_NAME {
                    return Err(ValidationError::new("data", "tool `name` must be 1 to 128 bytes"));
                }
                Self::ToolCallStarted {
                    tool_call_id: d.tool_call_id,
                    step_id: d.step_id,
                    name: d.name,
                    arguments: d.arguments,
                }
            }
            EventKind::ToolCallCompleted => {
                let d = ToolCompleted::deserialize(data).map_err(invalid)?;
                if d.status == ToolCallStatus::InProgress {
                    return Err(ValidationError::new(
                        "data",
                        "a completed tool call's `status` is `completed` or `failed`",
                    ));
                }
                Self::ToolCallCompleted { tool_call_id: d.tool_call_id, output: d.output, status: d.status }
            }
            EventKind::UsageReported => {
                Self::UsageReported(Usage::parse(Value::deserialize(data).map_err(invalid)?)?)
            }
        })
    }

    pub const fn kind(&self) -> EventKind {
        match self {
            Self::RunCreated => EventKind::RunCreated,
            Self::RunStarted => EventKind::RunStarted,
            Self::RunRequiresAction => EventKind::RunRequiresAction,
            Self::RunCompleted { .. } => EventKind::RunCompleted,
            Self::RunFailed { .. } => EventKind::RunFailed,
            Self::RunCancelled => EventKind::RunCancelled,
            Self::StepCreated { .. } => EventKind::StepCreated,
            Self::StepDelta { .. } => EventKind::StepDelta,
            Self::StepCompleted { .. } => EventKind::StepCompleted,
            Self::ToolCallStarted { .. } => EventKind::ToolCallStarted,
            Self::ToolCallCompleted { .. } => EventKind::ToolCallCompleted,
            Self::UsageReported(_) => EventKind::UsageReported,
        }
    }

    /// The `data` member as stored and shown to clients.
    pub fn to_json(&self) -> Value {
        match self {
            Self::RunCreated | Self::RunStarted | Self::RunRequiresAction | Self::RunCancelled => json!({}),
            Self::RunCompleted { output } => json!({ "output": output }),
            Self::RunFailed { error } => json!({ "error": error }),
            Self::StepCreated { step_id, step_type } => json!({ "step_id": step_id, "type": step_type }),
            Self::StepDelta { step_id, text } => json!({ "step_id": step_id, "text": text }),
            Self::StepCompleted { step_id } => json!({ "step_id": step_id }),
            Self::ToolCallStarted { tool_call_id, step_id, name, arguments } => {
                json!({ "tool_call_id": tool_call_id, "step_id": step_id, "name": name, "arguments": arguments })
            }
            Self::ToolCallCompleted { tool_call_id, output, status } => {
                json!({ "tool_call_id": tool_call_id, "output": output, "status": status })
            }
            Self::UsageReported(usage) => usage.to_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_json() {
        let samples = [
            (EventKind::RunCreated, json!({})),
            (EventKind::RunStarted, json!({})),
            (EventKind::RunRequiresAction, json!({})),
            (EventKind::RunCompleted, json!({"output": {"answer": 42}})),
            (EventKind::RunFailed, json!({"error": {"code": "timeout", "message": "took too long"}})),
            (EventKind::RunCancelled, json!({})),
            (EventKind::StepCreated, json!({"step_id": "s1", "type": "tool_calls"})),
            (EventKind::StepDelta, json!({"step_id": "s1", "text": "Hel"})),
            (EventKind::StepCompleted, json!({"step_id": "s1"})),
            (
                EventKind::ToolCallStarted,
                json!({"tool_call_id": "t1", "step_id": "s1", "name": "search", "arguments": {"q": "x"}}),
            ),
            (
                EventKind::ToolCallCompleted,
                json!({"tool_call_id": "t1", "output": "ok", "status": "completed"}),
            ),
            (
                EventKind::UsageReported,
                json!({"model": "gpt-x", "input_tokens": 10, "output_tokens": 5, "cost_micros": 1234}),
            ),
        ];
        for (kind, data) in samples {
            let parsed = EventData::parse(kind, data.clone()).unwrap();
            assert_eq!(parsed.kind(), kind);
            assert_eq!(parsed.to_json(), data, "{kind}");
        }
    }

    #[test]
    fn missing_fields_unknown_fields_and_bad_ids_are_rejected() {
        let bad = [
            (EventKind::StepCreated, json!({"step_id": "s1"})),
            (EventKind::StepDelta, json!({"step_id": "s1", "text": "x", "extra": 1})),
            (EventKind::StepCompleted, json!({"step_id": "has space"})),
            (EventKind::ToolCallStarted, json!({"tool_call_id": "t1", "step_id": "s1", "name": ""})),
            (EventKind::ToolCallCompleted, json!({"tool_call_id": "t1", "status": "in_progress"})),
            (EventKind::RunStarted, json!({"anything": true})),
            (
                EventKind::UsageReported,
                json!({"model": "m", "input_tokens": -1, "output_tokens": 0, "cost_micros": 0}),
            ),
        ];
        for (kind, data) in bad {
            let err = EventData::parse(kind, data.clone()).unwrap_err();
            assert_eq!(err.field, "data", "{kind} {data}");
        }
    }

    #[test]
    fn a_tool_name_is_one_to_128_bytes() {
        let started = |name: &str| {
            EventData::parse(
                EventKind::ToolCallStarted,
                json!({"tool_call_id": "t1", "step_id": "s1", "name": name, "arguments": {}}),
            )
        };
        let longest = "é".repeat(64);
        assert!(matches!(started(&longest), Ok(EventData::ToolCallStarted { name, .. }) if name == longest));
        let refused = started(&format!("{longest}x")).unwrap_err();
        assert_eq!(refused.message, "tool `name` must be 1 to 128 bytes");
    }

    #[test]
    fn null_data_counts_as_an_empty_object() {
        assert_eq!(EventData::parse(EventKind::RunStarted, Value::Null).unwrap(), EventData::RunStarted);
    }
}
