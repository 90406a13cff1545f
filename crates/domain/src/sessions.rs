//! Sessions: conversations that group a tenant's runs.

use chrono::{DateTime, Utc};

use crate::ValidationError;
use crate::ids::{SessionId, TenantId, UserId};
use crate::runs::Metadata;

/// A session's title: 1 to [`SessionTitle::MAX_CHARS`] characters, not only whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTitle(String);

impl SessionTitle {
    pub const MAX_CHARS: usize = 500;

    /// # Errors
    /// When the title is blank or longer than [`Self::MAX_CHARS`] characters.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if value.trim().is_empty() {
            return Err(ValidationError::new("title", "must not be blank"));
        }
        if value.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "title",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ValidationError::new("title", "must not contain control characters"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A conversation of a tenant: runs name it with their `session_id`. Every user of the
/// tenant can read it, like runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub tenant_id: TenantId,
    /// The user who created it.
    pub user_id: UserId,
    pub title: Option<SessionTitle>,
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A change to a session: every `Some` field replaces the stored one (`Some(None)` clears
/// the title).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionUpdate {
    pub title: Option<Option<SessionTitle>>,
    pub metadata: Option<Metadata>,
}

impl SessionUpdate {
    /// Whether the update changes nothing.
    pub const fn is_empty(&self) -> bool {
        self.title.is_none() && self.metadata.is_none()
    }

    /// Applies the update to `session` at `now`.
    pub fn apply_to(&self, session: &mut Session, now: DateTime<Utc>) {
        if let Some(title) = &self.title {
            session.title.clone_from(title);
        }
        if let Some(metadata) = &self.metadata {
            session.metadata.clone_from(metadata);
        }
        session.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_must_be_printable_and_not_blank_and_bounded() {
        assert!(SessionTitle::parse("Refund for order 42").is_ok());
        assert_eq!(SessionTitle::parse("   ").unwrap_err().field, "title");
        assert!(SessionTitle::parse("a\u{0}b").is_err());
        assert!(SessionTitle::parse(&"é".repeat(500)).is_ok());
        assert!(SessionTitle::parse(&"é".repeat(501)).is_err());
    }

    #[test]
    fn an_update_replaces_only_the_fields_it_names() {
        let created = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut session = Session {
            id: SessionId::from_uuid(uuid::Uuid::from_u128(1)),
            tenant_id: TenantId::from_uuid(uuid::Uuid::from_u128(2)),
            user_id: UserId::parse("alice").unwrap(),
            title: Some(SessionTitle::parse("old").unwrap()),
            metadata: Metadata::default(),
            created_at: created,
            updated_at: created,
        };
        let later = created + chrono::Duration::seconds(5);
        let mut metadata = serde_json::Map::new();
        metadata.insert("k".into(), serde_json::json!(1));
        SessionUpdate { title: None, metadata: Some(Metadata::parse(metadata).unwrap()) }
            .apply_to(&mut session, later);
        assert_eq!(session.title.as_ref().map(SessionTitle::as_str), Some("old"));
        assert_eq!(session.metadata.as_map().len(), 1);
        assert_eq!(session.updated_at, later);
        SessionUpdate { title: Some(None), metadata: None }.apply_to(&mut session, later);
        assert_eq!(session.title, None);
    }

    #[test]
    fn an_update_is_empty_only_when_it_names_no_field() {
        assert!(SessionUpdate::default().is_empty());
        assert!(!SessionUpdate { title: Some(None), metadata: None }.is_empty());
        assert!(!SessionUpdate { title: None, metadata: Some(Metadata::default()) }.is_empty());
    }
}
