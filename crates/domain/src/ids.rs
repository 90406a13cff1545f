//! Newtype identifiers, so that a tenant id can never be passed where a run id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A string that is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind}")]
pub struct IdParseError {
    kind: &'static str,
    value: String,
}

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(value)
                    .map(Self)
                    .map_err(|_| IdParseError { kind: $kind, value: value.chars().take(64).collect() })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A tenant: the unit of isolation for data, limits, caches and channels.
    TenantId,
    "tenant id"
);
uuid_id!(
    /// An agent run.
    RunId,
    "run id"
);
uuid_id!(
    /// A conversation session that groups runs.
    SessionId,
    "session id"
);
uuid_id!(
    /// A knowledge document.
    DocumentId,
    "document id"
);
uuid_id!(
    /// One chunk of a knowledge document (a unit of search).
    ChunkId,
    "chunk id"
);
uuid_id!(
    /// An entry of the audit log.
    AuditEntryId,
    "audit entry id"
);

/// The subject (`sub`) of a token: a user, an agent runtime or a service.
///
/// Supabase uses UUIDs, but other issuers do not, so any non-empty printable string of at
/// most 255 characters is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub const MAX_LEN: usize = 255;

    pub fn parse(value: &str) -> Result<Self, IdParseError> {
        let valid = !value.is_empty()
            && value.chars().count() <= Self::MAX_LEN
            && !value.chars().any(char::is_control);
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(IdParseError { kind: "user id", value: value.chars().take(64).collect() })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_parse_and_display_round_trip() {
        let text = "6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11";
        let id: RunId = text.parse().unwrap();
        assert_eq!(id.to_string(), text);
    }

    #[test]
    fn malformed_uuid_is_rejected_with_its_kind() {
        let err = "not-a-uuid".parse::<TenantId>().unwrap_err();
        assert_eq!(err.to_string(), "`not-a-uuid` is not a valid tenant id");
    }

    #[test]
    fn user_id_rejects_empty_overlong_and_control_characters() {
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"u".repeat(256)).is_err());
        assert!(UserId::parse("a\nb").is_err());
        assert_eq!(UserId::parse("user-1").unwrap().as_str(), "user-1");
    }

    #[test]
    fn a_user_id_displays_as_the_subject_it_was_parsed_from() {
        assert_eq!(UserId::parse("auth0|5f7c").unwrap().to_string(), "auth0|5f7c");
    }
}
