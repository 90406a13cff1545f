//! [`PostgrestSessionStore`]: the `sessions` table, read and written with a plain user's
//! token, or through the service for admins, agents and services.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sba_application::context::Caller;
use sba_application::pagination::{Page, PageRequest};
use sba_application::ports::{RepositoryError, SessionStore};
use sba_domain::{Metadata, Session, SessionId, SessionTitle, SessionUpdate};
use serde::Serialize;
use uuid::Uuid;

use super::client::{Acting, Call, PostgrestClient};
use super::eq;
use crate::tenant_data::{SessionListing, SessionRow, check_session_tenant};

const TABLE: &str = "sessions";
const COLUMNS: &str = "id,tenant_id,user_id,title,metadata,created_at,updated_at";

/// Sessions in Supabase's `sessions` table. A plain user's requests carry its token (row-
/// level security applies); every request filters on the caller's tenant, and on the
/// caller's own sessions unless it sees the whole tenant, which is all that bounds a
/// request made through the service.
#[derive(Debug, Clone)]
pub struct PostgrestSessionStore {
    client: PostgrestClient,
}

impl PostgrestSessionStore {
    pub(super) const fn new(client: PostgrestClient) -> Self {
        Self { client }
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

/// `call` limited to `caller`'s own sessions unless the caller sees the whole tenant.
fn owned_by(call: Call, caller: &Caller) -> Call {
    if caller.sees_whole_tenant() { call } else { call.query("user_id", eq(&caller.user)) }
}

/// The rows of `rows`, mapped.
fn sessions_of(rows: Vec<SessionRow>) -> Result<Vec<Session>, RepositoryError> {
    rows.into_iter().map(|row| row.into_session(TABLE)).collect()
}

#[async_trait]
impl SessionStore for PostgrestSessionStore {
    async fn create(&self, caller: &Caller, session: &Session) -> Result<(), RepositoryError> {
        check_session_tenant(caller, session)?;
        // Through the service no policy checks the owner: a session is its creator's.
        if session.user_id != caller.user {
            return Err(anyhow::anyhow!("a session cannot be created for another user").into());
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
        let call = owned_by(call, caller);
        let rows: Vec<SessionRow> = self.client.fetch(Acting::User(caller), call).await?;
        rows.into_iter().next().map(|row| row.into_session(TABLE)).transpose()
    }

    async fn list(&self, caller: &Caller, page: PageRequest) -> Result<Page<Session>, RepositoryError> {
        let listing = SessionListing::new(page)?;
        let mut call = Call::get("listing sessions", TABLE)
            .query("select", COLUMNS)
            .query("tenant_id", eq(caller.tenant))
            .query("order", "created_at.desc,id.desc")
            .query("limit", listing.fetch.to_string());
        call = owned_by(call, caller);
        if let Some((at, id)) = listing.after {
            // Quoted: a timestamp holds `.` and `:`, which PostgREST's logic trees reserve.
            // The query string is URL-encoded when sent, so a `+` could not turn into a
            // space either.
            let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
            call =
                call.query("or", format!("(created_at.lt.\"{at}\",and(created_at.eq.\"{at}\",id.lt.{id}))"));
        }
        let rows: Vec<SessionRow> = self.client.fetch(Acting::User(caller), call).await?;
        Ok(listing.page(sessions_of(rows)?))
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
        let call = owned_by(call, caller);
        let rows: Vec<SessionRow> = self.client.fetch(Acting::User(caller), call).await?;
        let mut sessions = sessions_of(rows)?;
        if sessions.len() > 1 {
            return Err(anyhow::anyhow!("updating a session changed {} rows", sessions.len()).into());
        }
        Ok(sessions.pop())
    }
}
