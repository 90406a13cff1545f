//! [`ApiError`]: every failure as an RFC 9457 problem+json body with a machine-readable
//! `code` and the `request_id`, and nothing internal in it.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError, error, web};
use sba_application::authorization::Denied;
use sba_application::error::{RecordError, RestrictedReadError};
use sba_application::ports::TokenError;
use sba_application::runs::RunServiceError;
use serde::Serialize;
use utoipa::ToSchema;

use super::request_id;

/// Every machine-readable `code` of a problem, with its HTTP status and title: the one list
/// the server answers from and the OpenAPI document enumerates (ADR 0009).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    TokenMissing,
    TokenExpired,
    TokenInvalid,
    TenantMissing,
    TenantSuspended,
    TenantUnknown,
    TenantDirectoryUnavailable,
    Forbidden,
    OriginNotAllowed,
    NotFound,
    MethodNotAllowed,
    InvalidRequest,
    InvalidJson,
    ValidationFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    IdempotencyConflict,
    IdempotencyInProgress,
    InvalidTransition,
    RateLimited,
    RateLimiterUnavailable,
    /// Too many requests of a bounded kind (document uploads) are being served at once.
    ServerBusy,
    /// The run has ended: no event may be added to it (the problem's `run_status` says how
    /// it ended). An agent stops on this answer.
    RunTerminal,
    /// The event store (Redis) cannot be reached; the batch may have been recorded, so retry
    /// it as it was: accepted ids are then answered as duplicates.
    EventStoreUnavailable,
    InternalError,
}

impl ProblemCode {
    /// Every code, in the order of the enum.
    pub const ALL: [Self; 25] = [
        Self::TokenMissing,
        Self::TokenExpired,
        Self::TokenInvalid,
        Self::TenantMissing,
        Self::TenantSuspended,
        Self::TenantUnknown,
        Self::TenantDirectoryUnavailable,
        Self::Forbidden,
        Self::OriginNotAllowed,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::InvalidRequest,
        Self::InvalidJson,
        Self::ValidationFailed,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::IdempotencyConflict,
        Self::IdempotencyInProgress,
        Self::InvalidTransition,
        Self::RateLimited,
        Self::RateLimiterUnavailable,
        Self::ServerBusy,
        Self::RunTerminal,
        Self::EventStoreUnavailable,
        Self::InternalError,
    ];

    /// The `code` member, as serialised.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TokenMissing => "token_missing",
            Self::TokenExpired => "token_expired",
            Self::TokenInvalid => "token_invalid",
            Self::TenantMissing => "tenant_missing",
            Self::TenantSuspended => "tenant_suspended",
            Self::TenantUnknown => "tenant_unknown",
            Self::TenantDirectoryUnavailable => "tenant_directory_unavailable",
            Self::Forbidden => "forbidden",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidJson => "invalid_json",
            Self::ValidationFailed => "validation_failed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::IdempotencyInProgress => "idempotency_in_progress",
            Self::InvalidTransition => "invalid_transition",
            Self::RateLimited => "rate_limited",
            Self::RateLimiterUnavailable => "rate_limiter_unavailable",
            Self::ServerBusy => "server_busy",
            Self::RunTerminal => "run_terminal",
            Self::EventStoreUnavailable => "event_store_unavailable",
            Self::InternalError => "internal_error",
        }
    }

    /// The HTTP status every problem with this code answers with.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::TokenMissing | Self::TokenExpired | Self::TokenInvalid | Self::TenantMissing => {
                StatusCode::UNAUTHORIZED
            }
            Self::TenantSuspended | Self::TenantUnknown | Self::Forbidden | Self::OriginNotAllowed => {
                StatusCode::FORBIDDEN
            }
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidRequest | Self::InvalidJson => StatusCode::BAD_REQUEST,
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::IdempotencyConflict
            | Self::IdempotencyInProgress
            | Self::InvalidTransition
            | Self::RunTerminal => StatusCode::CONFLICT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::TenantDirectoryUnavailable
            | Self::RateLimiterUnavailable
            | Self::ServerBusy
            | Self::EventStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem's `title`: the reason phrase of its status.
    pub fn title(self) -> &'static str {
        self.status().canonical_reason().unwrap_or("Error")
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field that failed validation, as shown in the problem's `errors` member.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem: every error answer of the API (`application/problem+json`). This
/// is the body the server writes and the schema the OpenAPI document shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `https://sba.dev/problems/<code with dashes>`.
    #[schema(example = "https://sba.dev/problems/token-expired")]
    r#type: String,
    /// The HTTP reason phrase.
    #[schema(value_type = String, example = "Unauthorized")]
    title: &'static str,
    #[schema(example = 401)]
    status: u16,
    /// A human-readable explanation; never internal details.
    detail: String,
    /// Machine-readable; each code always comes with the same status.
    code: ProblemCode,
    /// The request's `X-Request-Id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    /// One entry per rejected field (`validation_failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<FieldError>>,
    /// When a retry can succeed (`rate_limited`, `rate_limiter_unavailable`,
    /// `tenant_directory_unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    /// The position (from 0) of the event that rejected an ingest batch
    /// (`validation_failed` on `POST /v1/runs/{run_id}/events`).
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    /// How the run ended (`run_terminal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "cancelled")]
    run_status: Option<&'static str>,
}

/// An error answered to the client. Its problem body gets the request id of the request
/// being served when it is rendered (see [`request_id::current`]), so no handler attaches
/// it.
#[derive(Debug)]
pub struct ApiError {
    code: ProblemCode,
    detail: String,
    errors: Vec<FieldError>,
    retry_after_ms: Option<u64>,
    index: Option<usize>,
    run_status: Option<&'static str>,
    source: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_ms: None,
            index: None,
            run_status: None,
            source: None,
        }
    }

    pub fn not_found() -> Self {
        Self::new(ProblemCode::NotFound, "The requested resource does not exist.")
    }

    /// 403 `forbidden`: the permission matrix refuses the verified caller this action; the
    /// detail says who may (never anything about the record).
    pub fn forbidden(denied: Denied) -> Self {
        Self::new(ProblemCode::Forbidden, format!("Not allowed: {}.", denied.reason()))
    }

    /// 400 `invalid_request`: a query string, header or path that cannot be used.
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(ProblemCode::InvalidRequest, detail)
    }

    /// 422 with one entry per rejected field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut error = Self::new(ProblemCode::ValidationFailed, "The request body has invalid fields.");
        error.errors = errors;
        error
    }

    /// A 500 that logs `source` once and tells the client nothing about it.
    pub fn internal(source: anyhow::Error) -> Self {
        let mut error = Self::new(ProblemCode::InternalError, "The server failed to handle the request.");
        error.source = Some(source);
        error
    }

    /// When a retry can succeed (429, 503).
    #[must_use]
    pub fn with_retry_after_ms(mut self, retry_after_ms: u64) -> Self {
        self.retry_after_ms = Some(retry_after_ms);
        self
    }

    /// 422 for an ingest batch refused because of its event at `index`.
    pub fn invalid_event(index: usize, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut error = Self::new(
            ProblemCode::ValidationFailed,
            format!(
                "Event {index} of the batch is invalid ({field}: {message}); nothing of the batch was stored."
            ),
        );
        error.errors = vec![FieldError { field: format!("events[{index}].{field}"), message }];
        error.index = Some(index);
        error
    }

    /// 503 `event_store_unavailable`: the change may have been recorded; retrying it is safe.
    pub fn event_store_unavailable(source: &anyhow::Error) -> Self {
        tracing::warn!(error = format!("{source:#}"), "the event store is unavailable");
        Self::new(
            ProblemCode::EventStoreUnavailable,
            "The event store is unavailable; retry the same request (what was accepted is answered as before).",
        )
        .with_retry_after_ms(1000)
    }

    /// 409 `run_terminal`: the run ended as `status`.
    pub fn run_terminal(status: sba_domain::RunStatus) -> Self {
        let mut error = Self::new(
            ProblemCode::RunTerminal,
            format!("The run has ended ({status}); no event can be added to it."),
        );
        error.run_status = Some(status.as_str());
        error
    }

    pub fn code(&self) -> ProblemCode {
        self.code
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The problem body, for the request `request_id`.
    fn problem(&self, request_id: Option<String>) -> Problem {
        Problem {
            r#type: format!("https://sba.dev/problems/{}", self.code.as_str().replace('_', "-")),
            title: self.code.title(),
            status: self.code.status().as_u16(),
            detail: self.detail.clone(),
            code: self.code,
            request_id,
            errors: (!self.errors.is_empty()).then(|| self.errors.clone()),
            retry_after_ms: self.retry_after_ms,
            index: self.index,
            run_status: self.run_status,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status().as_u16(), self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = request_id::current();
        if let Some(source) = &self.source {
            tracing::error!(
                request_id = request_id::current_own().as_deref(),
                error = format!("{source:#}"),
                "request failed"
            );
        }
        let mut response = HttpResponse::build(self.status());
        response.content_type("application/problem+json");
        if let Some(ms) = self.retry_after_ms {
            // Whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3).
            response.insert_header((header::RETRY_AFTER, ms.div_ceil(1000).max(1)));
        }
        if self.status() == StatusCode::UNAUTHORIZED {
            let challenge = if self.code == ProblemCode::TokenMissing {
                "Bearer".to_owned()
            } else {
                format!("Bearer error=\"invalid_token\", error_description=\"{}\"", self.code)
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
        }
        response.json(self.problem(request_id))
    }
}

impl From<RunServiceError> for ApiError {
    fn from(error: RunServiceError) -> Self {
        match error {
            RunServiceError::NotFound => Self::not_found(),
            RunServiceError::Forbidden(denied) => Self::forbidden(denied),
            RunServiceError::InvalidTransition(refused) => {
                Self::new(ProblemCode::InvalidTransition, refused.to_string())
            }
            RunServiceError::Unavailable(source) => Self::event_store_unavailable(&source),
            RunServiceError::Unexpected(source) => Self::internal(source),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        let code = match error {
            TokenError::Expired => ProblemCode::TokenExpired,
            TokenError::TenantMissing => ProblemCode::TenantMissing,
            TokenError::Invalid => ProblemCode::TokenInvalid,
        };
        Self::new(code, error.to_string())
    }
}

/// Unknown routes answer 404 problem+json.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

/// Known routes called with another method answer 405 problem+json.
pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ProblemCode::MethodNotAllowed, "This method is not allowed on this route."))
}

/// JSON bodies: size limit, content type, and readable errors (unknown fields included).
/// Registered for the whole API, and per route where a route takes larger bodies.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default().limit(limit).error_handler(|err, _| {
        let api = match &err {
            error::JsonPayloadError::OverflowKnownLength { .. }
            | error::JsonPayloadError::Overflow { .. } => {
                ApiError::new(ProblemCode::PayloadTooLarge, "The request body exceeds the size limit.")
            }
            error::JsonPayloadError::ContentType => {
                ApiError::new(ProblemCode::UnsupportedMediaType, "The request body must be application/json.")
            }
            error::JsonPayloadError::Deserialize(serde) => {
                ApiError::new(ProblemCode::InvalidJson, format!("The request body is not valid: {serde}"))
            }
            _ => ApiError::new(ProblemCode::InvalidJson, "The request body could not be read."),
        };
        api.into()
    })
}

/// Path parameters that do not parse: the resource cannot exist, so 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| ApiError::not_found().into())
}

/// Query strings that do not parse: 400 `invalid_request`.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| {
        ApiError::invalid_request(format!("The query string is not valid: {err}")).into()
    })
}

impl From<RecordError> for ApiError {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::NotFound => Self::not_found(),
            RecordError::Forbidden(denied) => Self::forbidden(denied),
            RecordError::Unexpected(source) => Self::internal(source),
        }
    }
}

impl From<RestrictedReadError> for ApiError {
    fn from(error: RestrictedReadError) -> Self {
        match error {
            RestrictedReadError::Forbidden(denied) => Self::forbidden(denied),
            RestrictedReadError::Unexpected(source) => Self::internal(source),
        }
    }
}

/// Collects the rejected fields of a request body, to report them all at once.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// The value of `result`, or `None` after recording why `field` was rejected.
    pub fn check<T>(&mut self, field: &str, result: Result<T, sba_domain::ValidationError>) -> Option<T> {
        result.map_err(|error| self.reject(field, error.message)).ok()
    }

    /// As [`Self::check`], under the field the domain's error names.
    pub fn check_domain<T>(&mut self, result: Result<T, sba_domain::ValidationError>) -> Option<T> {
        result.map_err(|error| self.reject(error.field, error.message)).ok()
    }

    pub fn reject(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError { field: field.to_owned(), message: message.into() });
    }

    /// `Ok(value)` when nothing was rejected and the value was built, else 422 with every
    /// rejected field.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ApiError> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(ApiError::validation(self.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_carries_its_codes_status_title_and_type() {
        let problem =
            serde_json::to_value(ApiError::new(ProblemCode::IdempotencyInProgress, "wait").problem(None))
                .unwrap();
        assert_eq!(
            problem,
            serde_json::json!({
                "type": "https://sba.dev/problems/idempotency-in-progress",
                "title": "Conflict",
                "status": 409,
                "detail": "wait",
                "code": "idempotency_in_progress",
            })
        );
    }

    #[test]
    fn every_code_has_an_error_status_and_its_reason_phrase_as_title() {
        for code in ProblemCode::ALL {
            assert!(code.status().is_client_error() || code.status().is_server_error(), "{code}");
            assert_eq!(Some(code.title()), code.status().canonical_reason(), "{code}");
        }
    }
}
