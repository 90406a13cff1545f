//! [`SeaOrmAuditLog`]: the audit trail in `audit_logs`.

use async_trait::async_trait;
use sba_application::pagination::{Cursor, Page, PageRequest};
use sba_application::ports::{AuditLog, RepositoryError};
use sba_domain::{AuditEntry, AuditEntryId, AuditOutcome, TenantId};
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

pub(super) use super::entities::audit_logs::Entity;
use super::entities::audit_logs::{ActiveModel, Column, Model};
use super::keyset::newest_first;
use crate::observe;
use crate::sql::map_db_err;
use crate::tenant_data::corrupt_row;

/// Audit entries stored with sea-orm.
#[derive(Debug, Clone)]
pub struct SeaOrmAuditLog {
    db: DatabaseConnection,
}

impl SeaOrmAuditLog {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl AuditLog for SeaOrmAuditLog {
    async fn record(&self, entry: &AuditEntry) -> Result<(), RepositoryError> {
        observe::sql!(Internal, "audit.record", &self.db, async {
            Entity::insert(audit_model(entry))
                .exec_without_returning(&self.db)
                .await
                .map_err(|e| map_db_err(e, "recording an audit entry"))?;
            Ok(())
        })
        .await
    }

    async fn list(&self, tenant: TenantId, page: PageRequest) -> Result<Page<AuditEntry>, RepositoryError> {
        observe::sql!(Internal, "audit.list", &self.db, async {
            let query = Entity::find().filter(Column::TenantId.eq(tenant.as_uuid()));
            let rows = newest_first(query, Column::CreatedAt, Column::Id, &page)?
                .all(&self.db)
                .await
                .map_err(|e| map_db_err(e, "listing audit entries"))?;
            let entries = rows.into_iter().map(to_domain).collect::<Result<Vec<_>, _>>()?;
            Ok(Page::from_rows(entries, page.limit, |e| Cursor::Time {
                at: e.created_at,
                id: e.id.as_uuid(),
            }))
        })
        .await
    }
}

pub(super) fn audit_model(entry: &AuditEntry) -> ActiveModel {
    ActiveModel {
        id: Set(entry.id.as_uuid()),
        tenant_id: Set(entry.tenant_id.as_uuid()),
        actor: Set(entry.actor.clone()),
        action: Set(entry.action.clone()),
        resource_type: Set(entry.resource_type.clone()),
        resource_id: Set(entry.resource_id.clone()),
        outcome: Set(entry.outcome.as_str().to_owned()),
        ip: Set(entry.ip.clone()),
        request_id: Set(entry.request_id.clone()),
        client_request_id: Set(entry.client_request_id.clone()),
        created_at: Set(entry.created_at),
    }
}

fn to_domain(row: Model) -> Result<AuditEntry, RepositoryError> {
    Ok(AuditEntry {
        id: AuditEntryId::from_uuid(row.id),
        tenant_id: TenantId::from_uuid(row.tenant_id),
        actor: row.actor,
        action: row.action,
        resource_type: row.resource_type,
        resource_id: row.resource_id,
        outcome: AuditOutcome::from_stored(&row.outcome)
            .ok_or_else(|| corrupt_row("audit_logs", &row.outcome))?,
        ip: row.ip,
        request_id: row.request_id,
        client_request_id: row.client_request_id,
        created_at: row.created_at,
    })
}
