//! [`SupabaseSql`]: units of work on the Supabase schema over a direct PostgreSQL
//! connection, and the adapters built on them: [`SupabaseSqlTenantDirectory`] (the
//! `TenantDirectory` on `tenants`), [`SupabaseSqlSessionStore`] and
//! [`SupabaseSqlKnowledgeStore`].
//!
//! A unit of work is one transaction that first sets its tenant context
//! (`set_tenant_context`) and the caller's JWT claims (`request.jwt.claims`: `sub`, `role`,
//! `tenant_id`), both transaction-local, and then its role (`set local role`): nothing
//! outlives the transaction, so a pooled connection (or a transaction-mode pooler's) never
//! carries one caller's tenant into another's work. User work runs as `authenticated` under
//! the same row-level-security policies as PostgREST's requests (a plain user's own sessions,
//! an admin's or a service's whole tenant; knowledge written by admins and services only);
//! `set_tenant_context` is the schema owner's alone, so it is called before the role
//! switch. `service_role` (BYPASSRLS) is for platform work only, such as tenant directory
//! lookups (ADR 0014).

mod knowledge;
mod sessions;

use async_trait::async_trait;
use sba_application::context::Caller;
use sba_application::ports::{RepositoryError, TenantDirectory};
use sba_domain::{Metadata, Tenant, TenantId};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, QueryResult, Statement,
    TransactionTrait,
};

use crate::observe;
use crate::tenant_data::{JsonObject, TenantRow, corrupt_row};

pub use knowledge::SupabaseSqlKnowledgeStore;
pub use sessions::SupabaseSqlSessionStore;

/// Who a unit of work acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitOfWork<'a> {
    /// Work for a caller: role `authenticated`, the caller's tenant as the context and its
    /// user and role as the JWT claims, so row-level security applies the permission
    /// matrix.
    Caller(&'a Caller),
    /// Platform work: role `service_role`, which bypasses row-level security.
    Platform,
}

/// Direct SQL access to the Supabase schema.
#[derive(Debug, Clone)]
pub struct SupabaseSql {
    db: DatabaseConnection,
}

impl SupabaseSql {
    pub const fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Begins a unit of work: the transaction's role and tenant context are set before the
    /// caller's first statement.
    ///
    /// # Errors
    /// When the database cannot be reached or refuses the role.
    pub async fn begin(&self, unit: UnitOfWork<'_>) -> Result<DatabaseTransaction, DbErr> {
        let tx = self.db.begin().await?;
        match unit {
            UnitOfWork::Caller(caller) => {
                // As the connecting owner: the API roles may not set a context.
                tx.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "select public.set_tenant_context($1), set_config('request.jwt.claims', $2, true)",
                    [caller.tenant.as_uuid().into(), claims_of(caller).into()],
                ))
                .await?;
                tx.execute_unprepared("set local role authenticated").await?;
            }
            UnitOfWork::Platform => {
                tx.execute_unprepared("set local role service_role").await?;
            }
        }
        Ok(tx)
    }

    /// Readiness of the Supabase database (`supabase` in `/readyz`).
    pub fn dependency_check(&self) -> std::sync::Arc<dyn sba_application::ports::DependencyCheck> {
        std::sync::Arc::new(crate::sql::DatabaseCheck { component: "supabase", db: self.db.clone() })
    }

    pub fn tenant_directory(&self) -> SupabaseSqlTenantDirectory {
        SupabaseSqlTenantDirectory { sql: self.clone() }
    }

    pub fn session_store(&self) -> SupabaseSqlSessionStore {
        SupabaseSqlSessionStore::new(self.clone())
    }

    pub fn knowledge_store(&self) -> SupabaseSqlKnowledgeStore {
        SupabaseSqlKnowledgeStore::new(self.clone())
    }

    /// Begins a unit of work as a user of `caller`'s tenant; a failure is `Unexpected`,
    /// naming what was being done.
    async fn begin_for(
        &self,
        caller: &Caller,
        doing: &'static str,
    ) -> Result<DatabaseTransaction, RepositoryError> {
        self.begin(UnitOfWork::Caller(caller)).await.map_err(|e| unexpected(e, doing))
    }
}

/// The JWT claims the schema's policies read for `caller` (`auth.jwt()`): what PostgREST
/// would have set from the caller's token, with SBA's role name.
fn claims_of(caller: &Caller) -> String {
    serde_json::json!({
        "sub": caller.user.as_str(),
        "role": caller.role.as_str(),
        "tenant_id": caller.tenant.as_uuid(),
    })
    .to_string()
}

/// The user a caller's session statements are limited to: `None` when the caller acts on
/// the whole tenant (the permission matrix), so that `($n::text is null or user_id = $n)`
/// holds for every row. Row-level security applies the same rule; the filter keeps the
/// statements right on their own.
fn session_owner(caller: &Caller) -> Option<String> {
    (!caller.sees_whole_tenant()).then(|| caller.user.as_str().to_owned())
}

/// Commits a unit of work, as a port method's error.
async fn commit(tx: DatabaseTransaction, doing: &'static str) -> Result<(), RepositoryError> {
    tx.commit().await.map_err(|e| unexpected(e, doing))
}

/// Tenants from the `tenants` table (platform work).
#[derive(Debug, Clone)]
pub struct SupabaseSqlTenantDirectory {
    sql: SupabaseSql,
}

use crate::sql::{map_db_err as db_error, unexpected};

/// The object of a `jsonb` metadata column (always an object when written through the
/// domain).
fn metadata_object(value: serde_json::Value, table: &'static str) -> Result<JsonObject, RepositoryError> {
    match value {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(corrupt_row(table, "metadata is not a JSON object")),
    }
}

/// A metadata object as a `jsonb` parameter.
fn metadata_value(metadata: &Metadata) -> sea_orm::Value {
    serde_json::Value::Object(metadata.as_map().clone()).into()
}

/// The domain tenant of a `tenants` row.
fn tenant_of(row: &QueryResult) -> Result<Tenant, RepositoryError> {
    let read = |e: DbErr| unexpected(e, "reading a tenant row");
    let requests: Option<i32> = row.try_get("", "rate_limit_requests").map_err(read)?;
    let window: Option<i32> = row.try_get("", "rate_limit_window_secs").map_err(read)?;
    TenantRow {
        id: row.try_get("", "id").map_err(read)?,
        status: row.try_get("", "status").map_err(read)?,
        cors_origins: row.try_get("", "cors_origins").map_err(read)?,
        plan: row.try_get("", "plan").map_err(read)?,
        rate_limit_requests: requests.map(i64::from),
        rate_limit_window_secs: window.map(i64::from),
    }
    .into_tenant()
}

#[async_trait]
impl TenantDirectory for SupabaseSqlTenantDirectory {
    async fn find(&self, id: TenantId) -> Result<Option<Tenant>, RepositoryError> {
        observe::sql!(Supabase, "tenants.find", &self.sql.db, async {
            let tx = self
                .sql
                .begin(UnitOfWork::Platform)
                .await
                .map_err(|e| unexpected(e, "opening a tenant lookup"))?;
            let row = tx
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "select id, status, cors_origins, plan, rate_limit_requests, rate_limit_window_secs \
                     from public.tenants where id = $1",
                    [id.as_uuid().into()],
                ))
                .await
                .map_err(|e| unexpected(e, "reading a tenant"))?;
            tx.commit().await.map_err(|e| unexpected(e, "ending a tenant lookup"))?;
            row.as_ref().map(tenant_of).transpose()
        })
        .await
    }

    async fn registered_origins(&self) -> Result<Vec<String>, RepositoryError> {
        observe::sql!(Supabase, "tenants.registered_origins", &self.sql.db, async {
            let tx = self
                .sql
                .begin(UnitOfWork::Platform)
                .await
                .map_err(|e| unexpected(e, "opening the registered origins' read"))?;
            // Stored origins are lower case (a check constraint); `lower` keeps the port's
            // promise should that ever change.
            let rows = tx
                .query_all_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "select distinct lower(origin) as origin \
                     from public.tenants, unnest(cors_origins) as origin where status = 'active'",
                ))
                .await
                .map_err(|e| unexpected(e, "reading the registered origins"))?;
            tx.commit().await.map_err(|e| unexpected(e, "ending the registered origins' read"))?;
            rows.iter()
                .map(|row| {
                    row.try_get("", "origin").map_err(|e| unexpected(e, "reading a registered origin"))
                })
                .collect()
        })
        .await
    }
}
