//! [`SupabaseSqlSessionStore`]: the `SessionStore` on Supabase's `sessions` table over direct
//! SQL.
//!
//! Every call is one unit of work for the caller (role `authenticated`, tenant context and
//! claims set in the same transaction), and every statement also names the tenant itself,
//! and the user unless the caller sees the whole tenant: row-level security and the
//! explicit filters each keep other tenants' (and other users') sessions out.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_application::context::Caller;
use sba_application::pagination::{Page, PageRequest};
use sba_application::ports::{RepositoryError, SessionStore};
use sba_domain::{Session, SessionId, SessionUpdate};
use sea_orm::{ConnectionTrait as _, DbBackend, DbErr, QueryResult, Statement};

use super::{SupabaseSql, commit, db_error, metadata_object, metadata_value, session_owner, unexpected};
use crate::observe;
use crate::tenant_data::{SessionListing, SessionRow, check_session_tenant};

const TABLE: &str = "sessions";

/// The columns every read selects, in [`session_of`]'s terms.
const COLUMNS: &str = "id, tenant_id, user_id, title, metadata, created_at, updated_at";

/// Sessions in Supabase, read and written over direct SQL.
#[derive(Debug, Clone)]
pub struct SupabaseSqlSessionStore {
    sql: SupabaseSql,
}

impl SupabaseSqlSessionStore {
    pub(super) const fn new(sql: SupabaseSql) -> Self {
        Self { sql }
    }
}

/// The domain session of a `sessions` row.
fn session_of(row: &QueryResult) -> Result<Session, RepositoryError> {
    let read = |e: DbErr| unexpected(e, "reading a session row");
    SessionRow {
        id: row.try_get("", "id").map_err(read)?,
        tenant_id: row.try_get("", "tenant_id").map_err(read)?,
        user_id: row.try_get("", "user_id").map_err(read)?,
        title: row.try_get("", "title").map_err(read)?,
        metadata: metadata_object(row.try_get("", "metadata").map_err(read)?, TABLE)?,
        created_at: row.try_get("", "created_at").map_err(read)?,
        updated_at: row.try_get("", "updated_at").map_err(read)?,
    }
    .into_session(TABLE)
}

#[async_trait]
impl SessionStore for SupabaseSqlSessionStore {
    async fn create(&self, caller: &Caller, session: &Session) -> Result<(), RepositoryError> {
        // Row-level security would refuse it too, but as an opaque policy violation.
        check_session_tenant(caller, session)?;
        observe::sql!(Supabase, "sessions.create", &self.sql.db, async {
            let tx = self.sql.begin_for(caller, "opening a session insert").await?;
            tx.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "insert into public.sessions (id, tenant_id, user_id, title, metadata, created_at, updated_at) \
                 values ($1, $2, $3, $4, $5, $6, $7)",
                [
                    session.id.as_uuid().into(),
                    caller.tenant.as_uuid().into(),
                    session.user_id.as_str().into(),
                    session.title.as_ref().map(|t| t.as_str().to_owned()).into(),
                    metadata_value(&session.metadata),
                    session.created_at.into(),
                    session.updated_at.into(),
                ],
            ))
            .await
            .map_err(|e| db_error(e, "inserting a session"))?;
            commit(tx, "committing a session insert").await
        })
        .await
    }

    async fn get(&self, caller: &Caller, id: SessionId) -> Result<Option<Session>, RepositoryError> {
        observe::sql!(Supabase, "sessions.get", &self.sql.db, async {
            let tx = self.sql.begin_for(caller, "opening a session read").await?;
            let row = tx
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    format!(
                        "select {COLUMNS} from public.sessions where tenant_id = $1 and id = $2 \
                         and ($3::text is null or user_id = $3)"
                    ),
                    [caller.tenant.as_uuid().into(), id.as_uuid().into(), session_owner(caller).into()],
                ))
                .await
                .map_err(|e| unexpected(e, "reading a session"))?;
            commit(tx, "ending a session read").await?;
            row.as_ref().map(session_of).transpose()
        })
        .await
    }

    async fn list(&self, caller: &Caller, page: PageRequest) -> Result<Page<Session>, RepositoryError> {
        observe::sql!(Supabase, "sessions.list", &self.sql.db, async {
            let listing = SessionListing::new(page)?;
            let fetch = listing.fetch;
            let owner = session_owner(caller);
            let statement = match listing.after {
                None => Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    format!(
                        "select {COLUMNS} from public.sessions where tenant_id = $1 \
                         and ($3::text is null or user_id = $3) \
                         order by created_at desc, id desc limit $2"
                    ),
                    [caller.tenant.as_uuid().into(), fetch.into(), owner.into()],
                ),
                Some((at, id)) => Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    format!(
                        "select {COLUMNS} from public.sessions where tenant_id = $1 \
                         and ($5::text is null or user_id = $5) \
                         and (created_at, id) < ($2, $3) order by created_at desc, id desc limit $4"
                    ),
                    [caller.tenant.as_uuid().into(), at.into(), id.into(), fetch.into(), owner.into()],
                ),
            };
            let tx = self.sql.begin_for(caller, "opening a session listing").await?;
            let rows = tx.query_all_raw(statement).await.map_err(|e| unexpected(e, "listing sessions"))?;
            commit(tx, "ending a session listing").await?;
            let sessions = rows.iter().map(session_of).collect::<Result<Vec<_>, _>>()?;
            Ok(listing.page(sessions))
        })
        .await
    }

    async fn update(
        &self,
        caller: &Caller,
        id: SessionId,
        update: &SessionUpdate,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, RepositoryError> {
        observe::sql!(Supabase, "sessions.update", &self.sql.db, async {
            // `$3` says whether the title changes at all, since `$4` is NULL both for "clear it"
            // and for "keep it".
            let title = update.title.as_ref().map(|t| t.as_ref().map(|t| t.as_str().to_owned()));
            let tx = self.sql.begin_for(caller, "opening a session update").await?;
            let row = tx
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    format!(
                        "update public.sessions set \
                         title = case when $3 then $4 else title end, \
                         metadata = coalesce($5, metadata), \
                         updated_at = $6 \
                         where tenant_id = $1 and id = $2 and ($7::text is null or user_id = $7) \
                         returning {COLUMNS}"
                    ),
                    [
                        caller.tenant.as_uuid().into(),
                        id.as_uuid().into(),
                        title.is_some().into(),
                        title.flatten().into(),
                        update
                            .metadata
                            .as_ref()
                            .map(|m| serde_json::Value::Object(m.as_map().clone()))
                            .into(),
                        now.into(),
                        session_owner(caller).into(),
                    ],
                ))
                .await
                .map_err(|e| db_error(e, "updating a session"))?;
            commit(tx, "committing a session update").await?;
            row.as_ref().map(session_of).transpose()
        })
        .await
    }
}
