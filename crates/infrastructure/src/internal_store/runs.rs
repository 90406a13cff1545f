//! [`SeaOrmRunRepository`]: runs in `agent_runs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_application::pagination::{Cursor, Page, PageRequest};
use sba_application::ports::{RepositoryError, RunFilter, RunRepository};
use sba_domain::{AgentName, AgentRun, Metadata, RunError, RunId, RunStatus, StoredRun, TenantId, UserId};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::entities::agent_runs::{self, ActiveModel, Column, Entity};
use super::keyset::newest_first;
use crate::observe;
use crate::sql::map_db_err;
use crate::tenant_data::corrupt_row;

/// Runs stored with sea-orm; every query filters by tenant.
#[derive(Debug, Clone)]
pub struct SeaOrmRunRepository {
    db: DatabaseConnection,
}

impl SeaOrmRunRepository {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl RunRepository for SeaOrmRunRepository {
    async fn get(&self, tenant: TenantId, id: RunId) -> Result<Option<AgentRun>, RepositoryError> {
        observe::sql!(Internal, "runs.get", &self.db, async {
            let row = Entity::find_by_id(id.as_uuid())
                .filter(Column::TenantId.eq(tenant.as_uuid()))
                .one(&self.db)
                .await
                .map_err(|e| map_db_err(e, "reading a run"))?;
            row.map(to_domain).transpose()
        })
        .await
    }

    async fn list(
        &self,
        tenant: TenantId,
        filter: RunFilter,
        page: PageRequest,
    ) -> Result<Page<AgentRun>, RepositoryError> {
        observe::sql!(Internal, "runs.list", &self.db, async {
            let mut query = Entity::find().filter(Column::TenantId.eq(tenant.as_uuid()));
            if let Some(status) = filter.status {
                query = query.filter(Column::Status.eq(status.as_str()));
            }
            if let Some(agent) = &filter.agent {
                query = query.filter(Column::Agent.eq(agent.as_str()));
            }
            if let Some(session) = filter.session_id {
                query = query.filter(Column::SessionId.eq(session.as_uuid()));
            }
            let rows = newest_first(query, Column::CreatedAt, Column::Id, &page)?
                .all(&self.db)
                .await
                .map_err(|e| map_db_err(e, "listing runs"))?;
            let runs = rows.into_iter().map(to_domain).collect::<Result<Vec<_>, _>>()?;
            Ok(Page::from_rows(runs, page.limit, |r| Cursor::Time { at: r.created_at, id: r.id.as_uuid() }))
        })
        .await
    }

    async fn list_overdue(
        &self,
        created_before: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<AgentRun>, RepositoryError> {
        observe::sql!(Internal, "runs.list_overdue", &self.db, async {
            let rows = Entity::find()
                .filter(Column::Status.is_in(ACTIVE.map(RunStatus::as_str)))
                .filter(Column::CreatedAt.lt(created_before))
                .order_by_asc(Column::CreatedAt)
                .order_by_asc(Column::Id)
                .limit(limit)
                .all(&self.db)
                .await
                .map_err(|e| map_db_err(e, "listing overdue runs"))?;
            rows.into_iter().map(to_domain).collect()
        })
        .await
    }
}

/// Statuses a run can still leave.
const ACTIVE: [RunStatus; 3] = [RunStatus::Queued, RunStatus::InProgress, RunStatus::RequiresAction];

/// The fields that change over a run's life; the rest are written once at insert.
pub(super) fn lifecycle(run: &AgentRun) -> ActiveModel {
    ActiveModel {
        status: Set(run.status().as_str().to_owned()),
        output: Set(run.output.clone()),
        last_error: Set(run
            .last_error
            .as_ref()
            .map(|e| serde_json::json!({"code": e.code, "message": e.message}))),
        started_at: Set(run.started_at),
        completed_at: Set(run.completed_at),
        cancelled_at: Set(run.cancelled_at),
        updated_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
}

pub(super) fn to_domain(row: agent_runs::Model) -> Result<AgentRun, RepositoryError> {
    const TABLE: &str = "agent_runs";
    let metadata = match row.metadata {
        serde_json::Value::Object(map) => Metadata::parse(map).map_err(|e| corrupt_row(TABLE, e))?,
        other => return Err(corrupt_row(TABLE, format_args!("metadata is not an object: {other}"))),
    };
    let last_error = row
        .last_error
        .map(serde_json::from_value::<RunError>)
        .transpose()
        .map_err(|e| corrupt_row(TABLE, e))?;
    Ok(AgentRun::from_stored(StoredRun {
        id: RunId::from_uuid(row.id),
        tenant_id: TenantId::from_uuid(row.tenant_id),
        user_id: UserId::parse(&row.user_id).map_err(|e| corrupt_row(TABLE, e))?,
        agent: AgentName::parse(&row.agent).map_err(|e| corrupt_row(TABLE, e))?,
        status: row.status.parse().map_err(|e| corrupt_row(TABLE, e))?,
        input: row.input,
        output: row.output,
        last_error,
        session_id: row.session_id.map(sba_domain::SessionId::from_uuid),
        metadata,
        created_at: row.created_at,
        started_at: row.started_at,
        completed_at: row.completed_at,
        cancelled_at: row.cancelled_at,
    }))
}
