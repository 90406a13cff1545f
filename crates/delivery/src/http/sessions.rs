//! `/v1/sessions`: conversations that group a tenant's runs.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use sba_domain::{Metadata, Session, SessionId, SessionTitle, SessionUpdate};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Authenticated;
use super::error::{ApiError, FieldErrors, Problem};
use super::lists::{ListResponse, Order, PageQuery};
use crate::http::AppState;

/// Body of `POST /v1/sessions` (`{}` for a session without title). Unknown fields are
/// rejected.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// 1–500 characters, not blank, no control characters.
    #[schema(
        example = "Refund for order 42",
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub title: Option<String>,
    /// Free-form string keys (at most 64) with JSON values.
    #[serde(default)]
    #[schema(schema_with = super::openapi::metadata_schema)]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// Body of `PATCH /v1/sessions/{session_id}`: every field given replaces the stored one
/// (`"title": null` clears the title); at least one field. Unknown fields are rejected.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSessionRequest {
    /// 1–500 characters, not blank, no control characters; or `null` to clear it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 500, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    #[allow(clippy::option_option, reason = "absent (unchanged) differs from null (cleared)")]
    pub title: Option<Option<String>>,
    /// Replaces the whole metadata object.
    #[serde(default)]
    #[schema(schema_with = super::openapi::metadata_schema)]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

impl UpdateSessionRequest {
    fn try_into_domain(self) -> Result<SessionUpdate, ApiError> {
        let mut errors = FieldErrors::default();
        if self.title.is_none() && self.metadata.is_none() {
            errors.reject("body", "name at least one of `title` and `metadata`");
        }
        // A rejected field is left out here; `finish` then refuses the whole update.
        let update = SessionUpdate {
            title: self.title.and_then(|title| {
                errors.check("title", title.as_deref().map(SessionTitle::parse).transpose())
            }),
            metadata: self.metadata.and_then(|map| errors.check("metadata", Metadata::parse(map))),
        };
        errors.finish(Some(update))
    }
}

/// A session as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    #[schema(value_type = uuid::Uuid)]
    pub id: SessionId,
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: sba_domain::TenantId,
    /// The user who created it.
    pub user_id: String,
    pub title: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Session> for SessionResponse {
    fn from(session: Session) -> Self {
        Self {
            id: session.id,
            tenant_id: session.tenant_id,
            user_id: session.user_id.to_string(),
            title: session.title.map(|t| t.as_str().to_owned()),
            metadata: session.metadata.into_map(),
            created_at: session.created_at,
            updated_at: session.updated_at,
        }
    }
}

/// Creates a session of the caller's tenant, owned by the caller.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", operation_id = "createSession",
    request_body = CreateSessionRequest,
    responses(
        (status = 201, description = "The session was created.", body = SessionResponse,
            headers(("Location" = String, description = "`/v1/sessions/{session_id}`"))),
        (status = 400, description = "`invalid_json`: malformed JSON or an unknown field.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: agents have no access to sessions.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`, with `errors` per field.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn create_session(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    body: web::Json<CreateSessionRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    let mut errors = FieldErrors::default();
    let title = request.title.as_deref().and_then(|title| errors.check("title", SessionTitle::parse(title)));
    let metadata = errors.check("metadata", Metadata::parse(request.metadata.unwrap_or_default()));
    let (title, metadata) = errors.finish(metadata.map(|metadata| (title, metadata)))?;
    let session = state.sessions.create(&ctx, title, metadata).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/sessions/{}", session.id)))
        .json(SessionResponse::from(session)))
}

/// The caller's own sessions (every user's of the tenant for tenant admins and services),
/// newest first.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", operation_id = "listSessions",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of sessions.", body = ListResponse<SessionResponse>),
        (status = 400, description = "`invalid_request`: a bad limit or cursor.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: agents have no access to sessions.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn list_sessions(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page(Order::NewestFirst)?;
    let sessions = state.sessions.list(&ctx, page).await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(sessions, SessionResponse::from)))
}

/// A session of the caller's tenant: the caller's own, or any for tenant admins and
/// services. Another user's session answers 404, exactly as a missing one.
#[utoipa::path(get, path = "/v1/sessions/{session_id}", tag = "sessions", operation_id = "getSession",
    params(("session_id" = uuid::Uuid, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session.", body = SessionResponse),
        (status = 403, description = "`forbidden`: agents have no access to sessions.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session in the caller's tenant, or another user's (unless the caller is a tenant admin or service); also for a malformed id.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn get_session(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.parse::<SessionId>().map_err(|_| ApiError::not_found())?;
    let session = state.sessions.get(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(SessionResponse::from(session)))
}

/// Changes a session's title or metadata; every node sees the change at once.
#[utoipa::path(patch, path = "/v1/sessions/{session_id}", tag = "sessions", operation_id = "updateSession",
    params(("session_id" = uuid::Uuid, Path, description = "The session's id")),
    request_body = UpdateSessionRequest,
    responses(
        (status = 200, description = "The updated session.", body = SessionResponse),
        (status = 400, description = "`invalid_json`: malformed JSON or an unknown field.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: agents have no access to sessions.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session in the caller's tenant, or another user's (unless the caller is a tenant admin or service); nothing is changed.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`, with `errors` per field.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn update_session(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    path: web::Path<String>,
    body: web::Json<UpdateSessionRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = path.parse::<SessionId>().map_err(|_| ApiError::not_found())?;
    let update = body.into_inner().try_into_domain()?;
    let session = state.sessions.update(&ctx, id, &update).await?;
    Ok(HttpResponse::Ok().json(SessionResponse::from(session)))
}
