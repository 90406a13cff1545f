//! The rest of the internal store: steps, tool calls, the event log, usage, health history and
//! idempotency keys.
//!
//! Foreign keys, chosen on purpose:
//! - `agent_steps`, `tool_calls` and `agent_events` are parts of their run: they reference it
//!   through `(tenant_id, run_id) → agent_runs (tenant_id, id)` with `ON DELETE CASCADE`. The
//!   composite key also guarantees that a child row carries its run's tenant, so a tenant
//!   filter on a child table can never reach another tenant's run.
//! - `tool_calls` reference their step, `(run_id, step_id) → agent_steps`, so a tool call
//!   cannot exist without the step it belongs to.
//! - `usage_metrics` is billing data and must outlive a purged run: `run_id` is
//!   `ON DELETE SET NULL`, and the row keeps its tenant, agent and model.
//! - `system_health` is platform data (no tenant); `idempotency_keys` stands alone and
//!   expires by time.
//!
//! Every index a tenant's query uses leads with `tenant_id`; `agent_events` is unique on
//! `(run_id, seq)` (its primary key), the key that makes persisting idempotent.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const STEP_STATUSES: [&str; 5] = ["in_progress", "completed", "failed", "cancelled", "expired"];
const TOOL_CALL_STATUSES: [&str; 3] = ["in_progress", "completed", "failed"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_runs_key(manager).await?;
        create_steps(manager).await?;
        create_tool_calls(manager).await?;
        create_events(manager).await?;
        create_usage(manager).await?;
        create_health(manager).await?;
        create_idempotency(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            IdempotencyKeys::Table.into_iden(),
            SystemHealth::Table.into_iden(),
            UsageMetrics::Table.into_iden(),
            AgentEvents::Table.into_iden(),
            ToolCalls::Table.into_iden(),
            AgentSteps::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        manager
            .drop_index(Index::drop().name("agent_runs_tenant_id_key").table(AgentRuns::Table).to_owned())
            .await
    }
}

async fn create_runs_key(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    // Children reference runs by (tenant_id, id).
    manager
        .create_index(
            Index::create()
                .name("agent_runs_tenant_id_key")
                .table(AgentRuns::Table)
                .col(AgentRuns::TenantId)
                .col(AgentRuns::Id)
                .unique()
                .to_owned(),
        )
        .await
}

async fn create_steps(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(AgentSteps::Table)
                .col(ColumnDef::new(AgentSteps::TenantId).uuid().not_null())
                .col(ColumnDef::new(AgentSteps::RunId).uuid().not_null())
                .col(ColumnDef::new(AgentSteps::StepId).string_len(128).not_null())
                .col(
                    ColumnDef::new(AgentSteps::Type)
                        .string_len(32)
                        .not_null()
                        .check(Expr::col(AgentSteps::Type).is_in(["message_creation", "tool_calls"])),
                )
                .col(
                    ColumnDef::new(AgentSteps::Status)
                        .string_len(16)
                        .not_null()
                        .check(Expr::col(AgentSteps::Status).is_in(STEP_STATUSES)),
                )
                .col(ColumnDef::new(AgentSteps::LastError).json_binary().null())
                .col(ColumnDef::new(AgentSteps::Usage).json_binary().null())
                .col(ColumnDef::new(AgentSteps::Seq).big_integer().not_null())
                .col(ColumnDef::new(AgentSteps::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(AgentSteps::CompletedAt).timestamp_with_time_zone().null())
                .primary_key(Index::create().col(AgentSteps::RunId).col(AgentSteps::StepId))
                .foreign_key(
                    ForeignKey::create()
                        .name("agent_steps_run_fkey")
                        .from(AgentSteps::Table, (AgentSteps::TenantId, AgentSteps::RunId))
                        .to(AgentRuns::Table, (AgentRuns::TenantId, AgentRuns::Id))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("agent_steps_tenant_run_seq_idx")
                .table(AgentSteps::Table)
                .col(AgentSteps::TenantId)
                .col(AgentSteps::RunId)
                .col(AgentSteps::Seq)
                .to_owned(),
        )
        .await
}

async fn create_tool_calls(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(ToolCalls::Table)
                .col(ColumnDef::new(ToolCalls::TenantId).uuid().not_null())
                .col(ColumnDef::new(ToolCalls::RunId).uuid().not_null())
                .col(ColumnDef::new(ToolCalls::ToolCallId).string_len(128).not_null())
                .col(ColumnDef::new(ToolCalls::StepId).string_len(128).not_null())
                .col(ColumnDef::new(ToolCalls::Name).string_len(128).not_null())
                .col(ColumnDef::new(ToolCalls::Arguments).json_binary().not_null())
                .col(ColumnDef::new(ToolCalls::Output).json_binary().null())
                .col(
                    ColumnDef::new(ToolCalls::Status)
                        .string_len(16)
                        .not_null()
                        .check(Expr::col(ToolCalls::Status).is_in(TOOL_CALL_STATUSES)),
                )
                .col(ColumnDef::new(ToolCalls::Seq).big_integer().not_null())
                .col(ColumnDef::new(ToolCalls::StartedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(ToolCalls::CompletedAt).timestamp_with_time_zone().null())
                .primary_key(Index::create().col(ToolCalls::RunId).col(ToolCalls::ToolCallId))
                .foreign_key(
                    ForeignKey::create()
                        .name("tool_calls_run_fkey")
                        .from(ToolCalls::Table, (ToolCalls::TenantId, ToolCalls::RunId))
                        .to(AgentRuns::Table, (AgentRuns::TenantId, AgentRuns::Id))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("tool_calls_step_fkey")
                        .from(ToolCalls::Table, (ToolCalls::RunId, ToolCalls::StepId))
                        .to(AgentSteps::Table, (AgentSteps::RunId, AgentSteps::StepId))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("tool_calls_tenant_run_seq_idx")
                .table(ToolCalls::Table)
                .col(ToolCalls::TenantId)
                .col(ToolCalls::RunId)
                .col(ToolCalls::Seq)
                .to_owned(),
        )
        .await
}

async fn create_events(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(AgentEvents::Table)
                .col(ColumnDef::new(AgentEvents::TenantId).uuid().not_null())
                .col(ColumnDef::new(AgentEvents::RunId).uuid().not_null())
                .col(ColumnDef::new(AgentEvents::Seq).big_integer().not_null())
                .col(ColumnDef::new(AgentEvents::ProducerId).string_len(128).null())
                .col(ColumnDef::new(AgentEvents::Kind).string_len(32).not_null())
                .col(ColumnDef::new(AgentEvents::Data).json_binary().not_null())
                .col(ColumnDef::new(AgentEvents::CreatedAt).timestamp_with_time_zone().not_null())
                .primary_key(Index::create().col(AgentEvents::RunId).col(AgentEvents::Seq))
                .foreign_key(
                    ForeignKey::create()
                        .name("agent_events_run_fkey")
                        .from(AgentEvents::Table, (AgentEvents::TenantId, AgentEvents::RunId))
                        .to(AgentRuns::Table, (AgentRuns::TenantId, AgentRuns::Id))
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
    // A producer's event id is seen once per run (NULL for server events, never equal).
    manager
        .create_index(
            Index::create()
                .name("agent_events_run_producer_key")
                .table(AgentEvents::Table)
                .col(AgentEvents::RunId)
                .col(AgentEvents::ProducerId)
                .unique()
                .to_owned(),
        )
        .await
}

async fn create_usage(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(UsageMetrics::Table)
                .col(ColumnDef::new(UsageMetrics::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(UsageMetrics::TenantId).uuid().not_null())
                .col(ColumnDef::new(UsageMetrics::RunId).uuid().null())
                .col(ColumnDef::new(UsageMetrics::Agent).string_len(64).not_null())
                .col(ColumnDef::new(UsageMetrics::Model).string_len(128).not_null())
                .col(ColumnDef::new(UsageMetrics::InputTokens).big_integer().not_null())
                .col(ColumnDef::new(UsageMetrics::OutputTokens).big_integer().not_null())
                .col(ColumnDef::new(UsageMetrics::CostMicros).big_integer().not_null())
                .col(ColumnDef::new(UsageMetrics::CreatedAt).timestamp_with_time_zone().not_null())
                .check(Expr::col(UsageMetrics::InputTokens).gte(0))
                .check(Expr::col(UsageMetrics::OutputTokens).gte(0))
                .check(Expr::col(UsageMetrics::CostMicros).gte(0))
                .foreign_key(
                    ForeignKey::create()
                        .name("usage_metrics_run_fkey")
                        .from(UsageMetrics::Table, UsageMetrics::RunId)
                        .to(AgentRuns::Table, AgentRuns::Id)
                        .on_delete(ForeignKeyAction::SetNull),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("usage_metrics_tenant_created_idx")
                .table(UsageMetrics::Table)
                .col(UsageMetrics::TenantId)
                .col(UsageMetrics::CreatedAt)
                .to_owned(),
        )
        .await
}

async fn create_health(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(SystemHealth::Table)
                .col(ColumnDef::new(SystemHealth::Id).uuid().not_null().primary_key())
                .col(ColumnDef::new(SystemHealth::Component).string_len(64).not_null())
                .col(
                    ColumnDef::new(SystemHealth::Status)
                        .string_len(8)
                        .not_null()
                        .check(Expr::col(SystemHealth::Status).is_in(["up", "down"])),
                )
                .col(ColumnDef::new(SystemHealth::LatencyMs).big_integer().null())
                .col(ColumnDef::new(SystemHealth::Detail).string_len(512).null())
                .col(ColumnDef::new(SystemHealth::CheckedAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("system_health_checked_idx")
                .table(SystemHealth::Table)
                .col(SystemHealth::CheckedAt)
                .col(SystemHealth::Id)
                .to_owned(),
        )
        .await
}

async fn create_idempotency(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(IdempotencyKeys::Table)
                .col(ColumnDef::new(IdempotencyKeys::TenantId).uuid().not_null())
                .col(ColumnDef::new(IdempotencyKeys::UserId).string_len(255).not_null())
                .col(ColumnDef::new(IdempotencyKeys::Key).string_len(255).not_null())
                .col(ColumnDef::new(IdempotencyKeys::RequestHash).string_len(64).not_null())
                .col(ColumnDef::new(IdempotencyKeys::ResponseStatus).small_integer().not_null())
                .col(ColumnDef::new(IdempotencyKeys::ResponseBody).json_binary().not_null())
                .col(ColumnDef::new(IdempotencyKeys::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(IdempotencyKeys::ExpiresAt).timestamp_with_time_zone().not_null())
                .primary_key(
                    Index::create()
                        .col(IdempotencyKeys::TenantId)
                        .col(IdempotencyKeys::UserId)
                        .col(IdempotencyKeys::Key),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("idempotency_keys_expires_idx")
                .table(IdempotencyKeys::Table)
                .col(IdempotencyKeys::ExpiresAt)
                .to_owned(),
        )
        .await
}

#[derive(DeriveIden)]
enum AgentRuns {
    Table,
    Id,
    TenantId,
}

#[derive(DeriveIden)]
enum AgentSteps {
    Table,
    TenantId,
    RunId,
    StepId,
    Type,
    Status,
    LastError,
    Usage,
    Seq,
    CreatedAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum ToolCalls {
    Table,
    TenantId,
    RunId,
    ToolCallId,
    StepId,
    Name,
    Arguments,
    Output,
    Status,
    Seq,
    StartedAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum AgentEvents {
    Table,
    TenantId,
    RunId,
    Seq,
    ProducerId,
    Kind,
    Data,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UsageMetrics {
    Table,
    Id,
    TenantId,
    RunId,
    Agent,
    Model,
    InputTokens,
    OutputTokens,
    CostMicros,
    CreatedAt,
}

#[derive(DeriveIden)]
enum SystemHealth {
    Table,
    Id,
    Component,
    Status,
    LatencyMs,
    Detail,
    CheckedAt,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    TenantId,
    UserId,
    Key,
    RequestHash,
    ResponseStatus,
    ResponseBody,
    CreatedAt,
    ExpiresAt,
}
