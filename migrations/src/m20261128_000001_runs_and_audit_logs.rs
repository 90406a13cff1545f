//! `agent_runs` and `audit_logs`: the first slice of the internal store.
//!
//! Both tables are tenant-owned, so every index a tenant's query uses leads with
//! `tenant_id`. `audit_logs` deliberately has no foreign key to
//! `agent_runs`: the audit trail must outlive whatever it describes (a purged run keeps its
//! history), and it also records attempts on resources that never existed.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const RUN_STATUSES: [&str; 7] =
    ["queued", "in_progress", "requires_action", "completed", "failed", "cancelled", "expired"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AgentRuns::Table)
                    .col(ColumnDef::new(AgentRuns::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(AgentRuns::TenantId).uuid().not_null())
                    .col(ColumnDef::new(AgentRuns::UserId).string_len(255).not_null())
                    .col(ColumnDef::new(AgentRuns::Agent).string_len(64).not_null())
                    .col(
                        ColumnDef::new(AgentRuns::Status)
                            .string_len(32)
                            .not_null()
                            .check(Expr::col(AgentRuns::Status).is_in(RUN_STATUSES)),
                    )
                    .col(ColumnDef::new(AgentRuns::Input).json_binary().not_null())
                    .col(ColumnDef::new(AgentRuns::Output).json_binary().null())
                    .col(ColumnDef::new(AgentRuns::LastError).json_binary().null())
                    .col(ColumnDef::new(AgentRuns::SessionId).uuid().null())
                    .col(ColumnDef::new(AgentRuns::Metadata).json_binary().not_null())
                    .col(ColumnDef::new(AgentRuns::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(AgentRuns::StartedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(AgentRuns::CompletedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(AgentRuns::CancelledAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(AgentRuns::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        // Newest-first listing of a tenant's runs, with the id as a stable tie-breaker.
        manager
            .create_index(
                Index::create()
                    .name("agent_runs_tenant_created_idx")
                    .table(AgentRuns::Table)
                    .col(AgentRuns::TenantId)
                    .col(AgentRuns::CreatedAt)
                    .col(AgentRuns::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("agent_runs_tenant_status_idx")
                    .table(AgentRuns::Table)
                    .col(AgentRuns::TenantId)
                    .col(AgentRuns::Status)
                    .col(AgentRuns::CreatedAt)
                    .to_owned(),
            )
            .await?;

        // The run-expiry sweep of `sba worker` is platform work across tenants, the one
        // access path not led by `tenant_id`; it only ever reads active statuses by age.
        manager
            .create_index(
                Index::create()
                    .name("agent_runs_status_created_idx")
                    .table(AgentRuns::Table)
                    .col(AgentRuns::Status)
                    .col(AgentRuns::CreatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditLogs::Table)
                    .col(ColumnDef::new(AuditLogs::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(AuditLogs::TenantId).uuid().not_null())
                    .col(ColumnDef::new(AuditLogs::Actor).string_len(255).not_null())
                    .col(ColumnDef::new(AuditLogs::Action).string_len(64).not_null())
                    .col(ColumnDef::new(AuditLogs::ResourceType).string_len(64).not_null())
                    .col(ColumnDef::new(AuditLogs::ResourceId).string_len(255).null())
                    .col(
                        ColumnDef::new(AuditLogs::Outcome)
                            .string_len(16)
                            .not_null()
                            .check(Expr::col(AuditLogs::Outcome).is_in(["success", "denied", "error"])),
                    )
                    .col(ColumnDef::new(AuditLogs::Ip).string_len(64).null())
                    .col(ColumnDef::new(AuditLogs::RequestId).string_len(128).null())
                    .col(ColumnDef::new(AuditLogs::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_logs_tenant_created_idx")
                    .table(AuditLogs::Table)
                    .col(AuditLogs::TenantId)
                    .col(AuditLogs::CreatedAt)
                    .col(AuditLogs::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AuditLogs::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(AgentRuns::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum AgentRuns {
    Table,
    Id,
    TenantId,
    UserId,
    Agent,
    Status,
    Input,
    Output,
    LastError,
    SessionId,
    Metadata,
    CreatedAt,
    StartedAt,
    CompletedAt,
    CancelledAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AuditLogs {
    Table,
    Id,
    TenantId,
    Actor,
    Action,
    ResourceType,
    ResourceId,
    Outcome,
    Ip,
    RequestId,
    CreatedAt,
}
