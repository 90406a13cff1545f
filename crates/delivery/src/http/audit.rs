//! `GET /v1/audit-logs`: the tenant's audit trail, for tenant admins.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use sba_application::audit::AuditQueryError;
use sba_domain::{AuditEntry, AuditEntryId, TenantId};
use serde::Serialize;

use super::auth::Authenticated;
use super::error::{ApiError, method_not_allowed};
use super::lists::{ListResponse, Order, PageQuery};
use crate::startup::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/audit-logs")
            .route(web::get().to(list_audit_logs))
            .default_service(web::to(method_not_allowed)),
    );
}

/// An audit entry as clients see it.
#[derive(Debug, Serialize)]
pub struct AuditEntryResponse {
    pub id: AuditEntryId,
    pub tenant_id: TenantId,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub outcome: &'static str,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<AuditEntry> for AuditEntryResponse {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: entry.id,
            tenant_id: entry.tenant_id,
            actor: entry.actor,
            action: entry.action,
            resource_type: entry.resource_type,
            resource_id: entry.resource_id,
            outcome: entry.outcome.as_str(),
            ip: entry.ip,
            request_id: entry.request_id,
            created_at: entry.created_at,
        }
    }
}

impl From<AuditQueryError> for ApiError {
    fn from(error: AuditQueryError) -> Self {
        match error {
            AuditQueryError::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", error.to_string()),
            AuditQueryError::Unexpected(source) => Self::internal(source),
        }
    }
}

async fn list_audit_logs(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let fail = |e: ApiError| e.with_request_id(&ctx.request_id);
    let page = query.page(Order::NewestFirst).map_err(fail)?;
    let entries = state.audit.list(&ctx, page).await.map_err(|e| fail(e.into()))?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(entries, AuditEntryResponse::from)))
}
