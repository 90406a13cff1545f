//! [`SeaOrmHealthLog`]: dependency health history in `system_health`.

use async_trait::async_trait;
use sba_application::pagination::{Cursor, Page, PageRequest};
use sba_application::ports::{HealthLog, HealthRecord, RepositoryError};
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};

use super::entities::system_health::{ActiveModel, Column, Entity, Model};
use super::keyset::newest_first;
use crate::observe;
use crate::sql::map_db_err;
use crate::tenant_data::corrupt_row;

/// The longest `detail` stored; longer causes are cut (the column holds 512 characters).
const MAX_DETAIL: usize = 512;

/// Health history stored with sea-orm.
#[derive(Debug, Clone)]
pub struct SeaOrmHealthLog {
    db: DatabaseConnection,
}

impl SeaOrmHealthLog {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl HealthLog for SeaOrmHealthLog {
    async fn record(&self, records: &[HealthRecord]) -> Result<(), RepositoryError> {
        if records.is_empty() {
            return Ok(());
        }
        observe::sql!(Internal, "health.record", &self.db, async {
            let models = records.iter().map(|r| ActiveModel {
                id: Set(r.id),
                component: Set(r.component.clone()),
                status: Set(if r.up { "up" } else { "down" }.to_owned()),
                latency_ms: Set(Some(i64::try_from(r.latency_ms).unwrap_or(i64::MAX))),
                detail: Set(r.detail.as_ref().map(|d| d.chars().take(MAX_DETAIL).collect())),
                checked_at: Set(r.checked_at),
            });
            Entity::insert_many(models)
                .exec_without_returning(&self.db)
                .await
                .map_err(|e| map_db_err(e, "recording health"))?;
            Ok(())
        })
        .await
    }

    async fn list(&self, page: PageRequest) -> Result<Page<HealthRecord>, RepositoryError> {
        observe::sql!(Internal, "health.list", &self.db, async {
            let rows = newest_first(Entity::find(), Column::CheckedAt, Column::Id, &page)?
                .all(&self.db)
                .await
                .map_err(|e| map_db_err(e, "listing health records"))?;
            let records = rows.into_iter().map(to_domain).collect::<Result<Vec<_>, _>>()?;
            Ok(Page::from_rows(records, page.limit, |r| Cursor::Time { at: r.checked_at, id: r.id }))
        })
        .await
    }
}

fn to_domain(row: Model) -> Result<HealthRecord, RepositoryError> {
    let up = match row.status.as_str() {
        "up" => true,
        "down" => false,
        other => return Err(corrupt_row("system_health", other)),
    };
    Ok(HealthRecord {
        id: row.id,
        component: row.component,
        up,
        latency_ms: row.latency_ms.and_then(|ms| u64::try_from(ms).ok()).unwrap_or(0),
        detail: row.detail,
        checked_at: row.checked_at,
    })
}
