//! `/v1/runs`: start, read and cancel agent runs.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use sba_application::demo::ECHO_AGENT;
use sba_application::idempotency::{Begin, IdempotencyKey, InvalidKey, request_hash};
use sba_application::ports::RunFilter;
use sba_application::ports::StoredResponse;
use sba_application::runs::CreateRun;
use sba_domain::{AgentName, AgentRun, Metadata, RunId, RunStatus, SessionId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Authenticated;
use super::error::{ApiError, FieldErrors, Problem, ProblemCode};
use super::lists::{ListResponse, Order, page_request};
use crate::http::AppState;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Body of `POST /v1/runs`. Unknown fields are rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    /// The agent to run: 1–64 characters of `[A-Za-z0-9._-]`.
    #[schema(example = "support-bot", pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub agent: String,
    /// Anything the agent needs: any JSON value (`null` when omitted).
    #[serde(default)]
    pub input: Value,
    /// A session of the caller's tenant.
    #[serde(default)]
    #[schema(value_type = Option<uuid::Uuid>)]
    pub session_id: Option<String>,
    /// Free-form string keys with JSON values.
    #[serde(default)]
    #[schema(schema_with = super::openapi::metadata_schema)]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

impl CreateRunRequest {
    /// Parses every field, reporting all invalid ones at once.
    fn try_into_domain(self) -> Result<CreateRun, ApiError> {
        let mut errors = FieldErrors::default();
        let agent = errors.check("agent", AgentName::parse(&self.agent));
        // A rejected field is left out here; `finish` then refuses the whole request.
        let session_id = self.session_id.as_deref().and_then(|text| {
            Uuid::parse_str(text)
                .map(SessionId::from_uuid)
                .map_err(|_| errors.reject("session_id", "must be a UUID"))
                .ok()
        });
        let metadata = errors.check("metadata", Metadata::parse(self.metadata.unwrap_or_default()));
        let input = self.input;
        errors.finish(agent.zip(metadata).map(|(agent, metadata)| CreateRun {
            agent,
            input,
            session_id,
            metadata,
        }))
    }
}

/// A run as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunResponse {
    #[schema(value_type = uuid::Uuid)]
    pub id: RunId,
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: sba_domain::TenantId,
    pub user_id: String,
    pub agent: String,
    /// `queued`, `in_progress`, `requires_action`, `completed`, `failed`, `cancelled` or
    /// `expired`.
    #[schema(value_type = String, example = "queued")]
    pub status: &'static str,
    /// The run's input as given: any JSON value.
    pub input: Value,
    /// What the run produced: any JSON value, `null` until it completes.
    pub output: Option<Value>,
    #[schema(value_type = Option<super::openapi::ErrorDetail>)]
    pub last_error: Option<sba_domain::RunError>,
    #[schema(value_type = Option<uuid::Uuid>)]
    pub session_id: Option<SessionId>,
    #[schema(value_type = Object)]
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

/// Starts a run. With an `Idempotency-Key`, a retry with the same body answers like the
/// first request (with `Idempotent-Replayed: true`); the same key with another body is 409.
/// A refused attempt (invalid body, reused key) is audited as denied.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", operation_id = "createRun",
    request_body = CreateRunRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1–255 visible ASCII characters; kept 24 h per tenant and user.")),
    responses(
        (status = 201, description = "The run was created (or replayed).", body = RunResponse,
            headers(("Location" = String, description = "`/v1/runs/{run_id}`"),
                    ("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 400, description = "Malformed JSON, unknown field or bad `Idempotency-Key`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: agents cannot start runs.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`idempotency_conflict` or `idempotency_in_progress`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`, with `errors` per field.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn create_run(
    req: HttpRequest,
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let result = create(&req, &state, &ctx, body.into_inner()).await;
    if let Err(error) = &result
        && error.status().is_client_error()
        && let Err(audit) = state.runs.record_refused(&ctx, "run.create", None).await
    {
        tracing::error!(error = format!("{audit:#}"), "auditing a refused run creation failed");
    }
    result
}

async fn create(
    req: &HttpRequest,
    state: &AppState,
    ctx: &sba_application::RequestContext,
    body: Value,
) -> Result<HttpResponse, ApiError> {
    let request: CreateRunRequest = serde_json::from_value(body.clone()).map_err(|e| {
        ApiError::new(ProblemCode::InvalidJson, format!("The request body is not valid: {e}"))
    })?;
    let request = request.try_into_domain()?;
    let key = match req.headers().get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| IdempotencyKey::parse(text).ok())
                .ok_or_else(|| ApiError::invalid_request(InvalidKey.to_string()))?,
        ),
    };
    let Some(key) = key else {
        let run = state.runs.create(ctx, request).await?;
        start_agent(state, &run);
        return Ok(created(RunResponse::from(run)));
    };

    match state.idempotency.begin(ctx, &key, &request_hash(CREATE_RUN, &body)).await {
        Err(error) => {
            Err(ApiError::internal(anyhow::Error::new(error).context("reserving an idempotency key")))
        }
        Ok(Begin::Replay(stored)) => Ok(replay(stored)),
        Ok(Begin::Conflict) => Err(ApiError::new(
            ProblemCode::IdempotencyConflict,
            "This Idempotency-Key was already used with a different request.",
        )),
        Ok(Begin::InProgress) => Err(ApiError::new(
            ProblemCode::IdempotencyInProgress,
            "A request with this Idempotency-Key is still being handled; retry shortly.",
        )),
        Ok(Begin::Proceed) => {
            let run = match state.runs.create(ctx, request).await {
                Ok(run) => run,
                Err(error) => {
                    state.idempotency.abandon(ctx, &key).await;
                    return Err(error.into());
                }
            };
            start_agent(state, &run);
            let dto = RunResponse::from(run);
            let stored = serde_json::to_value(&dto)
                .map(|body| StoredResponse { status: StatusCode::CREATED.as_u16(), body })
                .map_err(|e| ApiError::internal(e.into()))?;
            if let Err(error) = state.idempotency.finish(ctx, &key, stored).await {
                // The run exists; a retry would now be refused as in progress until the key
                // expires, which is safer than creating a second run.
                tracing::error!(error = format!("{error:#}"), "storing an idempotent response failed");
            }
            Ok(created(dto))
        }
    }
}

/// Hands a run of agent `echo` just created (not a replay) to the demo agent, when it is on.
fn start_agent(state: &AppState, run: &AgentRun) {
    if let Some(echo) = &state.echo
        && run.agent.as_str() == ECHO_AGENT
    {
        echo.start(run);
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

/// A run of the caller's tenant.
#[utoipa::path(get, path = "/v1/runs/{run_id}", tag = "runs", operation_id = "getRun",
    params(("run_id" = uuid::Uuid, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run.", body = RunResponse),
        (status = 404, description = "No such run in the caller's tenant (also for a malformed id).",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn get_run(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(&path)?;
    let run = state.runs.get(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(RunResponse::from(run)))
}

/// Cancels a run: for its creator, tenant admins and services (anyone else is refused and
/// the run is unchanged); the refusal of a run that already ended is 409
/// `invalid_transition`. Every refusal is audited as denied.
#[utoipa::path(post, path = "/v1/runs/{run_id}/cancel", tag = "runs", operation_id = "cancelRun",
    params(("run_id" = uuid::Uuid, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The cancelled run.", body = RunResponse),
        (status = 403, description = "`forbidden`: only the run's creator, tenant admins and services cancel it; the run is unchanged.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run in the caller's tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid_transition`: the run has already ended.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn cancel_run(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(&path)?;
    let run = state.runs.cancel(&ctx, id).await?;
    Ok(HttpResponse::Ok().json(RunResponse::from(run)))
}

/// `?status=&agent=&session_id=&limit=&cursor=` of `GET /v1/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRunsQuery {
    /// Only runs with this status.
    pub status: Option<String>,
    /// Only runs of this agent.
    pub agent: Option<String>,
    /// Only runs of this session.
    #[param(value_type = Option<uuid::Uuid>)]
    pub session_id: Option<String>,
    // Not a flattened `PageQuery`: serde_urlencoded cannot parse numbers inside `flatten`.
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListRunsQuery {
    fn filter(&self) -> Result<RunFilter, ApiError> {
        let status = self
            .status
            .as_deref()
            .map(|s| {
                s.parse::<RunStatus>()
                    .map_err(|_| ApiError::invalid_request(format!("`{s}` is not a run status")))
            })
            .transpose()?;
        let agent = self
            .agent
            .as_deref()
            .map(|a| AgentName::parse(a).map_err(|e| ApiError::invalid_request(e.to_string())))
            .transpose()?;
        let session_id = self
            .session_id
            .as_deref()
            .map(|s| {
                s.parse::<SessionId>().map_err(|_| ApiError::invalid_request("session_id must be a UUID"))
            })
            .transpose()?;
        Ok(RunFilter { status, agent, session_id })
    }
}

/// The caller's tenant's runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", operation_id = "listRuns",
    params(ListRunsQuery),
    responses(
        (status = 200, description = "One page of runs.", body = ListResponse<RunResponse>),
        (status = 400, description = "`invalid_request`: a bad filter, limit or cursor.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn list_runs(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    query: web::Query<ListRunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = query.filter()?;
    let page = page_request(query.limit, query.cursor.as_deref(), Order::NewestFirst)?;
    let runs = state.queries.list(&ctx, filter, page).await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(runs, RunResponse::from)))
}

/// A malformed id names no run, so it answers 404 exactly like a missing one.
pub fn parse_run_id(text: &str) -> Result<RunId, ApiError> {
    text.parse().map_err(|_| ApiError::not_found())
}
