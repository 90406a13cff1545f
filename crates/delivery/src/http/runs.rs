//! `/v1/runs`: start, read and cancel agent runs.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use sba_application::idempotency::{Begin, IdempotencyKey, InvalidKey, request_hash};
use sba_application::ports::RunFilter;
use sba_application::ports::StoredResponse;
use sba_application::runs::CreateRun;
use sba_domain::{AgentName, AgentRun, Metadata, RunId, RunStatus, SessionId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::auth::Authenticated;
use super::error::{ApiError, FieldError, method_not_allowed};
use super::lists::{ListResponse, Order, invalid_request, page_request};
use crate::startup::AppState;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/runs")
            .route(web::post().to(create_run))
            .route(web::get().to(list_runs))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/runs/{run_id}")
            .route(web::get().to(get_run))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/runs/{run_id}/cancel")
            .route(web::post().to(cancel_run))
            .default_service(web::to(method_not_allowed)),
    );
}

/// Body of `POST /v1/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    pub agent: String,
    #[serde(default)]
    pub input: Value,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

impl CreateRunRequest {
    /// Parses every field, reporting all invalid ones at once.
    fn try_into_domain(self) -> Result<CreateRun, ApiError> {
        let mut errors = Vec::new();
        let mut reject =
            |field: &str, message: String| errors.push(FieldError { field: field.to_owned(), message });
        let agent = AgentName::parse(&self.agent).map_err(|e| reject("agent", e.message)).ok();
        let session_id = match self.session_id.as_deref() {
            None => Some(None),
            Some(text) => Uuid::parse_str(text)
                .map(|id| Some(SessionId::from_uuid(id)))
                .map_err(|_| reject("session_id", "must be a UUID".to_owned()))
                .ok(),
        };
        let metadata = Metadata::parse(self.metadata.unwrap_or_default())
            .map_err(|e| reject("metadata", e.message))
            .ok();
        match (agent, session_id, metadata) {
            (Some(agent), Some(session_id), Some(metadata)) if errors.is_empty() => {
                Ok(CreateRun { agent, input: self.input, session_id, metadata })
            }
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// A run as clients see it.
#[derive(Debug, Serialize)]
pub struct RunResponse {
    pub id: RunId,
    pub tenant_id: sba_domain::TenantId,
    pub user_id: String,
    pub agent: String,
    pub status: &'static str,
    pub input: Value,
    pub output: Option<Value>,
    pub last_error: Option<sba_domain::RunError>,
    pub session_id: Option<SessionId>,
    pub metadata: serde_json::Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl From<AgentRun> for RunResponse {
    fn from(run: AgentRun) -> Self {
        Self {
            id: run.id,
            tenant_id: run.tenant_id,
            user_id: run.user_id.to_string(),
            agent: run.agent.to_string(),
            status: run.status().as_str(),
            input: run.input,
            output: run.output,
            last_error: run.last_error,
            session_id: run.session_id,
            metadata: run.metadata.into_map(),
            created_at: run.created_at,
            started_at: run.started_at,
            completed_at: run.completed_at,
            cancelled_at: run.cancelled_at,
        }
    }
}

/// The operation name that scopes idempotency keys of this route.
const CREATE_RUN: &str = "POST /v1/runs";

async fn create_run(
    req: HttpRequest,
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let fail = |e: ApiError| e.with_request_id(&ctx.request_id);
    let body = body.into_inner();
    let request: CreateRunRequest = serde_json::from_value(body.clone()).map_err(|e| {
        fail(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("The request body is not valid: {e}"),
        ))
    })?;
    let request = request.try_into_domain().map_err(fail)?;
    let key = match req.headers().get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| IdempotencyKey::parse(text).ok())
                .ok_or_else(|| fail(invalid_request(InvalidKey.to_string())))?,
        ),
    };
    let Some(key) = key else {
        let run = state.runs.create(&ctx, request).await.map_err(|e| fail(e.into()))?;
        return Ok(created(RunResponse::from(run)));
    };

    match state.idempotency.begin(&ctx, &key, &request_hash(CREATE_RUN, &body)).await {
        Err(error) => {
            Err(fail(ApiError::internal(anyhow::Error::new(error).context("reserving an idempotency key"))))
        }
        Ok(Begin::Replay(stored)) => Ok(replay(stored)),
        Ok(Begin::Conflict) => Err(fail(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "This Idempotency-Key was already used with a different request.",
        ))),
        Ok(Begin::InProgress) => Err(fail(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_in_progress",
            "A request with this Idempotency-Key is still being handled; retry shortly.",
        ))),
        Ok(Begin::Proceed) => {
            let run = match state.runs.create(&ctx, request).await {
                Ok(run) => run,
                Err(error) => {
                    state.idempotency.abandon(&ctx, &key).await;
                    return Err(fail(error.into()));
                }
            };
            let dto = RunResponse::from(run);
            let stored = serde_json::to_value(&dto)
                .map(|body| StoredResponse { status: StatusCode::CREATED.as_u16(), body })
                .map_err(|e| fail(ApiError::internal(e.into())))?;
            if let Err(error) = state.idempotency.finish(&ctx, &key, stored).await {
                // The run exists; a retry would now be refused as in progress until the key
                // expires, which is safer than creating a second run.
                tracing::error!(error = format!("{error:#}"), "storing an idempotent response failed");
            }
            Ok(created(dto))
        }
    }
}

fn created(run: RunResponse) -> HttpResponse {
    HttpResponse::Created().insert_header((header::LOCATION, format!("/v1/runs/{}", run.id))).json(run)
}

/// A stored response, marked as a replay.
fn replay(stored: StoredResponse) -> HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::CREATED);
    let mut response = HttpResponse::build(status);
    if let Some(id) = stored.body.get("id").and_then(Value::as_str) {
        response.insert_header((header::LOCATION, format!("/v1/runs/{id}")));
    }
    response.insert_header((IDEMPOTENT_REPLAYED, "true")).json(stored.body)
}

async fn get_run(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(&path, &ctx.request_id)?;
    let run =
        state.runs.get(&ctx, id).await.map_err(|e| ApiError::from(e).with_request_id(&ctx.request_id))?;
    Ok(HttpResponse::Ok().json(RunResponse::from(run)))
}

async fn cancel_run(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(&path, &ctx.request_id)?;
    let run =
        state.runs.cancel(&ctx, id).await.map_err(|e| ApiError::from(e).with_request_id(&ctx.request_id))?;
    Ok(HttpResponse::Ok().json(RunResponse::from(run)))
}

/// `?status=&agent=&session_id=&limit=&cursor=` of `GET /v1/runs`.
#[derive(Debug, Deserialize)]
pub struct ListRunsQuery {
    pub status: Option<String>,
    pub agent: Option<String>,
    pub session_id: Option<String>,
    // Not a flattened `PageQuery`: serde_urlencoded cannot parse numbers inside `flatten`.
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

impl ListRunsQuery {
    fn filter(&self) -> Result<RunFilter, ApiError> {
        let status = self
            .status
            .as_deref()
            .map(|s| {
                s.parse::<RunStatus>().map_err(|_| invalid_request(format!("`{s}` is not a run status")))
            })
            .transpose()?;
        let agent = self
            .agent
            .as_deref()
            .map(|a| AgentName::parse(a).map_err(|e| invalid_request(e.to_string())))
            .transpose()?;
        let session_id = self
            .session_id
            .as_deref()
            .map(|s| s.parse::<SessionId>().map_err(|_| invalid_request("session_id must be a UUID")))
            .transpose()?;
        Ok(RunFilter { status, agent, session_id })
    }
}

async fn list_runs(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    query: web::Query<ListRunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let fail = |e: ApiError| e.with_request_id(&ctx.request_id);
    let filter = query.filter().map_err(fail)?;
    let page = page_request(query.limit, query.cursor.as_deref(), Order::NewestFirst).map_err(fail)?;
    let runs = state.queries.list(&ctx, filter, page).await.map_err(|e| fail(e.into()))?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(runs, RunResponse::from)))
}

/// A malformed id names no run, so it answers 404 exactly like a missing one.
pub fn parse_run_id(text: &str, request_id: &str) -> Result<RunId, ApiError> {
    text.parse().map_err(|_| ApiError::not_found().with_request_id(request_id))
}
