//! The run status state machine.
//!
//! ```text
//! queued ──► in_progress ◄──► requires_action
//!   │             │                 │
//!   └─────────────┴────────┬────────┘
//!                          ▼
//!        completed (from in_progress only) | failed | cancelled | expired
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a run is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    InProgress,
    RequiresAction,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

/// A status change that the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a run cannot go from {from} to {to}")]
pub struct InvalidTransition {
    pub from: RunStatus,
    pub to: RunStatus,
}

/// A string that names no run status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown run status")]
pub struct UnknownStatus;

impl RunStatus {
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::InProgress,
        Self::RequiresAction,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Expired,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::RequiresAction => "requires_action",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Whether the run has ended; a terminal run never changes again.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled | Self::Expired)
    }

    /// Whether the state machine allows going from `self` to `to`.
    pub const fn can_transition_to(self, to: Self) -> bool {
        use RunStatus::{Cancelled, Completed, Expired, Failed, InProgress, Queued, RequiresAction};
        matches!(
            (self, to),
            (Queued | RequiresAction, InProgress)
                | (InProgress, RequiresAction | Completed)
                | (Queued | InProgress | RequiresAction, Failed | Cancelled | Expired)
        )
    }

    /// # Errors
    /// [`InvalidTransition`] when [`Self::can_transition_to`] is false.
    pub const fn check_transition(self, to: Self) -> Result<(), InvalidTransition> {
        if self.can_transition_to(to) { Ok(()) } else { Err(InvalidTransition { from: self, to }) }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = UnknownStatus;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|s| s.as_str() == value).ok_or(UnknownStatus)
    }
}

#[cfg(test)]
mod tests {
    use super::RunStatus::{self, *};

    #[test]
    fn allowed_transitions_are_exactly_the_documented_ones() {
        let allowed = [
            (Queued, InProgress),
            (Queued, Failed),
            (Queued, Cancelled),
            (Queued, Expired),
            (InProgress, RequiresAction),
            (InProgress, Completed),
            (InProgress, Failed),
            (InProgress, Cancelled),
            (InProgress, Expired),
            (RequiresAction, InProgress),
            (RequiresAction, Failed),
            (RequiresAction, Cancelled),
            (RequiresAction, Expired),
        ];
        for from in RunStatus::ALL {
            for to in RunStatus::ALL {
                assert_eq!(from.can_transition_to(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn terminal_statuses_allow_no_transition() {
        for from in RunStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(RunStatus::ALL.into_iter().all(|to| !from.can_transition_to(to)), "{from}");
        }
    }

    #[test]
    fn status_names_round_trip_and_match_serde() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert!("running".parse::<RunStatus>().is_err());
    }
}
