//! [`SeaOrmIdempotencyStore`]: idempotency keys in `idempotency_keys`.
//!
//! A reservation is a row with `response_status = 0`; completing it stores the response.
//! The primary key `(tenant_id, user_id, key)` makes reservation atomic: `INSERT … ON
//! CONFLICT DO NOTHING` succeeds for exactly one of two concurrent requests.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sba_application::ports::{ConflictKind, IdempotencyStore, RepositoryError, Reservation, StoredResponse};
use sba_domain::{TenantId, UserId};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

use super::entities::idempotency_keys::{ActiveModel, Column, Entity};
use crate::observe;
use crate::sql::map_db_err;
use crate::tenant_data::corrupt_row;

const PENDING: i16 = 0;

/// Idempotency keys stored with sea-orm.
#[derive(Debug, Clone)]
pub struct SeaOrmIdempotencyStore {
    db: DatabaseConnection,
}

impl SeaOrmIdempotencyStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

fn key_filter<Q: QueryFilter>(query: Q, tenant: TenantId, user: &UserId, key: &str) -> Q {
    query
        .filter(Column::TenantId.eq(tenant.as_uuid()))
        .filter(Column::UserId.eq(user.as_str()))
        .filter(Column::Key.eq(key))
}

#[async_trait]
impl IdempotencyStore for SeaOrmIdempotencyStore {
    async fn reserve(
        &self,
        tenant: TenantId,
        user: &UserId,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Reservation, RepositoryError> {
        observe::sql!(Internal, "idempotency.reserve", &self.db, async {
            // An expired key is free again.
            key_filter(Entity::delete_many(), tenant, user, key)
                .filter(Column::ExpiresAt.lte(now))
                .exec(&self.db)
                .await
                .map_err(|e| map_db_err(e, "expiring an idempotency key"))?;
            let row = ActiveModel {
                tenant_id: Set(tenant.as_uuid()),
                user_id: Set(user.as_str().to_owned()),
                key: Set(key.to_owned()),
                request_hash: Set(request_hash.to_owned()),
                response_status: Set(PENDING),
                response_body: Set(serde_json::Value::Null),
                created_at: Set(now),
                expires_at: Set(expires_at),
            };
            let inserted = Entity::insert(row)
                .on_conflict(
                    OnConflict::columns([Column::TenantId, Column::UserId, Column::Key])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&self.db)
                .await
                .map_err(|e| map_db_err(e, "reserving an idempotency key"))?;
            if inserted == 1 {
                return Ok(Reservation::Reserved);
            }
            let existing = key_filter(Entity::find(), tenant, user, key)
                .one(&self.db)
                .await
                .map_err(|e| map_db_err(e, "reading an idempotency key"))?
                // Released between our insert and this read: the caller may simply retry.
                .ok_or_else(|| RepositoryError::Conflict(ConflictKind::ConcurrentChange))?;
            if existing.response_status == PENDING {
                return Ok(Reservation::InProgress { request_hash: existing.request_hash });
            }
            let status = u16::try_from(existing.response_status)
                .map_err(|_| corrupt_row("idempotency_keys", existing.response_status))?;
            Ok(Reservation::Completed {
                request_hash: existing.request_hash,
                response: StoredResponse { status, body: existing.response_body },
            })
        })
        .await
    }

    async fn complete(
        &self,
        tenant: TenantId,
        user: &UserId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), RepositoryError> {
        observe::sql!(Internal, "idempotency.complete", &self.db, async {
            let status = i16::try_from(response.status)
                .map_err(|_| anyhow::anyhow!("status {} out of range", response.status))?;
            let result = key_filter(Entity::update_many(), tenant, user, key)
                .col_expr(Column::ResponseStatus, Expr::value(status))
                .col_expr(Column::ResponseBody, Expr::value(response.body.clone()))
                .filter(Column::ResponseStatus.eq(PENDING))
                .exec(&self.db)
                .await
                .map_err(|e| map_db_err(e, "completing an idempotency key"))?;
            if result.rows_affected == 1 { Ok(()) } else { Err(RepositoryError::NotFound) }
        })
        .await
    }

    async fn release(&self, tenant: TenantId, user: &UserId, key: &str) -> Result<(), RepositoryError> {
        observe::sql!(Internal, "idempotency.release", &self.db, async {
            key_filter(Entity::delete_many(), tenant, user, key)
                .filter(Column::ResponseStatus.eq(PENDING))
                .exec(&self.db)
                .await
                .map_err(|e| map_db_err(e, "releasing an idempotency key"))?;
            Ok(())
        })
        .await
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, RepositoryError> {
        observe::sql!(Internal, "idempotency.purge_expired", &self.db, async {
            let result = Entity::delete_many()
                .filter(Column::ExpiresAt.lte(now))
                .exec(&self.db)
                .await
                .map_err(|e| map_db_err(e, "purging idempotency keys"))?;
            Ok(result.rows_affected)
        })
        .await
    }
}
