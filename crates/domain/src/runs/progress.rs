//! [`RunProgress`]: what a batch of events does to a run, decided in memory before anything
//! is written, so an adapter can apply a whole batch in one transaction or none of it.
//!
//! Every event the server accepted must be stored (ADR 0017, "As built: accepted events are
//! always stored"), so only a batch that is malformed as a whole is rejected; an event that
//! contradicts the run's state is stored and its effect skipped.
//!
//! Rules:
//! - `seq` is gapless per run. An event whose `seq` is at or below the run's last `seq` is a
//!   duplicate and is left out; one beyond `last + 1` is a gap and rejects the batch, as does
//!   an event of another run.
//! - Run events move the run through its state machine. Step, tool-call and usage events on a
//!   `queued` run start it implicitly (`queued → in_progress`).
//! - A step is created once, receives deltas and completes once while `in_progress`; a tool
//!   call belongs to an existing `tool_calls` step, starts once and completes once.
//! - When a run fails, is cancelled or expires, its unfinished steps end with it.
//! - An event that breaks one of these rules for the run's state (an illegal transition, work
//!   reported on an ended run, a delta for a step that does not exist, a tool call completed
//!   twice, a `run.created` after creation) is stored and listed in [`Plan::skipped`] with the
//!   reason, and changes nothing: it is checked before any of its effects, so it does not
//!   even start a `queued` run implicitly. The events after it apply as if it were absent.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{AgentRun, InvalidTransition, RunStatus};
use crate::events::{EventData, EventKind, RunEvent, StepRef, ToolCallRef};
use crate::steps::{Step, StepStatus, StepType, ToolCall, ToolCallStatus};
use crate::usage::Usage;

/// Why a batch cannot be applied at all: it does not fit the run's sequence. Nothing of it
/// may then be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The event at `index` skips sequence numbers.
    #[error("event {index}: expected seq {expected}, got {got}")]
    Gap { index: usize, expected: u64, got: u64 },
    /// The event at `index` belongs to another run.
    #[error("event {index} belongs to another run")]
    WrongRun { index: usize },
}

/// An event stored without effect because it contradicts the run's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEvent {
    pub seq: u64,
    pub kind: EventKind,
    /// What it contradicts, for example "step `s1` does not exist".
    pub reason: String,
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
    /// The events to store (duplicates removed, skipped ones included), in `seq` order.
    pub events: Vec<RunEvent>,
    /// How many events were duplicates.
    pub duplicates: usize,
    /// Events of `events` whose effect was skipped, in `seq` order.
    pub skipped: Vec<SkippedEvent>,
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

    /// Decides what `batch` (sorted by `seq` or not) does to the run. Events that contradict
    /// the run's state are kept for storage and listed in [`Plan::skipped`].
    ///
    /// # Errors
    /// An [`ApplyError`] naming the first event (its index in `batch`) that skips a `seq` or
    /// belongs to another run; nothing of the batch may then be written.
    pub fn apply(mut self, batch: Vec<RunEvent>) -> Result<Plan, ApplyError> {
        let initial_status = self.run.status();
        let mut indexed: Vec<(usize, RunEvent)> = batch.into_iter().enumerate().collect();
        indexed.sort_by_key(|(_, e)| e.seq);
        let mut events = Vec::with_capacity(indexed.len());
        let mut skipped = Vec::new();
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
            if let Err(reason) = self.apply_one(&event, &mut changes) {
                skipped.push(SkippedEvent { seq: event.seq, kind: event.kind(), reason });
            }
            self.last_seq = event.seq;
            events.push(event);
        }
        let run_changed = self.run.status() != initial_status;
        Ok(Plan { events, duplicates, skipped, changes, run: self.run, run_changed })
    }

    /// Applies one event's effect, or refuses it with the reason and without changing
    /// anything: every check comes before the first change.
    fn apply_one(&mut self, event: &RunEvent, changes: &mut Vec<Change>) -> Result<(), String> {
        let at = event.created_at;
        let transition = |refused: InvalidTransition| refused.to_string();
        if is_run_work(event.kind()) {
            self.check_work(&event.data)?;
            self.start_implicitly(at).map_err(transition)?;
        }
        match &event.data {
            EventData::RunCreated => {
                return Err("`run.created` is written only when a run is created".into());
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
            EventData::StepDelta { .. } => {}
            EventData::StepCompleted { step_id } => {
                self.steps.entry(step_id.clone()).and_modify(|(_, status)| *status = StepStatus::Completed);
                changes.push(Change::EndStep { step_id: step_id.clone(), status: StepStatus::Completed, at });
            }
            EventData::ToolCallStarted { tool_call_id, step_id, name, arguments } => {
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
                self.tool_calls.insert(tool_call_id.clone(), *status);
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

    /// Whether work (a step, tool-call or usage event) fits the run's state, without changing
    /// it. Work on an ended run is refused as the transition it would need.
    fn check_work(&self, data: &EventData) -> Result<(), String> {
        let status = self.run.status();
        if status.is_terminal() {
            return Err(InvalidTransition { from: status, to: RunStatus::InProgress }.to_string());
        }
        match data {
            EventData::StepCreated { step_id, .. } if self.steps.contains_key(step_id) => {
                Err(format!("step `{step_id}` already exists"))
            }
            EventData::StepDelta { step_id, .. } | EventData::StepCompleted { step_id } => {
                self.open_step(step_id).map(drop)
            }
            EventData::ToolCallStarted { tool_call_id, step_id, .. } => {
                if self.open_step(step_id)? != StepType::ToolCalls {
                    return Err(format!("step `{step_id}` is not a `tool_calls` step"));
                }
                if self.tool_calls.contains_key(tool_call_id) {
                    return Err(format!("tool call `{tool_call_id}` already exists"));
                }
                Ok(())
            }
            EventData::ToolCallCompleted { tool_call_id, .. } => match self.tool_calls.get(tool_call_id) {
                Some(ToolCallStatus::InProgress) => Ok(()),
                Some(_) => Err(format!("tool call `{tool_call_id}` has already completed")),
                None => Err(format!("tool call `{tool_call_id}` was never started")),
            },
            _ => Ok(()),
        }
    }

    /// Work reported on a queued run starts it ([`Self::check_work`] has refused an ended run).
    fn start_implicitly(&mut self, at: DateTime<Utc>) -> Result<(), InvalidTransition> {
        if self.run.status() == RunStatus::Queued {
            self.run.transition_to(RunStatus::InProgress, at)
        } else {
            Ok(())
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
        assert_eq!(plan.skipped, []);
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

    fn skipped(seq: u64, kind: EventKind, reason: &str) -> SkippedEvent {
        SkippedEvent { seq, kind, reason: reason.into() }
    }

    fn seqs(plan: &Plan) -> Vec<u64> {
        plan.events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_gap_rejects_the_batch_even_after_a_skipped_event() {
        let err = fresh()
            .apply(vec![
                event(2, EventKind::StepDelta, json!({"step_id": "nope", "text": "x"})),
                event(4, EventKind::RunStarted, json!({})),
            ])
            .unwrap_err();
        assert_eq!(err, ApplyError::Gap { index: 1, expected: 3, got: 4 });
    }

    #[test]
    fn an_illegal_transition_is_stored_and_skipped_and_the_rest_applies() {
        let plan = fresh()
            .apply(vec![
                event(2, EventKind::RunCompleted, json!({"output": "early"})),
                event(3, EventKind::RunStarted, json!({})),
            ])
            .unwrap();
        assert_eq!(seqs(&plan), [2, 3]);
        assert_eq!(
            plan.skipped,
            [skipped(2, EventKind::RunCompleted, "a run cannot go from queued to completed")]
        );
        assert_eq!(plan.run.status(), RunStatus::InProgress);
        assert_eq!(plan.run.output, None, "the skipped completion left no output");
    }

    #[test]
    fn work_reported_after_the_run_ended_is_stored_and_skipped() {
        let plan = fresh()
            .apply(vec![
                event(2, EventKind::RunFailed, json!({"error": {"code": "x", "message": "y"}})),
                event(3, EventKind::StepCreated, json!({"step_id": "s1", "type": "tool_calls"})),
                event(4, EventKind::RunStarted, json!({})),
            ])
            .unwrap();
        assert_eq!(seqs(&plan), [2, 3, 4]);
        assert_eq!(
            plan.skipped,
            [
                skipped(3, EventKind::StepCreated, "a run cannot go from failed to in_progress"),
                skipped(4, EventKind::RunStarted, "a run cannot go from failed to in_progress"),
            ]
        );
        assert_eq!(plan.changes, [], "no step was created on the ended run");
        assert_eq!(plan.run.status(), RunStatus::Failed);
    }

    #[test]
    fn events_contradicting_steps_or_tool_calls_are_stored_and_skipped_with_their_reason() {
        let created = |seq, id: &str, kind: &str| {
            event(seq, EventKind::StepCreated, json!({"step_id": id, "type": kind}))
        };
        let cases = [
            (
                vec![event(2, EventKind::StepDelta, json!({"step_id": "nope", "text": "x"}))],
                "step `nope` does not exist",
            ),
            (
                vec![created(2, "s1", "message_creation"), created(3, "s1", "message_creation")],
                "step `s1` already exists",
            ),
            (
                vec![
                    created(2, "s1", "message_creation"),
                    event(
                        3,
                        EventKind::ToolCallStarted,
                        json!({"tool_call_id": "t1", "step_id": "s1", "name": "n"}),
                    ),
                ],
                "step `s1` is not a `tool_calls` step",
            ),
            (
                vec![
                    created(2, "s1", "tool_calls"),
                    event(
                        3,
                        EventKind::ToolCallStarted,
                        json!({"tool_call_id": "t1", "step_id": "s1", "name": "n"}),
                    ),
                    event(
                        4,
                        EventKind::ToolCallStarted,
                        json!({"tool_call_id": "t1", "step_id": "s1", "name": "n"}),
                    ),
                ],
                "tool call `t1` already exists",
            ),
            (
                vec![event(
                    2,
                    EventKind::ToolCallCompleted,
                    json!({"tool_call_id": "t9", "status": "failed"}),
                )],
                "tool call `t9` was never started",
            ),
            (
                vec![
                    created(2, "s1", "tool_calls"),
                    event(
                        3,
                        EventKind::ToolCallStarted,
                        json!({"tool_call_id": "t1", "step_id": "s1", "name": "n"}),
                    ),
                    event(
                        4,
                        EventKind::ToolCallCompleted,
                        json!({"tool_call_id": "t1", "status": "completed"}),
                    ),
                    event(5, EventKind::ToolCallCompleted, json!({"tool_call_id": "t1", "status": "failed"})),
                ],
                "tool call `t1` has already completed",
            ),
            (
                vec![
                    created(2, "s1", "message_creation"),
                    event(3, EventKind::StepCompleted, json!({"step_id": "s1"})),
                    event(4, EventKind::StepDelta, json!({"step_id": "s1", "text": "late"})),
                ],
                "step `s1` is already completed",
            ),
        ];
        for (batch, reason) in cases {
            let last = batch.last().unwrap();
            let expected = skipped(last.seq, last.kind(), reason);
            let changes_before_last = fresh().apply(batch[..batch.len() - 1].to_vec()).unwrap().changes;
            let plan = fresh().apply(batch.clone()).unwrap();
            assert_eq!(plan.events, batch, "every event is stored");
            assert_eq!(plan.skipped, [expected]);
            assert_eq!(plan.changes, changes_before_last, "the skipped event changed no row: {reason}");
        }
    }

    #[test]
    fn a_skipped_work_event_does_not_start_a_queued_run() {
        let plan = fresh()
            .apply(vec![event(2, EventKind::StepDelta, json!({"step_id": "nope", "text": "x"}))])
            .unwrap();
        assert_eq!(plan.skipped.len(), 1);
        assert_eq!(plan.run.status(), RunStatus::Queued);
        assert_eq!(plan.run.started_at, None);
        assert!(!plan.run_changed);
    }

    #[test]
    fn run_created_after_creation_is_stored_and_skipped() {
        let plan = fresh().apply(vec![event(2, EventKind::RunCreated, json!({}))]).unwrap();
        assert_eq!(seqs(&plan), [2]);
        assert_eq!(
            plan.skipped,
            [skipped(2, EventKind::RunCreated, "`run.created` is written only when a run is created")]
        );
        assert!(!plan.run_changed);
    }

    #[test]
    fn a_batch_mixing_good_and_contradicting_events_applies_the_good_ones() {
        let plan = fresh()
            .apply(vec![
                event(2, EventKind::StepCreated, json!({"step_id": "s1", "type": "message_creation"})),
                event(3, EventKind::StepDelta, json!({"step_id": "s9", "text": "lost"})),
                event(4, EventKind::StepDelta, json!({"step_id": "s1", "text": "hi"})),
                event(5, EventKind::RunStarted, json!({})),
                event(6, EventKind::StepCompleted, json!({"step_id": "s1"})),
                event(7, EventKind::ToolCallCompleted, json!({"tool_call_id": "t9", "status": "failed"})),
                event(
                    8,
                    EventKind::UsageReported,
                    json!({"model": "m", "input_tokens": 1, "output_tokens": 2, "cost_micros": 3}),
                ),
                event(9, EventKind::RunCompleted, json!({"output": "done"})),
                event(10, EventKind::RunFailed, json!({"error": {"code": "x", "message": "y"}})),
            ])
            .unwrap();
        assert_eq!(seqs(&plan), (2..=10).collect::<Vec<_>>());
        assert_eq!(
            plan.skipped.iter().map(|s| (s.seq, s.kind)).collect::<Vec<_>>(),
            [
                (3, EventKind::StepDelta),
                (5, EventKind::RunStarted),
                (7, EventKind::ToolCallCompleted),
                (10, EventKind::RunFailed),
            ]
        );
        assert!(
            matches!(
                plan.changes.as_slice(),
                [
                    Change::InsertStep(_),
                    Change::EndStep { status: StepStatus::Completed, .. },
                    Change::RecordUsage { .. }
                ]
            ),
            "{:?}",
            plan.changes
        );
        assert_eq!(plan.run.status(), RunStatus::Completed);
        assert_eq!(plan.run.output, Some(json!("done")));
        assert_eq!(plan.run.last_error, None, "the late failure did not touch the run");
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
    fn open_steps_end_as_failed_cancelled_or_expired_when_their_run_does() {
        let step_status: Vec<_> = RunStatus::ALL.into_iter().map(step_status_for).collect();
        let (failed, cancelled, expired) =
            (Some(StepStatus::Failed), Some(StepStatus::Cancelled), Some(StepStatus::Expired));
        assert_eq!(step_status, [None, None, None, None, failed, cancelled, expired], "{:?}", RunStatus::ALL);
    }

    #[test]
    fn events_of_another_run_are_refused() {
        let mut foreign = event(2, EventKind::RunStarted, json!({}));
        foreign.run_id = RunId::from_uuid(Uuid::from_u128(99));
        assert_eq!(fresh().apply(vec![foreign]).unwrap_err(), ApplyError::WrongRun { index: 0 });
    }
}
