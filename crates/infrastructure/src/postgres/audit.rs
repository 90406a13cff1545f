//! [`SeaOrmAuditLog`]: the audit trail in `audit_logs`.

use async_trait::async_trait;
use sba_application::ports::{AuditLog, RepositoryError};
use sba_domain::AuditEntry;
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};

use super::entities::audit_logs::ActiveModel;
pub(super) use super::entities::audit_logs::Entity;
use super::error::map_db_err;

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
        Entity::insert(audit_model(entry))
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| map_db_err(e, "recording an audit entry"))?;
        Ok(())
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
        created_at: Set(entry.created_at),
    }
}
