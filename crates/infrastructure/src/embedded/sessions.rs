//! [`SessionStore`] on the embedded SQLite store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_application::context::Caller;
use sba_application::pagination::{Page, PageRequest};
use sba_application::ports::{RepositoryError, SessionStore};
use sba_domain::{Session, SessionId, SessionUpdate};
use sea_orm::{ConnectionTrait as _, DatabaseConnection, DbBackend, QueryResult, Statement, Value};

use super::{from_micros, map_db_err, metadata_to_text, object_from_text, to_micros, unexpected, uuid_of};
use crate::tenant_data::{SessionListing, SessionRow, check_session_tenant};

const TABLE: &str = "embedded_sessions";
const COLUMNS: &str = "id, tenant_id, user_id, title, metadata, created_at, updated_at";
/// The caller's scope, bound by [`scope`]: its tenant, then its own sessions unless it sees
/// the whole tenant.
const SCOPE: &str = "tenant_id = ? and (? or user_id = ?)";

/// The values of [`SCOPE`] for `caller`.
fn scope(caller: &Caller) -> [Value; 3] {
    [
        caller.tenant.as_uuid().to_string().into(),
        caller.sees_whole_tenant().into(),
        caller.user.as_str().into(),
    ]
}

/// Sessions in the `embedded_sessions` table; every statement filters by the caller's
/// tenant, and by the caller's user unless the caller sees the whole tenant (the permission
/// matrix's session scope, [`Caller::sees_whole_tenant`]).
#[derive(Debug, Clone)]
pub struct EmbeddedSessionStore {
    db: DatabaseConnection,
}

impl EmbeddedSessionStore {
    pub(super) const fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl SessionStore for EmbeddedSessionStore {
    async fn create(&self, caller: &Caller, session: &Session) -> Result<(), RepositoryError> {
        check_session_tenant(caller, session)?;
        let statement = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!("insert into {TABLE} ({COLUMNS}) values (?, ?, ?, ?, ?, ?, ?)"),
            [
                session.id.as_uuid().to_string().into(),
                caller.tenant.as_uuid().to_string().into(),
                session.user_id.as_str().into(),
                session.title.as_ref().map(|t| t.as_str().to_owned()).into(),
                metadata_to_text(&session.metadata)?.into(),
                to_micros(session.created_at).into(),
                to_micros(session.updated_at).into(),
            ],
        );
        self.db.execute_raw(statement).await.map_err(|e| map_db_err(e, "creating a session"))?;
        Ok(())
    }

    async fn get(&self, caller: &Caller, id: SessionId) -> Result<Option<Session>, RepositoryError> {
        let statement = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!("select {COLUMNS} from {TABLE} where {SCOPE} and id = ?"),
            scope(caller).into_iter().chain([id.as_uuid().to_string().into()]).collect::<Vec<_>>(),
        );
        self.db
            .query_one_raw(statement)
            .await
            .map_err(|e| unexpected(e, "reading a session"))?
            .as_ref()
            .map(session_of)
            .transpose()
    }

    async fn list(&self, caller: &Caller, page: PageRequest) -> Result<Page<Session>, RepositoryError> {
        let listing = SessionListing::new(page)?;
        let mut values: Vec<Value> = scope(caller).into();
        let after = match listing.after {
            None => "",
            Some((at, id)) => {
                values.extend([to_micros(at).into(), id.to_string().into()]);
                "and (created_at, id) < (?, ?)"
            }
        };
        values.push(listing.fetch.into());
        let statement = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "select {COLUMNS} from {TABLE} where {SCOPE} {after}
                 order by created_at desc, id desc limit ?"
            ),
            values,
        );
        let rows = self.db.query_all_raw(statement).await.map_err(|e| unexpected(e, "listing sessions"))?;
        let sessions = rows.iter().map(session_of).collect::<Result<Vec<_>, _>>()?;
        Ok(listing.page(sessions))
    }

    async fn update(
        &self,
        caller: &Caller,
        id: SessionId,
        update: &SessionUpdate,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, RepositoryError> {
        // One statement, so there is no read-then-write race and no lock upgrade; `case`
        // keeps the fields the update does not name (a `null` title can mean "clear it").
        let title = update.title.as_ref().map(|title| title.as_ref().map(|t| t.as_str().to_owned()));
        let metadata = update.metadata.as_ref().map(metadata_to_text).transpose()?;
        let statement = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "update {TABLE}
                 set title = case when ? then ? else title end,
                     metadata = case when ? then ? else metadata end,
                     updated_at = ?
                 where {SCOPE} and id = ?
                 returning {COLUMNS}"
            ),
            [
                title.is_some().into(),
                title.flatten().into(),
                metadata.is_some().into(),
                metadata.into(),
                to_micros(now).into(),
            ]
            .into_iter()
            .chain(scope(caller))
            .chain([id.as_uuid().to_string().into()])
            .collect::<Vec<_>>(),
        );
        self.db
            .query_one_raw(statement)
            .await
            .map_err(|e| unexpected(e, "updating a session"))?
            .as_ref()
            .map(session_of)
            .transpose()
    }
}

/// A stored row as a domain session.
fn session_of(row: &QueryResult) -> Result<Session, RepositoryError> {
    let read = |e| unexpected(e, "reading a session row");
    let id: String = row.try_get("", "id").map_err(read)?;
    let tenant_id: String = row.try_get("", "tenant_id").map_err(read)?;
    let metadata: String = row.try_get("", "metadata").map_err(read)?;
    let created_at: i64 = row.try_get("", "created_at").map_err(read)?;
    let updated_at: i64 = row.try_get("", "updated_at").map_err(read)?;
    SessionRow {
        id: uuid_of(TABLE, &id)?,
        tenant_id: uuid_of(TABLE, &tenant_id)?,
        user_id: row.try_get("", "user_id").map_err(read)?,
        title: row.try_get("", "title").map_err(read)?,
        metadata: object_from_text(TABLE, &metadata)?,
        created_at: from_micros(TABLE, created_at)?,
        updated_at: from_micros(TABLE, updated_at)?,
    }
    .into_session(TABLE)
}
