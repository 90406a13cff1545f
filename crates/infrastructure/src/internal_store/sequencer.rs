//! [`StoreEventSequencer`]: the [`EventSequencer`] of ADR 0017 when no Redis is configured
//! (development, one node). The database is the counter and the history: each batch is
//! given its seqs and stored in `agent_events` (with its steps, tool calls, usage and the
//! run's status) in one transaction on the run's locked row, so an accepted event is stored
//! before the answer, and concurrent batches of one run are sequenced one after the other.

use std::collections::HashMap;

use anyhow::anyhow;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_application::ports::{
    AppendOutcome, AppendRequest, AppendedEvent, EventSequencer, LedgerError, SeedOutcome, SequencerError,
    ServerAppendOutcome, ServerEvent,
};
use sba_domain::events::{EventData, RunEvent};
use sba_domain::{AgentRun, RunId, RunStatus, TenantId};
use sea_orm::{ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};

use super::entities::{agent_events, agent_runs};
use super::ledger::{apply_locked, begin_write, last_seq, load_state, lock_run};
use crate::observe;

/// The [`EventSequencer`] on the internal store (PostgreSQL or SQLite), persisting each
/// batch synchronously.
#[derive(Debug, Clone)]
pub struct StoreEventSequencer {
    db: DatabaseConnection,
}

impl StoreEventSequencer {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl EventSequencer for StoreEventSequencer {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, SequencerError> {
        observe::sql!(Internal, "sequencer.append", &self.db, async {
            let (tenant, run) = (request.tenant, request.run);
            let failed = |error| sequencer_error(tenant, run, error);
            let txn = begin_write(&self.db).await.map_err(failed)?;
            let outcome = append_locked(&txn, request).await.map_err(failed)?;
            commit(txn).await?;
            Ok(outcome)
        })
        .await
    }

    async fn append_server_event(
        &self,
        tenant: TenantId,
        run: RunId,
        event: ServerEvent,
        created_at: DateTime<Utc>,
    ) -> Result<ServerAppendOutcome, SequencerError> {
        observe::sql!(Internal, "sequencer.append_server_event", &self.db, async {
            let failed = |error| sequencer_error(tenant, run, error);
            let txn = begin_write(&self.db).await.map_err(failed)?;
            let outcome = server_locked(&txn, tenant, run, event, created_at).await.map_err(failed)?;
            commit(txn).await?;
            Ok(outcome)
        })
        .await
    }

    /// The database is the counter: nothing to seed, the stored maximum is the counter's value.
    async fn seed(
        &self,
        run: RunId,
        _stored_max_seq: u64,
        _stored_status: RunStatus,
    ) -> Result<SeedOutcome, SequencerError> {
        observe::sql!(Internal, "sequencer.seed", &self.db, async {
            let seq = last_seq(&self.db, run).await.map_err(|e| SequencerError::Unexpected(e.into()))?;
            Ok(SeedOutcome::Kept { seq })
        })
        .await
    }

    /// The database is the sequencer here: its producer ids are the ones it holds.
    async fn restore_ids(
        &self,
        _run: RunId,
        _ids: Vec<(sba_domain::events::ProducerId, u64)>,
    ) -> Result<(), SequencerError> {
        Ok(())
    }

    async fn run_status(&self, run: RunId) -> Result<Option<RunStatus>, SequencerError> {
        observe::sql!(Internal, "sequencer.run_status", &self.db, async {
            let status: Option<String> = agent_runs::Entity::find_by_id(run.as_uuid())
                .select_only()
                .column(agent_runs::Column::Status)
                .into_tuple()
                .one(&self.db)
                .await
                .map_err(|e| anyhow::Error::new(e).context("reading a run's status"))?;
            status
                .map(|status| {
                    status.parse().map_err(|e| anyhow!("corrupt agent_runs status {status:?}: {e}"))
                })
                .transpose()
                .map_err(SequencerError::Unexpected)
        })
        .await
    }

    /// The database is the history, and readers read it first: there is nothing beyond it.
    async fn history_after(
        &self,
        _tenant: TenantId,
        _run: RunId,
        _after_seq: u64,
        _limit: usize,
    ) -> Result<Vec<RunEvent>, SequencerError> {
        Ok(Vec::new())
    }
}

/// `append` on the locked run: the same decisions, in the same order, as the Redis script's
/// `append` (ADR 0017): a batch of known ids only is answered with their seqs whatever the
/// run's state; then an ended run, then a status precondition, refuse the batch; otherwise
/// the new ids get the next seqs in batch order and the batch is applied like
/// `RunLedger::apply_events`.
async fn append_locked(
    txn: &DatabaseTransaction,
    request: AppendRequest,
) -> Result<AppendOutcome, LedgerError> {
    let run = lock_run(txn, request.tenant, request.run).await?;
    let state = load_state(txn, &run).await?;
    let last = state.last_seq;
    let mut seen = stored_producer_ids(txn, &run, &request).await?;
    let status = run.status();
    if request.events.iter().all(|event| seen.contains_key(event.producer_id.as_str())) {
        let events = request
            .events
            .into_iter()
            .map(|event| {
                let seq = seen.get(event.producer_id.as_str()).copied().unwrap_or_default();
                AppendedEvent { producer_id: event.producer_id, seq, duplicate: true }
            })
            .collect();
        return Ok(AppendOutcome::Appended { events, run_status: status });
    }
    if status.is_terminal() {
        return Ok(AppendOutcome::Terminal(status));
    }
    if let Some(change) = request.status_change
        && change.expected != status
    {
        return Ok(AppendOutcome::Conflict(status));
    }
    let mut next = last;
    let mut answers = Vec::with_capacity(request.events.len());
    let mut batch = Vec::with_capacity(request.events.len());
    for event in request.events {
        let id = event.producer_id.as_str().to_owned();
        if let Some(&seq) = seen.get(&id) {
            answers.push(AppendedEvent { producer_id: event.producer_id, seq, duplicate: true });
            continue;
        }
        next += 1;
        seen.insert(id.clone(), next);
        batch.push(RunEvent {
            run_id: run.id,
            tenant_id: run.tenant_id,
            seq: next,
            producer_id: Some(id),
            data: event.data,
            created_at: request.created_at,
        });
        answers.push(AppendedEvent { producer_id: event.producer_id, seq: next, duplicate: false });
    }
    let applied = apply_locked(txn, run, state, batch).await?;
    Ok(AppendOutcome::Appended { events: answers, run_status: applied.run_status })
}

/// A server event on the locked run. `run.created` is always a conflict: `RunLedger::create_run`
/// writes it with the run's row, so a run the sequencer sees has it already (and an unknown
/// run is an error). `run.cancelled` takes the next seq and is applied like an agent's event,
/// so the run's open steps end with it. An expiry writes nothing: `RunLedger::end_run(Expire)`
/// ends the row and audits it.
async fn server_locked(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    run_id: RunId,
    event: ServerEvent,
    created_at: DateTime<Utc>,
) -> Result<ServerAppendOutcome, LedgerError> {
    let run = lock_run(txn, tenant, run_id).await?;
    let status = run.status();
    if event == ServerEvent::Created {
        return Ok(ServerAppendOutcome::Conflict(status));
    }
    if status.is_terminal() {
        return Ok(ServerAppendOutcome::Terminal(status));
    }
    let state = load_state(txn, &run).await?;
    let last = state.last_seq;
    match event {
        ServerEvent::Cancelled => {
            let seq = last + 1;
            let cancelled = RunEvent {
                run_id,
                tenant_id: tenant,
                seq,
                producer_id: None,
                data: EventData::RunCancelled,
                created_at,
            };
            let applied = apply_locked(txn, run, state, vec![cancelled]).await?;
            Ok(ServerAppendOutcome::Appended { seq, run_status: applied.run_status })
        }
        ServerEvent::Expired => {
            Ok(ServerAppendOutcome::Appended { seq: last, run_status: RunStatus::Expired })
        }
        ServerEvent::Created => Ok(ServerAppendOutcome::Conflict(status)),
    }
}

/// The seqs already stored for the batch's producer ids (unique per run).
async fn stored_producer_ids(
    txn: &DatabaseTransaction,
    run: &AgentRun,
    request: &AppendRequest,
) -> Result<HashMap<String, u64>, LedgerError> {
    let ids: Vec<&str> = request.events.iter().map(|event| event.producer_id.as_str()).collect();
    let rows: Vec<(Option<String>, i64)> = agent_events::Entity::find()
        .select_only()
        .column(agent_events::Column::ProducerId)
        .column(agent_events::Column::Seq)
        .filter(agent_events::Column::RunId.eq(run.id.as_uuid()))
        .filter(agent_events::Column::ProducerId.is_in(ids))
        .into_tuple()
        .all(txn)
        .await
        .map_err(|e| LedgerError::Unexpected(anyhow::Error::new(e).context("reading stored producer ids")))?;
    rows.into_iter()
        .filter_map(|(id, seq)| id.map(|id| (id, seq)))
        .map(|(id, seq)| {
            let seq = u64::try_from(seq).map_err(|_| anyhow!("negative seq {seq} in agent_events"))?;
            Ok((id, seq))
        })
        .collect::<anyhow::Result<_>>()
        .map_err(LedgerError::Unexpected)
}

/// A ledger error as the sequencer's. The service checks that the run is visible to the
/// tenant before it appends, so an unknown run here is unexpected; so is a batch the run's
/// state refuses, which the service decided on the status it read.
fn sequencer_error(tenant: TenantId, run: RunId, error: LedgerError) -> SequencerError {
    match error {
        LedgerError::NotFound => {
            SequencerError::Unexpected(anyhow!("run {run} of tenant {tenant} is not in the internal store"))
        }
        LedgerError::Unexpected(e) => SequencerError::Unexpected(e),
        refused @ (LedgerError::InvalidTransition(_) | LedgerError::Rejected(_)) => {
            SequencerError::Unexpected(
                anyhow::Error::new(refused).context(format!("the stored run {run} refuses the batch")),
            )
        }
    }
}

async fn commit(txn: DatabaseTransaction) -> Result<(), SequencerError> {
    txn.commit()
        .await
        .map_err(|e| SequencerError::Unexpected(anyhow::Error::new(e).context("committing run events")))
}
