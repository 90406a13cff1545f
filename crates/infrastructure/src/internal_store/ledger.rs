//! [`SeaOrmRunLedger`]: run changes that span tables, each in one transaction.
//!
//! Every transaction starts by locking the run's row (`SELECT … FOR UPDATE` on PostgreSQL;
//! SQLite has a single writer), so concurrent batches of one run are applied one after the
//! other and each sees what the previous one wrote: no duplicate events, no lost updates.
//! What a batch does is decided in memory by the domain's `RunProgress`; this adapter only
//! loads the state it needs and writes the plan. An event whose effect the plan skips (it
//! contradicts the run's state) is stored like the others and has no row change.

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_application::ports::{ApplyOutcome, LedgerError, RepositoryError, RunEnding, RunLedger};
use sba_domain::events::{EventData, RunEvent, StepRef, ToolCallRef};
use sba_domain::runs::progress::{Change, RunProgress, step_status_for};
use sba_domain::steps::{StepStatus, StepType, ToolCallStatus};
use sba_domain::usage::Usage;
use sba_domain::{AgentRun, AuditEntry, RunId, RunStatus, TenantId};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    FromQueryResult, QueryFilter, QuerySelect, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use uuid::Uuid;

use super::audit::audit_model;
use super::entities::{agent_events, agent_runs, agent_steps, tool_calls, usage_metrics};
use super::runs::{lifecycle, to_domain};

/// Multi-table run transactions on sea-orm.
#[derive(Debug, Clone)]
pub struct SeaOrmRunLedger {
    db: DatabaseConnection,
}

impl SeaOrmRunLedger {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

/// Starts a write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`),
/// so two writers wait for each other instead of failing when a read lock cannot be upgraded.
pub(super) async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, LedgerError> {
    let options = TransactionOptions {
        isolation_level: None,
        access_mode: None,
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
    };
    db.begin_with_options(options).await.map_err(unexpected("starting a transaction"))
}

fn unexpected(doing: &'static str) -> impl FnOnce(DbErr) -> LedgerError {
    move |e| LedgerError::Unexpected(anyhow::Error::new(e).context(doing))
}

fn from_repository(error: RepositoryError) -> LedgerError {
    match error {
        RepositoryError::NotFound => LedgerError::NotFound,
        conflict @ RepositoryError::Conflict(_) => LedgerError::Unexpected(anyhow::Error::new(conflict)),
        RepositoryError::Unexpected(e) => LedgerError::Unexpected(e),
    }
}

#[async_trait]
impl RunLedger for SeaOrmRunLedger {
    async fn create_run(&self, run: &AgentRun, audit: &AuditEntry) -> Result<(), LedgerError> {
        let txn = begin_write(&self.db).await?;
        let model = agent_runs::ActiveModel {
            id: Set(run.id.as_uuid()),
            tenant_id: Set(run.tenant_id.as_uuid()),
            user_id: Set(run.user_id.as_str().to_owned()),
            agent: Set(run.agent.as_str().to_owned()),
            input: Set(run.input.clone()),
            session_id: Set(run.session_id.map(|id| id.as_uuid())),
            metadata: Set(serde_json::Value::Object(run.metadata.as_map().clone())),
            created_at: Set(run.created_at),
            ..lifecycle(run)
        };
        agent_runs::Entity::insert(model)
            .exec_without_returning(&txn)
            .await
            .map_err(unexpected("inserting a run"))?;
        insert_events(&txn, &[RunEvent::created(run)]).await?;
        insert_audit(&txn, audit).await?;
        txn.commit().await.map_err(unexpected("committing a new run"))
    }

    async fn apply_events(
        &self,
        tenant: TenantId,
        run_id: RunId,
        batch: Vec<RunEvent>,
    ) -> Result<ApplyOutcome, LedgerError> {
        let txn = begin_write(&self.db).await?;
        let run = lock_run(&txn, tenant, run_id).await?;
        let last_seq = last_seq(&txn, run_id).await?;
        let outcome = apply_locked(&txn, run, last_seq, batch).await?;
        txn.commit().await.map_err(unexpected("committing events"))?;
        Ok(outcome)
    }

    async fn end_run(
        &self,
        tenant: TenantId,
        run_id: RunId,
        ending: RunEnding,
        audit: AuditEntry,
    ) -> Result<AgentRun, LedgerError> {
        let txn = begin_write(&self.db).await?;
        let mut run = lock_run(&txn, tenant, run_id).await?;
        let at = audit.created_at;
        let (data, usage) = match ending {
            RunEnding::Complete { output, usage } => {
                run.complete(output.clone(), at)?;
                (Some(EventData::RunCompleted { output }), usage)
            }
            RunEnding::Fail { error, usage } => {
                run.fail(error.clone(), at)?;
                (Some(EventData::RunFailed { error }), usage)
            }
            RunEnding::Cancel => {
                run.cancel(at)?;
                (Some(EventData::RunCancelled), None)
            }
            RunEnding::Expire => {
                run.transition_to(RunStatus::Expired, at)?;
                (None, None)
            }
        };
        if let Some(status) = step_status_for(run.status()) {
            end_open_steps(&txn, &run, status, at).await?;
        }
        if let Some(data) = data {
            let seq = last_seq(&txn, run_id).await? + 1;
            let event = RunEvent { run_id, tenant_id: tenant, seq, producer_id: None, data, created_at: at };
            insert_events(&txn, &[event]).await?;
        }
        if let Some(usage) = usage {
            insert_usage(&txn, &run, &[(usage, at)]).await?;
        }
        update_run(&txn, &run).await?;
        insert_audit(&txn, &audit).await?;
        txn.commit().await.map_err(unexpected("committing the end of a run"))?;
        Ok(run)
    }
}

/// The body of [`RunLedger::apply_events`] inside its transaction, once the run's row is
/// locked and its last seq read (the store's event sequencer applies its batches with it).
pub(super) async fn apply_locked(
    txn: &DatabaseTransaction,
    run: AgentRun,
    last_seq: u64,
    batch: Vec<RunEvent>,
) -> Result<ApplyOutcome, LedgerError> {
    let (tenant, run_id) = (run.tenant_id, run.id);
    let steps = load_steps(txn, tenant, run_id).await?;
    let tool_calls = load_tool_calls(txn, tenant, run_id).await?;
    let plan = RunProgress::new(run, last_seq, steps, tool_calls).apply(batch)?;

    insert_events(txn, &plan.events).await?;
    write_changes(txn, &plan.run, &plan.changes).await?;
    if plan.run_changed {
        update_run(txn, &plan.run).await?;
    }
    Ok(ApplyOutcome {
        applied: plan.events.len(),
        duplicates: plan.duplicates,
        skipped: plan.skipped,
        run_status: plan.run.status(),
    })
}

pub(super) async fn lock_run(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    run_id: RunId,
) -> Result<AgentRun, LedgerError> {
    let row = agent_runs::Entity::find_by_id(run_id.as_uuid())
        .filter(agent_runs::Column::TenantId.eq(tenant.as_uuid()))
        .lock_exclusive()
        .one(txn)
        .await
        .map_err(unexpected("locking a run"))?
        .ok_or(LedgerError::NotFound)?;
    to_domain(row).map_err(from_repository)
}

#[derive(Debug, FromQueryResult)]
struct MaxSeq {
    max_seq: Option<i64>,
}

pub(super) async fn last_seq(db: &impl sea_orm::ConnectionTrait, run_id: RunId) -> Result<u64, LedgerError> {
    let row = agent_events::Entity::find()
        .select_only()
        .column_as(agent_events::Column::Seq.max(), "max_seq")
        .filter(agent_events::Column::RunId.eq(run_id.as_uuid()))
        .into_model::<MaxSeq>()
        .one(db)
        .await
        .map_err(unexpected("reading the last seq"))?;
    let max = row.and_then(|r| r.max_seq).unwrap_or(0);
    u64::try_from(max)
        .map_err(|_| LedgerError::Unexpected(anyhow::anyhow!("negative seq {max} in agent_events")))
}

async fn load_steps(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    run_id: RunId,
) -> Result<Vec<(StepRef, StepType, StepStatus)>, LedgerError> {
    let rows = agent_steps::Entity::find()
        .filter(agent_steps::Column::TenantId.eq(tenant.as_uuid()))
        .filter(agent_steps::Column::RunId.eq(run_id.as_uuid()))
        .all(txn)
        .await
        .map_err(unexpected("loading steps"))?;
    rows.into_iter()
        .map(|row| {
            let step_id =
                StepRef::parse(&row.step_id).map_err(|e| anyhow::anyhow!("corrupt agent_steps row: {e}"))?;
            let step_type = StepType::from_stored(&row.r#type).context("corrupt agent_steps type")?;
            let status = StepStatus::from_stored(&row.status).context("corrupt agent_steps status")?;
            Ok((step_id, step_type, status))
        })
        .collect::<anyhow::Result<_>>()
        .map_err(LedgerError::Unexpected)
}

async fn load_tool_calls(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    run_id: RunId,
) -> Result<Vec<(ToolCallRef, ToolCallStatus)>, LedgerError> {
    let rows = tool_calls::Entity::find()
        .filter(tool_calls::Column::TenantId.eq(tenant.as_uuid()))
        .filter(tool_calls::Column::RunId.eq(run_id.as_uuid()))
        .all(txn)
        .await
        .map_err(unexpected("loading tool calls"))?;
    rows.into_iter()
        .map(|row| {
            let id = ToolCallRef::parse(&row.tool_call_id)
                .map_err(|e| anyhow::anyhow!("corrupt tool_calls row: {e}"))?;
            let status = ToolCallStatus::from_stored(&row.status).context("corrupt tool_calls status")?;
            Ok((id, status))
        })
        .collect::<anyhow::Result<_>>()
        .map_err(LedgerError::Unexpected)
}

/// Stores events; a `(run_id, seq)` already present is left as it is.
async fn insert_events(txn: &DatabaseTransaction, events: &[RunEvent]) -> Result<(), LedgerError> {
    if events.is_empty() {
        return Ok(());
    }
    let models = events.iter().map(|event| {
        Ok(agent_events::ActiveModel {
            tenant_id: Set(event.tenant_id.as_uuid()),
            run_id: Set(event.run_id.as_uuid()),
            seq: Set(i64::try_from(event.seq).context("seq out of range")?),
            producer_id: Set(event.producer_id.clone()),
            kind: Set(event.kind().as_str().to_owned()),
            data: Set(event.data_json()),
            created_at: Set(event.created_at),
        })
    });
    let models = models.collect::<anyhow::Result<Vec<_>>>().map_err(LedgerError::Unexpected)?;
    agent_events::Entity::insert_many(models)
        .on_conflict(
            OnConflict::columns([agent_events::Column::RunId, agent_events::Column::Seq])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(unexpected("inserting events"))?;
    Ok(())
}

async fn write_changes(
    txn: &DatabaseTransaction,
    run: &AgentRun,
    changes: &[Change],
) -> Result<(), LedgerError> {
    let mut steps = Vec::new();
    let mut calls = Vec::new();
    let mut usage = Vec::new();
    // Inserts are batched per table, keeping their relative order; an update may refer to a
    // row inserted by the same batch, so pending inserts are flushed before each update.
    for change in changes {
        match change {
            Change::InsertStep(step) => steps.push(agent_steps::ActiveModel {
                tenant_id: Set(step.tenant_id.as_uuid()),
                run_id: Set(step.run_id.as_uuid()),
                step_id: Set(step.step_id.as_str().to_owned()),
                r#type: Set(step.step_type.as_str().to_owned()),
                status: Set(step.status.as_str().to_owned()),
                last_error: Set(None),
                usage: Set(None),
                seq: Set(seq_i64(step.seq)?),
                created_at: Set(step.created_at),
                completed_at: Set(None),
            }),
            Change::InsertToolCall(call) => {
                flush_steps(txn, &mut steps).await?;
                calls.push(tool_calls::ActiveModel {
                    tenant_id: Set(call.tenant_id.as_uuid()),
                    run_id: Set(call.run_id.as_uuid()),
                    tool_call_id: Set(call.tool_call_id.as_str().to_owned()),
                    step_id: Set(call.step_id.as_str().to_owned()),
                    name: Set(call.name.clone()),
                    arguments: Set(call.arguments.clone()),
                    output: Set(None),
                    status: Set(call.status.as_str().to_owned()),
                    seq: Set(seq_i64(call.seq)?),
                    started_at: Set(call.started_at),
                    completed_at: Set(None),
                });
            }
            Change::EndStep { step_id, status, at } => {
                flush_steps(txn, &mut steps).await?;
                agent_steps::Entity::update_many()
                    .col_expr(agent_steps::Column::Status, Expr::value(status.as_str()))
                    .col_expr(agent_steps::Column::CompletedAt, Expr::value(*at))
                    .filter(agent_steps::Column::TenantId.eq(run.tenant_id.as_uuid()))
                    .filter(agent_steps::Column::RunId.eq(run.id.as_uuid()))
                    .filter(agent_steps::Column::StepId.eq(step_id.as_str()))
                    .exec(txn)
                    .await
                    .map_err(unexpected("ending a step"))?;
            }
            Change::CompleteToolCall { tool_call_id, status, output, at } => {
                flush_steps(txn, &mut steps).await?;
                flush_calls(txn, &mut calls).await?;
                tool_calls::Entity::update_many()
                    .col_expr(tool_calls::Column::Status, Expr::value(status.as_str()))
                    .col_expr(tool_calls::Column::Output, Expr::value(output.clone()))
                    .col_expr(tool_calls::Column::CompletedAt, Expr::value(*at))
                    .filter(tool_calls::Column::TenantId.eq(run.tenant_id.as_uuid()))
                    .filter(tool_calls::Column::RunId.eq(run.id.as_uuid()))
                    .filter(tool_calls::Column::ToolCallId.eq(tool_call_id.as_str()))
                    .exec(txn)
                    .await
                    .map_err(unexpected("completing a tool call"))?;
            }
            Change::RecordUsage { usage: reported, at } => usage.push((reported.clone(), *at)),
        }
    }
    flush_steps(txn, &mut steps).await?;
    flush_calls(txn, &mut calls).await?;
    insert_usage(txn, run, &usage).await
}

async fn flush_steps(
    txn: &DatabaseTransaction,
    steps: &mut Vec<agent_steps::ActiveModel>,
) -> Result<(), LedgerError> {
    if !steps.is_empty() {
        agent_steps::Entity::insert_many(std::mem::take(steps))
            .exec_without_returning(txn)
            .await
            .map_err(unexpected("inserting steps"))?;
    }
    Ok(())
}

async fn flush_calls(
    txn: &DatabaseTransaction,
    calls: &mut Vec<tool_calls::ActiveModel>,
) -> Result<(), LedgerError> {
    if !calls.is_empty() {
        tool_calls::Entity::insert_many(std::mem::take(calls))
            .exec_without_returning(txn)
            .await
            .map_err(unexpected("inserting tool calls"))?;
    }
    Ok(())
}

async fn insert_usage(
    txn: &DatabaseTransaction,
    run: &AgentRun,
    usage: &[(Usage, DateTime<Utc>)],
) -> Result<(), LedgerError> {
    if usage.is_empty() {
        return Ok(());
    }
    let models = usage
        .iter()
        .map(|(u, at)| {
            Ok(usage_metrics::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(run.tenant_id.as_uuid()),
                run_id: Set(Some(run.id.as_uuid())),
                agent: Set(run.agent.as_str().to_owned()),
                model: Set(u.model.clone()),
                input_tokens: Set(i64::try_from(u.input_tokens)?),
                output_tokens: Set(i64::try_from(u.output_tokens)?),
                cost_micros: Set(i64::try_from(u.cost_micros)?),
                created_at: Set(*at),
            })
        })
        .collect::<Result<Vec<_>, std::num::TryFromIntError>>()
        .map_err(|e| LedgerError::Unexpected(anyhow::Error::new(e).context("usage counter out of range")))?;
    usage_metrics::Entity::insert_many(models)
        .exec_without_returning(txn)
        .await
        .map_err(unexpected("recording usage"))?;
    Ok(())
}

async fn end_open_steps(
    txn: &DatabaseTransaction,
    run: &AgentRun,
    status: StepStatus,
    at: DateTime<Utc>,
) -> Result<(), LedgerError> {
    agent_steps::Entity::update_many()
        .col_expr(agent_steps::Column::Status, Expr::value(status.as_str()))
        .col_expr(agent_steps::Column::CompletedAt, Expr::value(at))
        .filter(agent_steps::Column::TenantId.eq(run.tenant_id.as_uuid()))
        .filter(agent_steps::Column::RunId.eq(run.id.as_uuid()))
        .filter(agent_steps::Column::Status.eq(StepStatus::InProgress.as_str()))
        .exec(txn)
        .await
        .map_err(unexpected("ending open steps"))?;
    Ok(())
}

async fn update_run(txn: &DatabaseTransaction, run: &AgentRun) -> Result<(), LedgerError> {
    agent_runs::Entity::update_many()
        .set(lifecycle(run))
        .filter(agent_runs::Column::Id.eq(run.id.as_uuid()))
        .filter(agent_runs::Column::TenantId.eq(run.tenant_id.as_uuid()))
        .exec(txn)
        .await
        .map_err(unexpected("updating a run"))?;
    Ok(())
}

async fn insert_audit(txn: &DatabaseTransaction, entry: &AuditEntry) -> Result<(), LedgerError> {
    super::audit::Entity::insert(audit_model(entry))
        .exec_without_returning(txn)
        .await
        .map_err(unexpected("recording an audit entry"))?;
    Ok(())
}

fn seq_i64(seq: u64) -> Result<i64, LedgerError> {
    i64::try_from(seq).map_err(|_| LedgerError::Unexpected(anyhow::anyhow!("seq {seq} out of range")))
}
