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
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sba_application::ports::{ApplyOutcome, LedgerError, RepositoryError, RunEnding, RunLedger};
use sba_domain::events::{EventData, RunEvent, StepRef, ToolCallRef};
use sba_domain::runs::progress::{Change, RunProgress, step_status_for};
use sba_domain::steps::{StepStatus, StepType, ToolCallStatus};
use sba_domain::usage::Usage;
use sba_domain::{AgentRun, AuditEntry, RunId, RunStatus, TenantId};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait as _, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, EntityTrait, FromQueryResult, QueryFilter, QuerySelect, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};
use uuid::Uuid;

use super::audit::audit_model;
use super::entities::{agent_events, agent_runs, agent_steps, tool_calls, usage_metrics};
use super::runs::{lifecycle, to_domain};
use crate::observe;

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
        observe::sql!(Internal, "ledger.create_run", &self.db, async {
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
        })
        .await
    }

    async fn apply_events(
        &self,
        tenant: TenantId,
        run_id: RunId,
        batch: Vec<RunEvent>,
    ) -> Result<ApplyOutcome, LedgerError> {
        observe::sql!(Internal, "ledger.apply_events", &self.db, async {
            let txn = begin_write(&self.db).await?;
            let run = lock_run(&txn, tenant, run_id).await?;
            let state = load_state(&txn, &run).await?;
            let outcome = apply_locked(&txn, run, state, batch).await?;
            txn.commit().await.map_err(unexpected("committing events"))?;
            Ok(outcome)
        })
        .await
    }

    async fn end_run(
        &self,
        tenant: TenantId,
        run_id: RunId,
        ending: RunEnding,
        audit: AuditEntry,
    ) -> Result<AgentRun, LedgerError> {
        observe::sql!(Internal, "ledger.end_run", &self.db, async {
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
                let event =
                    RunEvent { run_id, tenant_id: tenant, seq, producer_id: None, data, created_at: at };
                insert_events(&txn, &[event]).await?;
            }
            if let Some(usage) = usage {
                insert_usage(&txn, &run, &[(usage, at)]).await?;
            }
            update_run(&txn, &run).await?;
            insert_audit(&txn, &audit).await?;
            txn.commit().await.map_err(unexpected("committing the end of a run"))?;
            Ok(run)
        })
        .await
    }
}

/// The body of [`RunLedger::apply_events`] inside its transaction, once the run's row is
/// locked and its state loaded (the store's event sequencer applies its batches with it).
pub(super) async fn apply_locked(
    txn: &DatabaseTransaction,
    run: AgentRun,
    state: RunState,
    batch: Vec<RunEvent>,
) -> Result<ApplyOutcome, LedgerError> {
    let plan = RunProgress::new(run, state.last_seq, state.steps, state.tool_calls).apply(batch)?;

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

/// What applying a batch needs to know of a locked run besides its row: its last stored
/// seq, its steps and its tool calls.
#[derive(Debug, Default)]
pub(super) struct RunState {
    pub(super) last_seq: u64,
    steps: Vec<(StepRef, StepType, StepStatus)>,
    tool_calls: Vec<(ToolCallRef, ToolCallStatus)>,
}

/// A row of [`STATE_QUERY`]: `part` 0 carries the last seq, 1 a step, 2 a tool call.
#[derive(Debug, FromQueryResult)]
struct StateRow {
    part: i32,
    ref_id: Option<String>,
    step_type: Option<String>,
    status: Option<String>,
    max_seq: Option<i64>,
}

/// The run's last seq, steps and tool calls in one round trip (it runs after the row lock,
/// so it sees every batch committed before). Placeholders in binding order: run, tenant,
/// run, tenant, run.
const STATE_QUERY: &str = "\
    SELECT 0 AS part, NULL AS ref_id, NULL AS step_type, NULL AS status, \
           (SELECT MAX(seq) FROM agent_events WHERE run_id = ?) AS max_seq \
    UNION ALL \
    SELECT 1, step_id, type, status, NULL FROM agent_steps WHERE tenant_id = ? AND run_id = ? \
    UNION ALL \
    SELECT 2, tool_call_id, NULL, status, NULL FROM tool_calls WHERE tenant_id = ? AND run_id = ?";

/// Loads what [`apply_locked`] needs of a run whose row the transaction has locked.
pub(super) async fn load_state(txn: &DatabaseTransaction, run: &AgentRun) -> Result<RunState, LedgerError> {
    let (tenant, id) =
        (sea_orm::Value::from(run.tenant_id.as_uuid()), sea_orm::Value::from(run.id.as_uuid()));
    let backend = txn.get_database_backend();
    let statement = Statement::from_sql_and_values(
        backend,
        numbered_placeholders(backend, STATE_QUERY),
        [id.clone(), tenant.clone(), id.clone(), tenant, id],
    );
    let rows =
        StateRow::find_by_statement(statement).all(txn).await.map_err(unexpected("loading a run's state"))?;
    let mut state = RunState::default();
    for row in &rows {
        state_row(&mut state, row).map_err(LedgerError::Unexpected)?;
    }
    Ok(state)
}

fn state_row(state: &mut RunState, row: &StateRow) -> anyhow::Result<()> {
    let status = row.status.as_deref().unwrap_or_default();
    match row.part {
        0 => {
            let max = row.max_seq.unwrap_or(0);
            state.last_seq =
                u64::try_from(max).map_err(|_| anyhow::anyhow!("negative seq {max} in agent_events"))?;
        }
        1 => {
            let step_id = StepRef::parse(row.ref_id.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("corrupt agent_steps row: {e}"))?;
            let step_type = StepType::from_stored(row.step_type.as_deref().unwrap_or_default())
                .context("corrupt agent_steps type")?;
            let status = StepStatus::from_stored(status).context("corrupt agent_steps status")?;
            state.steps.push((step_id, step_type, status));
        }
        _ => {
            let id = ToolCallRef::parse(row.ref_id.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("corrupt tool_calls row: {e}"))?;
            let status = ToolCallStatus::from_stored(status).context("corrupt tool_calls status")?;
            state.tool_calls.push((id, status));
        }
    }
    Ok(())
}

/// `sql` with its `?` placeholders as the backend numbers them (`$1`, `$2`, … on PostgreSQL).
fn numbered_placeholders(backend: DbBackend, sql: &str) -> String {
    if backend != DbBackend::Postgres {
        return sql.to_owned();
    }
    let mut numbered = String::with_capacity(sql.len() + 8);
    for (n, piece) in sql.split('?').enumerate() {
        if n > 0 {
            let _ = write!(numbered, "${n}");
        }
        numbered.push_str(piece);
    }
    numbered
}

/// Stores events. Every caller holds the run's row lock and passes only seqs above the last
/// stored one, so no `ON CONFLICT` clause: a conflict cannot happen (it would be a bug, and
/// fails the transaction), and on PostgreSQL the clause costs every row a speculative
/// insertion (ADR 0017, "As built: the cost of the hot paths").
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
