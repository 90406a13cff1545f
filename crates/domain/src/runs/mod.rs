//! Agent runs: the run entity, its status state machine and its value objects.

mod agent_name;
pub mod progress;
mod status;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use agent_name::AgentName;
pub use status::{InvalidTransition, RunStatus};

use crate::ValidationError;
use crate::ids::{RunId, SessionId, TenantId, UserId};

/// Free-form client metadata attached to a run: a JSON object with bounded keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(serde_json::Map<String, Value>);

impl Metadata {
    pub const MAX_KEYS: usize = 64;
    pub const MAX_KEY_LEN: usize = 64;

    pub fn parse(map: serde_json::Map<String, Value>) -> Result<Self, ValidationError> {
        if map.len() > Self::MAX_KEYS {
            return Err(ValidationError::new(
                "metadata",
                format!("at most {} keys are allowed", Self::MAX_KEYS),
            ));
        }
        if let Some(key) = map.keys().find(|k| k.is_empty() || k.chars().count() > Self::MAX_KEY_LEN) {
            let shown: String = key.chars().take(16).collect();
            return Err(ValidationError::new(
                "metadata",
                format!("key `{shown}` must be 1 to {} characters long", Self::MAX_KEY_LEN),
            ));
        }
        Ok(Self(map))
    }

    pub fn as_map(&self) -> &serde_json::Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> serde_json::Map<String, Value> {
        self.0
    }
}

/// Why a run failed, as reported by its agent runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    pub code: String,
    pub message: String,
}

/// What a client asks for when it starts a run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub agent: AgentName,
    pub input: Value,
    pub session_id: Option<SessionId>,
    pub metadata: Metadata,
}

/// One execution of an agent on behalf of a user of a tenant.
///
/// The status only changes through [`AgentRun::transition_to`] (or the helpers built on it),
/// which enforces the state machine and keeps the timestamps consistent with it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRun {
    pub id: RunId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub agent: AgentName,
    status: RunStatus,
    pub input: Value,
    pub output: Option<Value>,
    pub last_error: Option<RunError>,
    pub session_id: Option<SessionId>,
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// Every stored field of a run, for adapters that rebuild one from storage.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    pub id: RunId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub agent: AgentName,
    pub status: RunStatus,
    pub input: Value,
    pub output: Option<Value>,
    pub last_error: Option<RunError>,
    pub session_id: Option<SessionId>,
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl AgentRun {
    /// A new run, `queued`.
    pub fn new(id: RunId, new: NewRun, now: DateTime<Utc>) -> Self {
        Self {
            id,
            tenant_id: new.tenant_id,
            user_id: new.user_id,
            agent: new.agent,
            status: RunStatus::Queued,
            input: new.input,
            output: None,
            last_error: None,
            session_id: new.session_id,
            metadata: new.metadata,
            created_at: now,
            started_at: None,
            completed_at: None,
            cancelled_at: None,
        }
    }

    /// Rebuilds a run from storage, trusting that it was stored by this model.
    pub fn from_stored(stored: StoredRun) -> Self {
        Self {
            id: stored.id,
            tenant_id: stored.tenant_id,
            user_id: stored.user_id,
            agent: stored.agent,
            status: stored.status,
            input: stored.input,
            output: stored.output,
            last_error: stored.last_error,
            session_id: stored.session_id,
            metadata: stored.metadata,
            created_at: stored.created_at,
            started_at: stored.started_at,
            completed_at: stored.completed_at,
            cancelled_at: stored.cancelled_at,
        }
    }

    pub const fn status(&self) -> RunStatus {
        self.status
    }

    /// Moves the run to `to`, recording when it started, ended or was cancelled.
    ///
    /// # Errors
    /// [`InvalidTransition`] when the state machine does not allow `status → to`; the run is
    /// left unchanged.
    pub fn transition_to(&mut self, to: RunStatus, now: DateTime<Utc>) -> Result<(), InvalidTransition> {
        self.status.check_transition(to)?;
        self.status = to;
        match to {
            RunStatus::InProgress => {
                self.started_at.get_or_insert(now);
            }
            RunStatus::Cancelled => self.cancelled_at = Some(now),
            RunStatus::Completed | RunStatus::Failed | RunStatus::Expired => self.completed_at = Some(now),
            RunStatus::Queued | RunStatus::RequiresAction => {}
        }
        Ok(())
    }

    /// Cancels the run.
    ///
    /// # Errors
    /// [`InvalidTransition`] when the run has already ended.
    pub fn cancel(&mut self, now: DateTime<Utc>) -> Result<(), InvalidTransition> {
        self.transition_to(RunStatus::Cancelled, now)
    }

    /// Completes the run with its output.
    ///
    /// # Errors
    /// [`InvalidTransition`] unless the run is in progress.
    pub fn complete(&mut self, output: Value, now: DateTime<Utc>) -> Result<(), InvalidTransition> {
        self.transition_to(RunStatus::Completed, now)?;
        self.output = Some(output);
        Ok(())
    }

    /// Fails the run with the runtime's error.
    ///
    /// # Errors
    /// [`InvalidTransition`] when the run has already ended.
    pub fn fail(&mut self, error: RunError, now: DateTime<Utc>) -> Result<(), InvalidTransition> {
        self.transition_to(RunStatus::Failed, now)?;
        self.last_error = Some(error);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn queued_run() -> AgentRun {
        AgentRun::new(
            RunId::from_uuid(Uuid::now_v7()),
            NewRun {
                tenant_id: TenantId::from_uuid(Uuid::now_v7()),
                user_id: UserId::parse("user-1").unwrap(),
                agent: AgentName::parse("support-bot").unwrap(),
                input: json!({"question": "hi"}),
                session_id: None,
                metadata: Metadata::default(),
            },
            at(0),
        )
    }

    #[test]
    fn new_run_is_queued_without_lifecycle_timestamps() {
        let run = queued_run();
        assert_eq!(run.status(), RunStatus::Queued);
        assert_eq!((run.started_at, run.completed_at, run.cancelled_at), (None, None, None));
    }

    #[test]
    fn started_at_is_kept_from_the_first_start_after_requires_action() {
        let mut run = queued_run();
        run.transition_to(RunStatus::InProgress, at(1)).unwrap();
        run.transition_to(RunStatus::RequiresAction, at(2)).unwrap();
        run.transition_to(RunStatus::InProgress, at(3)).unwrap();
        run.complete(json!("done"), at(4)).unwrap();
        assert_eq!(run.started_at, Some(at(1)));
        assert_eq!(run.completed_at, Some(at(4)));
        assert_eq!(run.output, Some(json!("done")));
    }

    #[test]
    fn cancel_records_cancelled_at_and_a_second_cancel_is_rejected() {
        let mut run = queued_run();
        run.cancel(at(5)).unwrap();
        assert_eq!(run.cancelled_at, Some(at(5)));
        let err = run.cancel(at(6)).unwrap_err();
        assert_eq!(err, InvalidTransition { from: RunStatus::Cancelled, to: RunStatus::Cancelled });
        assert_eq!(run.cancelled_at, Some(at(5)), "a rejected transition changes nothing");
    }

    #[test]
    fn completing_a_queued_run_is_rejected_and_leaves_no_output() {
        let mut run = queued_run();
        assert!(run.complete(json!(1), at(1)).is_err());
        assert_eq!(run.output, None);
        assert_eq!(run.status(), RunStatus::Queued);
    }

    #[test]
    fn fail_keeps_the_error() {
        let mut run = queued_run();
        run.transition_to(RunStatus::InProgress, at(1)).unwrap();
        let error = RunError { code: "tool_timeout".into(), message: "search timed out".into() };
        run.fail(error.clone(), at(2)).unwrap();
        assert_eq!(run.last_error, Some(error));
        assert_eq!(run.status(), RunStatus::Failed);
    }

    #[test]
    fn metadata_rejects_too_many_keys_and_empty_keys() {
        let many: serde_json::Map<_, _> = (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(Metadata::parse(many).unwrap_err().field, "metadata");
        let empty: serde_json::Map<_, _> = [(String::new(), json!(1))].into_iter().collect();
        assert!(Metadata::parse(empty).is_err());
    }

    #[test]
    fn metadata_keeps_up_to_64_keys_of_up_to_64_characters_as_given() {
        let most: serde_json::Map<_, _> = (0..64).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(Metadata::parse(most.clone()).unwrap().into_map(), most);
        let longest_key: serde_json::Map<_, _> = [("é".repeat(64), json!(1))].into_iter().collect();
        assert_eq!(Metadata::parse(longest_key.clone()).unwrap().into_map(), longest_key);
        let overlong_key: serde_json::Map<_, _> = [("é".repeat(65), json!(1))].into_iter().collect();
        assert_eq!(Metadata::parse(overlong_key).unwrap_err().field, "metadata");
    }
}
