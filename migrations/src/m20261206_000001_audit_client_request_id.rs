//! `audit_logs.client_request_id`: the `X-Request-Id` the client sent, kept beside the
//! server's own `request_id` instead of in its place, so a client cannot make its entries
//! carry another request's id (issue 13). Nullable: most requests send none, and older rows
//! never recorded one.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(AuditLogs::Table)
                    .add_column(ColumnDef::new(AuditLogs::ClientRequestId).string_len(128).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(AuditLogs::Table).drop_column(AuditLogs::ClientRequestId).to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum AuditLogs {
    Table,
    ClientRequestId,
}
