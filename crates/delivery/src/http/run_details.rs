//! `GET /v1/runs/{run_id}/steps`, `/tool-calls` and `/events`: what happened inside a run.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use sba_application::pagination::{Cursor, DEFAULT_LIMIT, MAX_LIMIT, MAX_SEQ};
use sba_domain::events::{EventView, RunEvent};
use sba_domain::steps::{Step, ToolCall};
use sba_domain::usage::Usage;
use sba_domain::{RunError, RunId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::Authenticated;
use super::error::ApiError;
use super::error::Problem;
use super::lists::{ListResponse, Order, PageQuery, decode_cursor};
use super::runs::parse_run_id;
use crate::http::AppState;

/// A step as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepResponse {
    pub id: String,
    #[schema(value_type = uuid::Uuid)]
    pub run_id: RunId,
    /// `message_creation` or `tool_calls`.
    #[schema(value_type = String)]
    pub r#type: &'static str,
    /// `in_progress`, `completed`, `failed`, `cancelled` or `expired`.
    #[schema(value_type = String)]
    pub status: &'static str,
    #[schema(value_type = Option<super::openapi::ErrorDetail>)]
    pub last_error: Option<RunError>,
    /// Tokens and cost reported for the step.
    #[schema(value_type = Option<Object>)]
    pub usage: Option<Usage>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<Step> for StepResponse {
    fn from(step: Step) -> Self {
        Self {
            id: step.step_id.to_string(),
            run_id: step.run_id,
            r#type: step.step_type.as_str(),
            status: step.status.as_str(),
            last_error: step.last_error,
            usage: step.usage,
            created_at: step.created_at,
            completed_at: step.completed_at,
        }
    }
}

/// A tool call as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolCallResponse {
    pub id: String,
    #[schema(value_type = uuid::Uuid)]
    pub run_id: RunId,
    pub step_id: String,
    pub name: String,
    /// As the agent reported them: any JSON value.
    pub arguments: Value,
    /// Any JSON value, `null` until the call completes.
    pub output: Option<Value>,
    #[schema(value_type = String)]
    pub status: &'static str,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl From<ToolCall> for ToolCallResponse {
    fn from(call: ToolCall) -> Self {
        Self {
            id: call.tool_call_id.to_string(),
            run_id: call.run_id,
            step_id: call.step_id.to_string(),
            name: call.name,
            arguments: call.arguments,
            output: call.output,
            status: call.status.as_str(),
            started_at: call.started_at,
            completed_at: call.completed_at,
        }
    }
}

/// An event as clients see it, in REST lists and WebSocket frames alike: serialized by
/// [`EventView`] (the domain's one serializer, which the live bus uses too), so this type
/// only adds the schema.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct EventResponse(EventView);

impl From<RunEvent> for EventResponse {
    fn from(event: RunEvent) -> Self {
        Self(event.view())
    }
}

impl utoipa::PartialSchema for EventResponse {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        EventSchema::schema()
    }
}

impl ToSchema for EventResponse {
    fn name() -> std::borrow::Cow<'static, str> {
        "EventResponse".into()
    }
}

/// The documented shape of [`EventView`] (the domain has no OpenAPI dependency).
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct EventSchema {
    seq: u64,
    #[schema(value_type = uuid::Uuid)]
    run_id: RunId,
    /// `run.created`, `run.started`, `step.delta`, ... (see the contract).
    #[schema(value_type = String, example = "run.created")]
    kind: &'static str,
    /// The kind's data, e.g. `{"step_id","text"}` for `step.delta`.
    #[schema(value_type = Object)]
    data: Value,
    created_at: DateTime<Utc>,
}

/// `?after_seq=&limit=&cursor=` of the event listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this `seq` (exclusive), 0 to 9223372036854775807; not together with
    /// `cursor`.
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub after_seq: Option<u64>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A run's steps, oldest first.
#[utoipa::path(get, path = "/v1/runs/{run_id}/steps", tag = "runs", operation_id = "listSteps",
    params(("run_id" = uuid::Uuid, Path, description = "The run's id"), PageQuery),
    responses(
        (status = 200, description = "One page.", body = ListResponse<StepResponse>),
        (status = 404, description = "No such run in the caller's tenant (also for a malformed id).",
            body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "`invalid_request`: a bad limit or cursor.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn list_steps(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(&path)?;
    let page = query.page(Order::BySeq)?;
    let steps = state.queries.steps(&ctx, id, page).await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(steps, StepResponse::from)))
}

/// A run's tool calls, oldest first.
#[utoipa::path(get, path = "/v1/runs/{run_id}/tool-calls", tag = "runs", operation_id = "listToolCalls",
    params(("run_id" = uuid::Uuid, Path, description = "The run's id"), PageQuery),
    responses(
        (status = 200, description = "One page.", body = ListResponse<ToolCallResponse>),
        (status = 404, description = "No such run in the caller's tenant (also for a malformed id).",
            body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "`invalid_request`: a bad limit or cursor.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn list_tool_calls(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(&path)?;
    let page = query.page(Order::BySeq)?;
    let calls = state.queries.tool_calls(&ctx, id, page).await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(calls, ToolCallResponse::from)))
}

/// A run's events by `seq`, oldest first: the replay of what happened.
#[utoipa::path(get, path = "/v1/runs/{run_id}/events", tag = "runs", operation_id = "listEvents",
    params(("run_id" = uuid::Uuid, Path, description = "The run's id"), EventsQuery),
    responses(
        (status = 200, description = "One page.", body = ListResponse<EventResponse>),
        (status = 404, description = "No such run in the caller's tenant (also for a malformed id).",
            body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "`invalid_request`: a bad limit, cursor or `after_seq` (out of range included).",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn list_events(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_run_id(&path)?;
    let after_seq = match (&query.cursor, query.after_seq) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_request("Give either `cursor` or `after_seq`, not both."));
        }
        (Some(text), None) => match decode_cursor(text, Order::BySeq)? {
            Cursor::Seq(seq) => seq,
            Cursor::Time { .. } => {
                return Err(ApiError::invalid_request("The cursor belongs to another listing."));
            }
        },
        (None, Some(after_seq)) if after_seq > MAX_SEQ => {
            return Err(ApiError::invalid_request(format!("after_seq must be between 0 and {MAX_SEQ}")));
        }
        (None, after_seq) => after_seq.unwrap_or(0),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_request(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let events = state.queries.events(&ctx, id, after_seq, limit).await?;
    Ok(HttpResponse::Ok().json(ListResponse::from_page(events, EventResponse::from)))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use sba_domain::TenantId;
    use sba_domain::events::{EventData, EventKind};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn rest_events_are_byte_identical_to_the_live_bus_payload() {
        let event = RunEvent {
            run_id: RunId::from_uuid(Uuid::now_v7()),
            tenant_id: TenantId::from_uuid(Uuid::now_v7()),
            seq: 7,
            producer_id: Some("p7".to_owned()),
            data: EventData::parse(EventKind::StepDelta, json!({"step_id": "s1", "text": "hé \"quoted\""}))
                .unwrap(),
            created_at: Utc.timestamp_millis_opt(1_700_000_000_123).unwrap(),
        };
        let rest = serde_json::to_string(&EventResponse::from(event.clone())).unwrap();
        assert_eq!(rest, event.to_client_json().unwrap());
        let value: Value = serde_json::from_str(&rest).unwrap();
        let mut members: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        members.sort();
        assert_eq!(members, ["created_at", "data", "kind", "run_id", "seq"]);
        assert_eq!(value["kind"], "step.delta");
    }
}
