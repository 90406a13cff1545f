//! [`RunProgress`]: what a batch of events does to a run, decided in memory before anything
//! is written, so an adapter can apply a whole batch in one transaction or none of it.
//!
//! Rules:
//! - `seq` is gapless per run. An event whose `seq` is at or below the run's last `seq` is a
//!   duplicate and is skipped; one beyond `last + 1` is a gap and rejects the batch.
//! - Run events move the run through its state machine; an illegal transition rejects the
//!   batch. Step, tool-call and usage events on a `queued` run start it implicitly
//!   (`queued → in_progress`), and on an ended run they are refused.
//! - A step is created once, receives deltas and completes once while `in_progress`; a tool
//!   call belongs to an existing `tool_calls` step, starts once and completes once.
//! - When a run fails, is cancelled or expires, its unfinished steps end with it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{AgentRun, InvalidTransition, RunStatus};
use crate::events::{EventData, EventKind, RunEvent, StepRef, ToolCallRef};
use crate::steps::{Step, StepStatus, StepType, ToolCall, ToolCallStatus};
use crate::usage::Usage;

/// Why a batch cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The event at `index` would move the run illegally (for example, anything after it ended).
    #[error("event {index}: {source}")]
    InvalidTransition { index: usize, source: InvalidTransition },
    /// The event at `index` contradicts the run's steps or tool calls.
    #[error("event {index}: {reason}")]
    InvalidEvent { index: usize, reason: String },
    /// The event at `index` skips sequence numbers.
    #[error("event {index}: expected seq {expected}, got {got}")]
    Gap { index: usize, expected: u64, got: u64 },
    /// The event at `index` belongs to another run.
    #[error("event {index} belongs to another run")]
    WrongRun { index: usize },
}

/// A row-level change the adapter must write, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    InsertStep(Step),
    /// End a step: `completed`, or the run's terminal status.
    EndStep {
        step_id: StepRef,
        status: StepStatus,
        at: DateTime<Utc>,
    },
    InsertToolCall(ToolCall),
    CompleteToolCall {
        tool_call_id: ToolCallRef,
        status: ToolCallStatus,
        output: serde_json::Value,
        at: DateTime<Utc>,
    },
    RecordUsage {
        usage: Usage,
        at: DateTime<Utc>,
    },
}

/// The run with the state of its steps and tool calls, as far as a batch needs to know.
#[derive(Debug, Clone)]
pub struct RunProgress {
    run: AgentRun,
    last_seq: u64,
    steps: HashMap<StepRef, (StepType, StepStatus)>,
    tool_calls: HashMap<ToolCallRef, ToolCallStatus>,
}

/// What applying a batch decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The events to store (duplicates removed), in `seq` order.
    pub events: Vec<RunEvent>,
    /// How many events were duplicates.
    pub duplicates: usize,
    /// Row changes to steps, tool calls and usage, in order.
    pub changes: Vec<Change>,
    /// The run after the batch, and whether its lifecycle changed.
    pub run: AgentRun,
    pub run_changed: bool,
}

impl RunProgress {
    pub fn new(
        run: AgentRun,
        last_seq: u64,
        steps: impl IntoIterator<Item = (StepRef, StepType, StepStatus)>,
        tool_calls: impl IntoIterator<Item = (ToolCallRef, ToolCallStatus)>,
    ) -> Self {
        Self {
            run,
            last_seq,
            steps: steps.into_iter().map(|(id, t, s)| ((id), (t, s))).collect(),
            tool_calls: tool_calls.into_iter().collect(),
        }
    }

    /// Decides what `batch` (sorted by `seq` or not) does to the run.
    ///
    /// # Errors
    /// An [`ApplyError`] naming the first offending event (its index in `batch`); nothing of
    /// the batch may then be written.
    pub fn apply(mut self, batch: Vec<RunEvent>) -> Result<Plan, ApplyError> {
        let initial_status = self.run.status();
        let mut indexed: Vec<(usize, RunEvent)> = batch.into_iter().enumerate().collect();
        indexed.sort_by_key(|(_, e)| e.seq);
        let mut events = Vec::with_capacity(indexed.len());
        let mut changes = Vec::new();
        let mut duplicates = 0;
        for (index, event) in indexed {
            if event.run_id != self.run.id || event.tenant_id != self.run.tenant_id {
                return Err(ApplyError::WrongRun { index });
            }
            if event.seq <= self.last_seq {
                duplicates += 1;
                continue;
            }
            if event.seq != self.last_seq + 1 {
                return Err(ApplyError::Gap { index, expected: self.last_seq + 1, got: event.seq });
            }
            self.apply_one(index, &event, &mut changes)?;
            self.last_seq = event.seq;
            events.push(event);
        }
        let run_changed = self.run.status() != initial_status;
        Ok(Plan { events, duplicates, changes, run: self.run, run_changed })
    }

    fn apply_one(
        &mut self,
        index: usize,
        event: &RunEvent,
        changes: &mut Vec<Change>,
    ) -> Result<(), ApplyError> {
        let at = event.created_at;
        let invalid = |reason: String| ApplyError::InvalidEvent { index, reason };
        let transition = |source| ApplyError::InvalidTransition { index, source };
        if is_run_work(event.kind()) {
            self.start_implicitly(at).map_err(transition)?;
        }
        match &event.data {
            EventData::RunCreated => {
                return Err(invalid("`run.created` is written only when a run is created".into()));
            }
            EventData::RunStarted => {
                self.run.transition_to(RunStatus::InProgress, at).map_err(transition)?;
            }
            EventData::RunRequiresAction => {
                self.run.transition_to(RunStatus::RequiresAction, at).map_err(transition)?;
            }
            EventData::RunCompleted { output } => {
                self.run.complete(output.clone(), at).map_err(transition)?;
            }
            EventData::RunFailed { error } => {
                self.run.fail(error.clone(), at).map_err(transition)?;
                self.end_open_steps(StepStatus::Failed, at, changes);
            }
            EventData::RunCancelled => {
                self.run.cancel(at).map_err(transition)?;
                self.end_open_steps(StepStatus::Cancelled, at, changes);
            }
            EventData::StepCreated { step_id, step_type } => {
                if self.steps.contains_key(step_id) {
                    return Err(invalid(format!("step `{step_id}` already exists")));
                }
                self.steps.insert(step_id.clone(), (*step_type, StepStatus::InProgress));
                changes.push(Change::InsertStep(Step {
                    tenant_id: self.run.tenant_id,
                    run_id: self.run.id,
                    step_id: step_id.clone(),
                    step_type: *step_type,
                    status: StepStatus::InProgress,
                    last_error: None,
                    usage: None,
                    seq: event.seq,
                    created_at: at,
                    completed_at: None,
                }));
            }
            EventData::StepDelta { step_id, .. } => {
                self.open_step(step_id).map_err(invalid)?;
            }
            EventData::StepCompleted { step_id } => {
                self.open_step(step_id).map_err(invalid)?;
                self.steps.entry(step_id.clone()).and_modify(|(_, status)| *status = StepStatus::Completed);
                changes.push(Change::EndStep { step_id: step_id.clone(), status: StepStatus::Completed, at });
            }
            EventData::ToolCallStarted { tool_call_id, step_id, name, arguments } => {
                let step_type = self.open_step(step_id).map_err(invalid)?;
                if step_type != StepType::ToolCalls {
                    return Err(invalid(format!("step `{step_id}` is not a `tool_calls` step")));
                }
                if self.tool_calls.contains_key(tool_call_id) {
                    return Err(invalid(format!("tool call `{tool_call_id}` already exists")));
                }
                self.tool_calls.insert(tool_call_id.clone(), ToolCallStatus::InProgress);
                changes.push(Change::InsertToolCall(ToolCall {
                    tenant_id: self.run.tenant_id,
                    run_id: self.run.id,
                    tool_call_id: tool_call_id.clone(),
                    step_id: step_id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                    output: None,
                    status: ToolCallStatus::InProgress,
                    seq: event.seq,
                    started_at: at,
                    completed_at: None,
                }));
            }
            EventData::ToolCallCompleted { tool_call_id, output, status } => {
                match self.tool_calls.get_mut(tool_call_id) {
                    Some(current @ ToolCallStatus::InProgress) => *current = *status,
                    Some(_) => {
                        return Err(invalid(format!("tool call `{tool_call_id}` has already completed")));
                    }
                    None => return Err(invalid(format!("tool call `{tool_call_id}` was never started"))),
                }
                changes.push(Change::CompleteToolCall {
                    tool_call_id: tool_call_id.clone(),
                    status: *status,
                    output: output.clone(),
                    at,
                });
            }
            EventData::UsageReported(usage) => {
                changes.push(Change::RecordUsage { usage: usage.clone(), at });
            }
        }
        Ok(())
    }

    /// Work reported on a queued run starts it; on an ended run it is refused.
    fn start_implicitly(&mut self, at: DateTime<Utc>) -> Result<(), InvalidTransition> {
        match self.run.status() {
            RunStatus::Queued => self.run.transition_to(RunStatus::InProgress, at),
            status if status.is_terminal() => {
                Err(InvalidTransition { from: status, to: RunStatus::InProgress })
            }
            _ => Ok(()),
        }
    }

    fn open_step(&self, step_id: &StepRef) -> Result<StepType, String> {
        match self.steps.get(step_id) {
            Some((step_type, StepStatus::InProgress)) => Ok(*step_type),
            Some((_, status)) => Err(format!("step `{step_id}` is already {}", status.as_str())),
            None => Err(format!("step `{step_id}` does not exist")),
        }
    }

    fn end_open_steps(&mut self, status: StepStatus, at: DateTime<Utc>, changes: &mut Vec<Change>) {
        let mut open: Vec<_> =
            self.steps.iter_mut().filter(|(_, (_, s))| *s == StepStatus::InProgress).collect();
        open.sort_by(|a, b| a.0.cmp(b.0));
        for (step_id, (_, current)) in open {
            *current = status;
            changes.push(Change::EndStep { step_id: step_id.clone(), status, at });
        }
    }
}

/// Kinds that report work inside a run (as opposed to moving the run itself).
const fn is_run_work(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::StepCreated
            | EventKind::StepDelta
            | EventKind::StepCompleted
            | EventKind::ToolCallStarted
            | EventKind::ToolCallCompleted
            | EventKind::UsageReported
    )
}

/// The terminal status of a run's unfinished steps when the run itself ends that way.
pub const fn step_status_for(run: RunStatus) -> Option<StepStatus> {
    match run {
        RunStatus::Failed => Some(StepStatus::Failed),
        RunStatus::Cancelled => Some(StepStatus::Cancelled),
        RunStatus::Expired => Some(StepStatus::Expired),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::ids::{RunId, TenantId, UserId};
    use crate::runs::{AgentName, Metadata, NewRun};

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn run() -> AgentRun {
        AgentRun::new(
            RunId::from_uuid(Uuid::from_u128(1)),
            NewRun {
                tenant_id: TenantId::from_uuid(Uuid::from_u128(2)),
                user_id: UserId::parse("u").unwrap(),
                agent: AgentName::parse("bot").unwrap(),
                input: json!(null),
                session_id: None,
                metadata: Metadata::default(),
            },
            at(0),
        )
    }

    fn event(seq: u64, kind: EventKind, data: serde_json::Value) -> RunEvent {
        let run = run();
        RunEvent {
            run_id: run.id,
            tenant_id: run.tenant_id,
            seq,
            producer_id: Some(format!("p{seq}")),
            data: EventData::parse(kind, data).unwrap(),
            created_at: at(i64::try_from(seq).unwrap()),
        }
    }

    fn fresh() -> RunProgress {
        RunProgress::new(run(), 1, [], [])
    }

    #[test]
    fn a_full_run_plans_rows_and_ends_completed() {
        let plan = fresh()
            .apply(vec![
                event(2, EventKind::StepCreated, json!({"step_id": "s1", "type": "tool_calls"})),
                event(
                    3,
                    EventKind::ToolCallStarted,
                    json!({"tool_call_id": "t1", "step_id": "s1", "name": "search"}),
                ),
                event(
                    4,
                    EventKind::ToolCallCompleted,
                    json!({"tool_call_id": "t1", "output": "hit", "status": "completed"}),
                ),
                event(5, EventKind::StepCompleted, json!({"step_id": "s1"})),
                event(
                    6,
                    EventKind::UsageReported,
                    json!({"model": "m", "input_tokens": 3, "output_tokens": 4, "cost_micros": 5}),
                ),
                event(7, EventKind::RunCompleted, json!({"output": "done"})),
            ])
            .unwrap();
        assert_eq!(plan.events.len(), 6);
        assert_eq!(plan.duplicates, 0);
        assert!(plan.run_changed);
        assert_eq!(plan.run.status(), RunStatus::Completed);
        assert_eq!(plan.run.started_at, Some(at(2)), "the first step started the run");
        assert_eq!(plan.run.output, Some(json!("done")));
        let kinds: Vec<&str> = plan
            .changes
            .iter()
            .map(|c| match c {
                Change::InsertStep(_) => "insert_step",
                Change::EndStep { .. } => "end_step",
                Change::InsertToolCall(_) => "insert_tool_call",
                Change::CompleteToolCall { .. } => "complete_tool_call",
                Change::RecordUsage { .. } => "usage",
            })
            .collect();
        assert_eq!(kinds, ["insert_step", "insert_tool_call", "complete_tool_call", "end_step", "usage"]);
    }

    #[test]
    fn events_at_or_below_the_last_seq_are_duplicates() {
        let progress = RunProgress::new(run(), 3, [], []);
        let plan = progress
            .apply(vec![
                event(2, EventKind::RunStarted, json!({})),
                event(3, EventKind::RunStarted, json!({})),
                event(4, EventKind::RunStarted, json!({})),
            ])
            .unwrap();
        assert_eq!(plan.duplicates, 2);
        assert_eq!(plan.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn a_batch_is_applied_in_seq_order_whatever_its_order() {
        let plan = fresh()
            .apply(vec![
                event(3, EventKind::StepDelta, json!({"step_id": "s1", "text": "hi"})),
                event(2, EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
            ])
            .unwrap();
        assert_eq!(plan.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn a_gap_rejects_the_batch_naming_the_event() {
        let err = fresh()
            .apply(vec![
                event(2, EventKind::RunStarted, json!({})),
                event(4, EventKind::RunCompleted, json!({})),
            ])
            .unwrap_err();
        assert_eq!(err, ApplyError::Gap { index: 1, expected: 3, got: 4 });
    }

    #[test]
    fn an_illegal_transition_rejects_the_batch() {
        let err = fresh()
            .apply(vec![
                event(2, EventKind::RunCompleted, json!({})),
                event(3, EventKind::RunStarted, json!({})),
            ])
            .unwrap_err();
        assert!(matches!(err, ApplyError::InvalidTransition { index: 0, .. }), "{err:?}");
    }

    #[test]
    fn work_reported_after_the_run_ended_is_refused() {
        let err = fresh()
            .apply(vec![
                event(2, EventKind::RunFailed, json!({"error": {"code": "x", "message": "y"}})),
                event(3, EventKind::StepCreated, json!({"step_id": "s1", "type": "tool_calls"})),
            ])
            .unwrap_err();
        assert_eq!(
            err,
            ApplyError::InvalidTransition {
                index: 1,
                source: InvalidTransition { from: RunStatus::Failed, to: RunStatus::InProgress }
            }
        );
    }

    #[test]
    fn step_and_tool_call_rules_are_enforced() {
        let cases = [
            vec![event(2, EventKind::StepDelta, json!({"step_id": "nope", "text": "x"}))],
            vec![
                event(2, EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
                event(3, EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
            ],
            vec![
                event(2, EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
                event(
                    3,
                    EventKind::ToolCallStarted,
                    json!({"tool_call_id": "t1", "step_id": "s1", "name": "n"}),
                ),
            ],
            vec![event(2, EventKind::ToolCallCompleted, json!({"tool_call_id": "t9", "status": "failed"}))],
            vec![
                event(2, EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
                event(3, EventKind::StepCompleted, json!({"step_id": "s1"})),
                event(4, EventKind::StepDelta, json!({"step_id": "s1", "text": "late"})),
            ],
        ];
        for batch in cases {
            let last = batch.len() - 1;
            let err = fresh().apply(batch).unwrap_err();
            assert!(matches!(err, ApplyError::InvalidEvent { index, .. } if index == last), "{err:?}");
        }
    }

    #[test]
    fn run_created_cannot_be_reported() {
        let err = fresh().apply(vec![event(2, EventKind::RunCreated, json!({}))]).unwrap_err();
        assert!(matches!(err, ApplyError::InvalidEvent { index: 0, .. }));
    }

    #[test]
    fn failing_a_run_ends_its_open_steps_as_failed() {
        let progress = RunProgress::new(
            run(),
            1,
            [
                (StepRef::parse("a").unwrap(), StepType::MessageCreation, StepStatus::InProgress),
                (StepRef::parse("b").unwrap(), StepType::MessageCreation, StepStatus::Completed),
            ],
            [],
        );
        let plan = progress
            .apply(vec![
                event(2, EventKind::RunStarted, json!({})),
                event(3, EventKind::RunFailed, json!({"error": {"code": "x", "message": "y"}})),
            ])
            .unwrap();
        assert_eq!(
            plan.changes,
            [Change::EndStep {
                step_id: StepRef::parse("a").unwrap(),
                status: StepStatus::Failed,
                at: at(3)
            }]
        );
    }

    #[test]
    fn events_of_another_run_are_refused() {
        let mut foreign = event(2, EventKind::RunStarted, json!({}));
        foreign.run_id = RunId::from_uuid(Uuid::from_u128(99));
        assert_eq!(fresh().apply(vec![foreign]).unwrap_err(), ApplyError::WrongRun { index: 0 });
    }
}
