//! The name of the agent a run executes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// An agent name: 1 to 64 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentName(String);

impl AgentName {
    pub const MAX_LEN: usize = 64;

    /// # Errors
    /// A [`ValidationError`] on field `agent` explaining the rule that was broken.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let starts_well = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let allowed = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if starts_well && allowed && value.len() <= Self::MAX_LEN {
            Ok(Self(value.to_owned()))
        } else {
            Err(ValidationError::new(
                "agent",
                "must be 1 to 64 characters of letters, digits, '_', '.' or '-', starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::AgentName;

    #[test]
    fn accepts_typical_names() {
        for name in ["support-bot", "gpt.researcher_2", "a", &"x".repeat(64)] {
            assert!(AgentName::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn a_name_reads_back_as_it_was_given() {
        let name = AgentName::parse("gpt.researcher_2").unwrap();
        assert_eq!((name.as_str(), name.to_string().as_str()), ("gpt.researcher_2", "gpt.researcher_2"));
        assert_eq!(serde_json::to_value(&name).unwrap(), "gpt.researcher_2");
    }

    #[test]
    fn rejects_empty_overlong_and_odd_characters() {
        for name in ["", "-leading", "has space", "ünïcode", "semi;colon", &"x".repeat(65)] {
            assert_eq!(AgentName::parse(name).unwrap_err().field, "agent", "{name}");
        }
    }
}
