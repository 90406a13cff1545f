//! `POST /v1/runs/{run_id}/events`: an agent reports what its run does (ADR 0017).

use actix_web::{HttpResponse, web};
use sba_application::events::{IngestError, IngestReceipt, MAX_BATCH_EVENTS, RawEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Authenticated;
use super::error::{ApiError, FieldError, Problem};
use super::runs::parse_run_id;
use crate::http::AppState;

/// The largest ingest body (its route's own `JsonConfig`): 1 MiB.
pub const BATCH_BODY_LIMIT: usize = 1024 * 1024;

/// Body of `POST /v1/runs/{run_id}/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest {
    /// 1 to 500 events, in the order they happened. Each is an object
    /// `{"id": "<producer event id>", "kind": "<event kind>", "data": {...}}`: `id` is the
    /// agent's own id for the event (1–128 characters, unique within the run; a repeated id
    /// is a duplicate), `kind` one of the event kinds other than `run.created` and
    /// `run.cancelled` (written by the server), `data` the kind's data as in the event
    /// schema (`{}` when omitted).
    #[schema(value_type = Vec<IngestEvent>, min_items = 1, max_items = 500)]
    pub events: Vec<Value>,
}

/// One event of an ingest batch (see [`IngestRequest`]).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestEvent {
    #[schema(example = "evt-0001", min_length = 1, max_length = 128)]
    pub id: String,
    #[schema(example = "step.delta")]
    pub kind: String,
    /// The kind's data, e.g. `{"step_id": "s1", "text": "Hello"}` for `step.delta`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Option<Value>,
}

/// The seq an event got.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedEvent {
    pub id: String,
    #[schema(example = 2)]
    pub seq: u64,
}

/// Answer of an accepted batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    /// Every event of the batch, in batch order, with its seq (a duplicate's original one).
    pub accepted: Vec<AcceptedEvent>,
    /// How many of them were accepted before and were not stored again.
    pub duplicates: usize,
    /// The run's status after the batch.
    #[schema(value_type = String, example = "in_progress")]
    pub run_status: &'static str,
}

impl From<IngestReceipt> for IngestResponse {
    fn from(receipt: IngestReceipt) -> Self {
        Self {
            accepted: receipt
                .events
                .into_iter()
                .map(|event| AcceptedEvent { id: event.producer_id.into(), seq: event.seq })
                .collect(),
            duplicates: receipt.duplicates,
            run_status: receipt.run_status.as_str(),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::NotFound => Self::not_found(),
            IngestError::Forbidden(denied) => Self::forbidden(denied),
            IngestError::BatchSize(size) => Self::validation(vec![FieldError {
                field: "events".into(),
                message: format!("must hold 1 to {MAX_BATCH_EVENTS} events, not {size}"),
            }]),
            IngestError::Invalid(rejection) => {
                Self::invalid_event(rejection.index, rejection.field, rejection.message)
            }
            IngestError::RunTerminal(status) => Self::run_terminal(status),
            IngestError::Unavailable(source) => Self::event_store_unavailable(&source),
            IngestError::Unexpected(source) => Self::internal(source),
        }
    }
}

/// Appends a batch of events to a run, for the run's agent (`agent` or `service` token of
/// its tenant). The server gives each new event the next `seq` of the run (1, 2, 3, … with
/// no gap, in batch order, across every node); an `id` seen before for the run is a
/// duplicate, not stored again and answered with its original `seq`. The batch is all or
/// nothing: one invalid event refuses it with 422 naming its `index`, and none of its ids
/// is remembered. A batch that changes the run's status is audited. The route counts one
/// request per batch against the rate limit.
#[utoipa::path(post, path = "/v1/runs/{run_id}/events", tag = "runs", operation_id = "ingestEvents",
    params(("run_id" = uuid::Uuid, Path, description = "The run's id")),
    request_body = IngestRequest,
    responses(
        (status = 200, description = "The batch was accepted (possibly all duplicates).", body = IngestResponse),
        (status = 400, description = "`invalid_json`: the body is not JSON or not `{\"events\": [...]}`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: only agents and services report events.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run in the caller's tenant.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`run_terminal`: the run has ended; `run_status` says how.",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body exceeds 1 MiB.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: an invalid event (its position in `index`, the field in `errors`) or not 1 to 500 events; nothing was stored.",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`event_store_unavailable`: retry the same batch.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn ingest_events(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    path: web::Path<String>,
    body: web::Json<IngestRequest>,
) -> Result<HttpResponse, ApiError> {
    let run = parse_run_id(&path)?;
    state.ingest.admit(&ctx)?;
    let events = body.into_inner().events;
    if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
        return Err(IngestError::BatchSize(events.len()).into());
    }
    let batch = events
        .into_iter()
        .enumerate()
        .map(|(index, value)| raw_event(index, value))
        .collect::<Result<Vec<_>, _>>()?;
    let receipt = state.ingest.ingest(&ctx, run, batch).await?;
    Ok(HttpResponse::Ok().json(IngestResponse::from(receipt)))
}

/// One event of the body, or 422 naming its index when it is not an object of `id`,
/// `kind` and `data`.
fn raw_event(index: usize, value: Value) -> Result<RawEvent, ApiError> {
    let event: IngestEvent = serde_json::from_value(value).map_err(|error| {
        ApiError::invalid_event(index, "event", format!("must be {{\"id\", \"kind\", \"data\"}}: {error}"))
    })?;
    Ok(RawEvent {
        id: event.id,
        kind: event.kind,
        data: event.data.unwrap_or_else(|| Value::Object(serde_json::Map::new())),
    })
}
