//! Reads of a run's steps, tool calls and events, paged by `seq`.

use async_trait::async_trait;
use sba_application::pagination::{Cursor, Page, PageRequest};
use sba_application::ports::{EventLog, RepositoryError, StepRepository, ToolCallRepository};
use sba_domain::events::{EventData, RunEvent, StepRef, ToolCallRef};
use sba_domain::steps::{Step, StepStatus, StepType, ToolCall, ToolCallStatus};
use sba_domain::{RunError, RunId, TenantId};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{agent_events, agent_steps, tool_calls};
use crate::observe;
use crate::sql::map_db_err;
use crate::tenant_data::corrupt_row;

/// Steps, tool calls and events stored with sea-orm; every query filters by tenant.
#[derive(Debug, Clone)]
pub struct SeaOrmRunDetails {
    db: DatabaseConnection,
}

impl SeaOrmRunDetails {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

/// The `seq` a page starts after; seq listings only accept seq cursors.
fn after_seq(page: &PageRequest) -> Result<i64, RepositoryError> {
    match page.after {
        None => Ok(0),
        Some(Cursor::Seq(seq)) => {
            i64::try_from(seq).map_err(|_| anyhow::anyhow!("cursor seq out of range").into())
        }
        Some(Cursor::Time { .. }) => Err(anyhow::anyhow!("a time cursor was given to a seq listing").into()),
    }
}

fn to_u64(table: &'static str, seq: i64) -> Result<u64, RepositoryError> {
    u64::try_from(seq).map_err(|_| corrupt_row(table, format_args!("negative seq {seq}")))
}

#[async_trait]
impl StepRepository for SeaOrmRunDetails {
    async fn list(
        &self,
        tenant: TenantId,
        run_id: RunId,
        page: PageRequest,
    ) -> Result<Page<Step>, RepositoryError> {
        observe::sql!(Internal, "steps.list", &self.db, async {
            let rows = agent_steps::Entity::find()
                .filter(agent_steps::Column::TenantId.eq(tenant.as_uuid()))
                .filter(agent_steps::Column::RunId.eq(run_id.as_uuid()))
                .filter(agent_steps::Column::Seq.gt(after_seq(&page)?))
                .order_by_asc(agent_steps::Column::Seq)
                .limit(page.limit + 1)
                .all(&self.db)
                .await
                .map_err(|e| map_db_err(e, "listing steps"))?;
            let steps = rows.into_iter().map(step_to_domain).collect::<Result<Vec<_>, _>>()?;
            Ok(Page::from_rows(steps, page.limit, |s| Cursor::Seq(s.seq)))
        })
        .await
    }
}

#[async_trait]
impl ToolCallRepository for SeaOrmRunDetails {
    async fn list(
        &self,
        tenant: TenantId,
        run_id: RunId,
        page: PageRequest,
    ) -> Result<Page<ToolCall>, RepositoryError> {
        observe::sql!(Internal, "tool_calls.list", &self.db, async {
            let rows = tool_calls::Entity::find()
                .filter(tool_calls::Column::TenantId.eq(tenant.as_uuid()))
                .filter(tool_calls::Column::RunId.eq(run_id.as_uuid()))
                .filter(tool_calls::Column::Seq.gt(after_seq(&page)?))
                .order_by_asc(tool_calls::Column::Seq)
                .limit(page.limit + 1)
                .all(&self.db)
                .await
                .map_err(|e| map_db_err(e, "listing tool calls"))?;
            let calls = rows.into_iter().map(tool_call_to_domain).collect::<Result<Vec<_>, _>>()?;
            Ok(Page::from_rows(calls, page.limit, |c| Cursor::Seq(c.seq)))
        })
        .await
    }
}

#[async_trait]
impl EventLog for SeaOrmRunDetails {
    async fn list_after(
        &self,
        tenant: TenantId,
        run_id: RunId,
        after_seq: u64,
        limit: u64,
    ) -> Result<Page<RunEvent>, RepositoryError> {
        observe::sql!(Internal, "events.list_after", &self.db, async {
            let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
            let rows = agent_events::Entity::find()
                .filter(agent_events::Column::TenantId.eq(tenant.as_uuid()))
                .filter(agent_events::Column::RunId.eq(run_id.as_uuid()))
                .filter(agent_events::Column::Seq.gt(after))
                .order_by_asc(agent_events::Column::Seq)
                .limit(limit + 1)
                .all(&self.db)
                .await
                .map_err(|e| map_db_err(e, "listing events"))?;
            let events = rows.into_iter().map(event_to_domain).collect::<Result<Vec<_>, _>>()?;
            Ok(Page::from_rows(events, limit, |e| Cursor::Seq(e.seq)))
        })
        .await
    }

    async fn last_seq(&self, tenant: TenantId, run_id: RunId) -> Result<Option<u64>, RepositoryError> {
        observe::sql!(Internal, "events.last_seq", &self.db, async {
            let last = agent_events::Entity::find()
                .filter(agent_events::Column::TenantId.eq(tenant.as_uuid()))
                .filter(agent_events::Column::RunId.eq(run_id.as_uuid()))
                .order_by_desc(agent_events::Column::Seq)
                .one(&self.db)
                .await
                .map_err(|e| map_db_err(e, "reading the last event"))?;
            last.map(|row| u64::try_from(row.seq).map_err(|e| corrupt_row("agent_events", e))).transpose()
        })
        .await
    }

    async fn producer_ids(
        &self,
        tenant: TenantId,
        run_id: RunId,
    ) -> Result<Vec<(sba_domain::events::ProducerId, u64)>, RepositoryError> {
        observe::sql!(Internal, "events.producer_ids", &self.db, async {
            let rows: Vec<(Option<String>, i64)> = agent_events::Entity::find()
                .select_only()
                .column(agent_events::Column::ProducerId)
                .column(agent_events::Column::Seq)
                .filter(agent_events::Column::TenantId.eq(tenant.as_uuid()))
                .filter(agent_events::Column::RunId.eq(run_id.as_uuid()))
                .filter(agent_events::Column::ProducerId.is_not_null())
                .order_by_asc(agent_events::Column::Seq)
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(|e| map_db_err(e, "reading the producer ids"))?;
            rows.into_iter()
                .filter_map(|(id, seq)| id.map(|id| (id, seq)))
                .map(|(id, seq)| {
                    let id = sba_domain::events::ProducerId::parse(&id)
                        .map_err(|e| corrupt_row("agent_events", e.message))?;
                    let seq = u64::try_from(seq).map_err(|e| corrupt_row("agent_events", e))?;
                    Ok((id, seq))
                })
                .collect()
        })
        .await
    }
}

fn step_to_domain(row: agent_steps::Model) -> Result<Step, RepositoryError> {
    const TABLE: &str = "agent_steps";
    Ok(Step {
        tenant_id: TenantId::from_uuid(row.tenant_id),
        run_id: RunId::from_uuid(row.run_id),
        step_id: StepRef::parse(&row.step_id).map_err(|e| corrupt_row(TABLE, e))?,
        step_type: StepType::from_stored(&row.r#type).ok_or_else(|| corrupt_row(TABLE, &row.r#type))?,
        status: StepStatus::from_stored(&row.status).ok_or_else(|| corrupt_row(TABLE, &row.status))?,
        last_error: row
            .last_error
            .map(serde_json::from_value::<RunError>)
            .transpose()
            .map_err(|e| corrupt_row(TABLE, e))?,
        usage: row
            .usage
            .map(sba_domain::usage::Usage::parse)
            .transpose()
            .map_err(|e| corrupt_row(TABLE, e))?,
        seq: to_u64(TABLE, row.seq)?,
        created_at: row.created_at,
        completed_at: row.completed_at,
    })
}

fn tool_call_to_domain(row: tool_calls::Model) -> Result<ToolCall, RepositoryError> {
    const TABLE: &str = "tool_calls";
    Ok(ToolCall {
        tenant_id: TenantId::from_uuid(row.tenant_id),
        run_id: RunId::from_uuid(row.run_id),
        tool_call_id: ToolCallRef::parse(&row.tool_call_id).map_err(|e| corrupt_row(TABLE, e))?,
        step_id: StepRef::parse(&row.step_id).map_err(|e| corrupt_row(TABLE, e))?,
        name: row.name,
        arguments: row.arguments,
        output: row.output,
        status: ToolCallStatus::from_stored(&row.status).ok_or_else(|| corrupt_row(TABLE, &row.status))?,
        seq: to_u64(TABLE, row.seq)?,
        started_at: row.started_at,
        completed_at: row.completed_at,
    })
}

fn event_to_domain(row: agent_events::Model) -> Result<RunEvent, RepositoryError> {
    const TABLE: &str = "agent_events";
    let kind = row.kind.parse().map_err(|e| corrupt_row(TABLE, e))?;
    Ok(RunEvent {
        run_id: RunId::from_uuid(row.run_id),
        tenant_id: TenantId::from_uuid(row.tenant_id),
        seq: to_u64(TABLE, row.seq)?,
        producer_id: row.producer_id,
        data: EventData::parse(kind, row.data).map_err(|e| corrupt_row(TABLE, e))?,
        created_at: row.created_at,
    })
}
