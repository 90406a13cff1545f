//! What an agent sends to be appended to its run: its own id for the event and the
//! validated data. The server gives it a `seq` (ADR 0017).

use std::fmt;

use super::EventData;
use crate::ValidationError;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_are_one_to_128_characters_without_control_characters() {
        assert_eq!(ProducerId::parse("evt-1").unwrap().as_str(), "evt-1");
        assert!(ProducerId::parse(&"é".repeat(128)).is_ok(), "characters, not bytes");
        assert!(ProducerId::parse("").is_err());
        assert!(ProducerId::parse(&"a".repeat(129)).is_err());
        assert!(ProducerId::parse("a\nb").is_err());
        assert_eq!(ProducerId::parse("").unwrap_err().field, "id");
    }
}
