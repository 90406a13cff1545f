//! `GET /v1/system/health`: the recorded dependency health history, for platform
//! administrators (admins and services of `SBA_AUTH__PLATFORM_TENANT_ID`).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use sba_application::ports::HealthRecord;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Authenticated;
use super::error::{ApiError, Problem};
use super::lists::{ListResponse, Order, PageQuery};
use crate::http::AppState;

/// One recorded check of one dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthRecordResponse {
    pub id: Uuid,
    pub component: String,
    /// `up` or `down`.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub latency_ms: u64,
    /// Why it was down (platform administrators only ever see this).
    pub detail: Option<String>,
    pub checked_at: DateTime<Utc>,
}

impl From<HealthRecord> for HealthRecordResponse {
    fn from(record: HealthRecord) -> Self {
        Self {
            id: record.id,
            component: record.component,
            status: if record.up { "up" } else { "down" },
            latency_ms: record.latency_ms,
            detail: record.detail,
            checked_at: record.checked_at,
        }
    }
}

/// The recorded health history, newest first (platform administrators only).
#[utoipa::path(get, path = "/v1/system/health", tag = "system", operation_id = "listSystemHealth",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of recorded checks.", body = ListResponse<HealthRecordResponse>),
        (status = 400, description = "`invalid_request`: a bad limit or cursor.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the caller is not a platform administrator; or `tenant_suspended`, `tenant_unknown`.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn system_health(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page(Order::NewestFirst)?;
    let records = state.system_health.history(&ctx, page).await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(records, HealthRecordResponse::from)))
}
