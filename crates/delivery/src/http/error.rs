//! [`ApiError`]: every failure as an RFC 9457 problem+json body with a machine-readable
//! `code` and the `request_id`, and nothing internal in it.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, ResponseError, error, web};
use sba_application::ports::TokenError;
use sba_application::runs::RunServiceError;
use serde::Serialize;

use super::request_id::RequestId;

/// A field that failed validation, as shown in the problem's `errors` member.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    request_id: Option<String>,
    retry_after_ms: Option<u64>,
    source: Option<anyhow::Error>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    r#type: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            request_id: None,
            retry_after_ms: None,
            source: None,
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "The requested resource does not exist.")
    }

    /// 422 with one entry per rejected field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut error = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "The request body has invalid fields.",
        );
        error.errors = errors;
        error
    }

    /// A 500 that logs `source` once and tells the client nothing about it.
    pub fn internal(source: anyhow::Error) -> Self {
        let mut error = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "The server failed to handle the request.",
        );
        error.source = Some(source);
        error
    }

    /// When a retry can succeed (429, 503).
    #[must_use]
    pub fn with_retry_after_ms(mut self, retry_after_ms: u64) -> Self {
        self.retry_after_ms = Some(retry_after_ms);
        self
    }

    #[must_use]
    pub fn with_request_id(mut self, request_id: &str) -> Self {
        self.request_id = Some(request_id.to_owned());
        self
    }

    /// Attaches the request id of `req`, when the request-id middleware assigned one.
    #[must_use]
    pub fn for_request(self, req: &HttpRequest) -> Self {
        match req.extensions().get::<RequestId>() {
            Some(id) => self.with_request_id(id.as_str()),
            None => self,
        }
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(source) = &self.source {
            tracing::error!(
                request_id = self.request_id.as_deref(),
                error = format!("{source:#}"),
                "request failed"
            );
        }
        let body = ProblemBody {
            r#type: format!("https://sba.dev/problems/{}", self.code.replace('_', "-")),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            request_id: self.request_id.as_deref(),
            errors: &self.errors,
            retry_after_ms: self.retry_after_ms,
        };
        let mut response = HttpResponse::build(self.status);
        response.content_type("application/problem+json");
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.code == "token_missing" {
                "Bearer".to_owned()
            } else {
                format!("Bearer error=\"invalid_token\", error_description=\"{}\"", self.code)
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
        }
        response.json(body)
    }
}

impl From<RunServiceError> for ApiError {
    fn from(error: RunServiceError) -> Self {
        match error {
            RunServiceError::NotFound => Self::not_found(),
            RunServiceError::InvalidTransition(refused) => {
                Self::new(StatusCode::CONFLICT, "invalid_transition", refused.to_string())
            }
            RunServiceError::Unexpected(source) => Self::internal(source),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        let code = match error {
            TokenError::Expired => "token_expired",
            TokenError::TenantMissing => "tenant_missing",
            TokenError::Invalid => "token_invalid",
        };
        Self::new(StatusCode::UNAUTHORIZED, code, error.to_string())
    }
}

/// Unknown routes answer 404 problem+json.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found().for_request(&req))
}

/// Known routes called with another method answer 405 problem+json.
pub async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This method is not allowed on this route.",
    )
    .for_request(&req))
}

/// JSON bodies: size limit, content type, and readable errors (unknown fields included).
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default().limit(limit).error_handler(|err, req| {
        let api = match &err {
            error::JsonPayloadError::OverflowKnownLength { .. }
            | error::JsonPayloadError::Overflow { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body exceeds the size limit.",
            ),
            error::JsonPayloadError::ContentType => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "The request body must be application/json.",
            ),
            error::JsonPayloadError::Deserialize(serde) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("The request body is not valid: {serde}"),
            ),
            _ => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "The request body could not be read.")
            }
        };
        api.for_request(req).into()
    })
}

/// Path parameters that do not parse: the resource cannot exist, so 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, req| ApiError::not_found().for_request(req).into())
}

/// Query strings that do not parse: 400 `invalid_request`.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, req| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("The query string is not valid: {err}"),
        )
        .for_request(req)
        .into()
    })
}

impl From<sba_application::sessions::SessionError> for ApiError {
    fn from(error: sba_application::sessions::SessionError) -> Self {
        match error {
            sba_application::sessions::SessionError::NotFound => Self::not_found(),
            sba_application::sessions::SessionError::Unexpected(source) => Self::internal(source),
        }
    }
}

impl From<sba_application::knowledge::KnowledgeError> for ApiError {
    fn from(error: sba_application::knowledge::KnowledgeError) -> Self {
        match error {
            sba_application::knowledge::KnowledgeError::NotFound => Self::not_found(),
            sba_application::knowledge::KnowledgeError::Unexpected(source) => Self::internal(source),
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
