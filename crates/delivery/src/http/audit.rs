//! `GET /v1/audit-logs`: the tenant's audit trail, for tenant admins.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use sba_domain::{AuditEntry, AuditEntryId, TenantId};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Authenticated;
use super::error::{ApiError, Problem};
use super::lists::{ListResponse, Order, PageQuery};
use crate::http::AppState;

/// An audit entry as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryResponse {
    #[schema(value_type = uuid::Uuid)]
    pub id: AuditEntryId,
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: TenantId,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    /// `success`, `denied` or `error`.
    #[schema(value_type = String)]
    pub outcome: &'static str,
    pub ip: Option<String>,
    /// The server's own id of the request (unique; `null` for the platform's own changes).
    pub request_id: Option<String>,
    /// The `X-Request-Id` the client sent, if a well-formed one (`null` when none): the
    /// client chooses it, so it identifies nothing on its own.
    pub client_request_id: Option<String>,
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
            client_request_id: entry.client_request_id,
            created_at: entry.created_at,
        }
    }
}

/// The caller's tenant's audit trail, newest first (tenant admins only).
#[utoipa::path(get, path = "/v1/audit-logs", tag = "audit", operation_id = "listAuditLogs",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of entries.", body = ListResponse<AuditEntryResponse>),
        (status = 400, description = "`invalid_request`: a bad limit or cursor.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the caller is not a tenant admin; or `tenant_suspended`, `tenant_unknown`.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn list_audit_logs(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page(Order::NewestFirst)?;
    let entries = state.audit.list(&ctx, page).await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(entries, AuditEntryResponse::from)))
}
