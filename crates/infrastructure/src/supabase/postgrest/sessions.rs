//! [`PostgrestSessionStore`]: the `sessions` table, read and written with the caller's
//! token.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sba_application::context::Caller;
use sba_application::pagination::{Cursor, Page, PageRequest};
use sba_application::ports::{RepositoryError, SessionStore};
use sba_domain::{Metadata, Session, SessionId, SessionTitle, SessionUpdate, TenantId, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::client::{Acting, Call, PostgrestClient};
use super::{corrupt_row, eq, metadata_of};

const TABLE: &str = "sessions";
const COLUMNS: &str = "id,tenant_id,user_id,title,metadata,created_at,updated_at";

/// Sessions in Supabase's `sessions` table. Every request carries the caller's token (row-
/// level security applies) and filters on the caller's tenant.
#[derive(Debug, Clone)]
pub struct PostgrestSessionStore {
    client: PostgrestClient,
}

impl PostgrestSessionStore {
    pub(super) const fn new(client: PostgrestClient) -> Self {
        Self { client }
    }
}

/// A `sessions` row as PostgREST returns it.
#[derive(Deserialize)]
struct SessionRow {
    id: Uuid,
    tenant_id: Uuid,
    user_id: String,
    title: Option<String>,
    metadata: serde_json::Map<String, serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SessionRow {
    fn into_session(self) -> Result<Session, RepositoryError> {
        Ok(Session {
            id: SessionId::from_uuid(self.id),
            tenant_id: TenantId::from_uuid(self.tenant_id),
            user_id: UserId::parse(&self.user_id).map_err(|e| corrupt_row(TABLE, e))?,
            title: self
                .title
                .as_deref()
                .map(SessionTitle::parse)
                .transpose()
                .map_err(|e| corrupt_row(TABLE, e))?,
            metadata: metadata_of(TABLE, self.metadata)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The body that creates a session.
#[derive(Serialize)]
struct NewSessionRow<'a> {
    id: Uuid,
    tenant_id: Uuid,
    user_id: &'a str,
    title: Option<&'a str>,
    metadata: &'a Metadata,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The rows of `rows`, mapped.
fn sessions_of(rows: Vec<SessionRow>) -> Result<Vec<Session>, RepositoryError> {
    rows.into_iter().map(SessionRow::into_session).collect()
}

#[async_trait]
impl SessionStore for PostgrestSessionStore {
    async fn create(&self, caller: &Caller, session: &Session) -> Result<(), RepositoryError> {
        if session.tenant_id != caller.tenant {
            // What row-level security's `with check` would refuse: a bug, not a conflict.
            return Err(anyhow::anyhow!(
                "a session of tenant {} cannot be created for tenant {}",
                session.tenant_id,
                caller.tenant
            )
            .into());
        }
        let row = NewSessionRow {
            id: session.id.as_uuid(),
            tenant_id: caller.tenant.as_uuid(),
            user_id: session.user_id.as_str(),
            title: session.title.as_ref().map(SessionTitle::as_str),
            metadata: &session.metadata,
            created_at: session.created_at,
            updated_at: session.updated_at,
        };
        let call = Call::post("creating a session", TABLE, &row, "return=minimal")?;
        self.client.execute(Acting::User(caller), call).await?;
        Ok(())
    }

    async fn get(&self, caller: &Caller, id: SessionId) -> Result<Option<Session>, RepositoryError> {
        let call = Call::get("reading a session", TABLE)
            .query("select", COLUMNS)
            .query("id", eq(id))
            .query("tenant_id", eq(caller.tenant));
        let rows: Vec<SessionRow> = self.client.fetch(Acting::User(caller), call).await?;
        rows.into_iter().next().map(SessionRow::into_session).transpose()
    }

    async fn list(&self, caller: &Caller, page: PageRequest) -> Result<Page<Session>, RepositoryError> {
        let mut call = Call::get("listing sessions", TABLE)
            .query("select", COLUMNS)
            .query("tenant_id", eq(caller.tenant))
            .query("order", "created_at.desc,id.desc")
            // One row more than the page proves that another page exists.
            .query("limit", page.limit.saturating_add(1).to_string());
        match page.after {
            None => {}
            Some(Cursor::Time { at, id }) => {
                // Quoted: a timestamp holds `.` and `:`, which PostgREST's logic trees
                // reserve. The query string is URL-encoded when sent, so a `+` could not turn
                // into a space either.
                let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
                call = call
                    .query("or", format!("(created_at.lt.\"{at}\",and(created_at.eq.\"{at}\",id.lt.{id}))"));
            }
            Some(Cursor::Seq(_)) => {
                return Err(anyhow::anyhow!("a seq cursor was given to the session listing").into());
            }
        }
        let rows: Vec<SessionRow> = self.client.fetch(Acting::User(caller), call).await?;
        Ok(Page::from_rows(sessions_of(rows)?, page.limit, |s| Cursor::Time {
            at: s.created_at,
            id: s.id.as_uuid(),
        }))
    }

    async fn update(
        &self,
        caller: &Caller,
        id: SessionId,
        update: &SessionUpdate,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, RepositoryError> {
        // Only the named fields: a `null` title clears it, an absent one keeps it.
        let mut body = serde_json::Map::new();
        if let Some(title) = &update.title {
            body.insert("title".into(), title.as_ref().map(SessionTitle::as_str).into());
        }
        if let Some(metadata) = &update.metadata {
            body.insert("metadata".into(), serde_json::Value::Object(metadata.as_map().clone()));
        }
        body.insert("updated_at".into(), serde_json::to_value(now).map_err(anyhow::Error::new)?);
        let call = Call::patch("updating a session", TABLE, &body, "return=representation")?
            .query("select", COLUMNS)
            .query("id", eq(id))
            .query("tenant_id", eq(caller.tenant));
        let rows: Vec<SessionRow> = self.client.fetch(Acting::User(caller), call).await?;
        let mut sessions = sessions_of(rows)?;
        if sessions.len() > 1 {
            return Err(anyhow::anyhow!("updating a session changed {} rows", sessions.len()).into());
        }
        Ok(sessions.pop())
    }
}
