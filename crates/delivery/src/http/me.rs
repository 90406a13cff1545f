//! `GET /v1/me`: who the bearer token says the caller is. Cheap (no storage), so clients
//! can check a token and the benchmarks can measure the request path itself.

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Authenticated;

/// The verified caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: sba_domain::TenantId,
    pub user_id: String,
    /// `authenticated`, `admin`, `agent` or `service`.
    #[schema(value_type = String, example = "authenticated")]
    pub role: &'static str,
}

/// The caller as its token proves it.
#[utoipa::path(get, path = "/v1/me", tag = "auth", operation_id = "getMe",
    responses((status = 200, description = "The verified caller.", body = MeResponse)),
    security(("bearer" = [])))]
pub(super) async fn me(Authenticated(ctx): Authenticated) -> HttpResponse {
    let principal = ctx.principal;
    HttpResponse::Ok().json(MeResponse {
        tenant_id: principal.tenant_id,
        user_id: principal.user_id.to_string(),
        role: principal.role.as_str(),
    })
}
