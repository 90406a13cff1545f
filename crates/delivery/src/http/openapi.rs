//! The OpenAPI 3.1 document served at `/openapi.json`, browsable with Swagger UI at `/docs`
//! (vendored: it works offline).
//!
//! Handlers carry their own `#[utoipa::path]`; [`StandardResponses`] adds what every
//! operation shares (the bearer scheme, 401 with its challenge, 500, `X-Request-Id`), so
//! the per-route annotations only list what is particular to them. The API test
//! `every_route_is_in_the_openapi_document` fails when a route of [`super::ROUTES`] is
//! missing from the document.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi, PartialSchema as _, ToSchema};

use super::{audit, health, knowledge, run_details, runs, sessions, system, usage};

/// An RFC 9457 problem: every error answer of the API (`application/problem+json`).
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "documentation schema; the server writes error.rs's ProblemBody")]
pub struct Problem {
    /// `https://sba.dev/problems/<code with dashes>`.
    #[schema(example = "https://sba.dev/problems/token-expired")]
    r#type: String,
    /// The HTTP reason phrase.
    #[schema(example = "Unauthorized")]
    title: String,
    #[schema(example = 401)]
    status: u16,
    /// A human-readable explanation; never internal details.
    detail: String,
    /// Machine-readable: `token_missing`, `token_expired`, `token_invalid`, `tenant_missing`,
    /// `tenant_suspended`, `tenant_unknown`, `tenant_directory_unavailable`, `forbidden`, `not_found`, `method_not_allowed`, `invalid_request`, `invalid_json`,
    /// `validation_failed`, `payload_too_large`, `unsupported_media_type`,
    /// `idempotency_conflict`, `idempotency_in_progress`, `invalid_transition`,
    /// `origin_not_allowed`, `rate_limited`, `rate_limiter_unavailable`, `internal_error`.
    #[schema(example = "token_expired")]
    code: String,
    /// The request's `X-Request-Id`.
    request_id: Option<String>,
    /// One entry per rejected field (`validation_failed` only).
    errors: Option<Vec<super::error::FieldError>>,
    /// When a retry can succeed (`rate_limited`, `rate_limiter_unavailable`).
    retry_after_ms: Option<u64>,
}

/// Why a run or step failed.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "documentation schema of sba_domain::RunError")]
pub struct ErrorDetail {
    #[schema(example = "tool_timeout")]
    code: String,
    message: String,
}

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "SBA agent API",
        description = "Multi-tenant AI-agent runs: start, list and cancel runs, read their steps, \
                       tool calls and events, usage and audit trails. Every `/v1` route needs an \
                       `Authorization: Bearer <JWT>` naming a tenant; a resource of another \
                       tenant answers 404 exactly like a missing one.",
        license(name = "Apache-2.0"),
    ),
    paths(
        health::healthz,
        health::readyz,
        super::metrics::metrics,
        runs::create_run,
        runs::list_runs,
        runs::get_run,
        runs::cancel_run,
        run_details::list_steps,
        run_details::list_tool_calls,
        run_details::list_events,
        sessions::create_session,
        sessions::list_sessions,
        sessions::get_session,
        sessions::update_session,
        knowledge::create_document,
        knowledge::get_document,
        knowledge::search,
        super::me::me,
        usage::usage,
        audit::list_audit_logs,
        system::system_health,
    ),
    components(schemas(Problem, ErrorDetail, super::error::FieldError)),
    modifiers(&StandardResponses),
    tags(
        (name = "auth", description = "The caller behind a token"),
        (name = "runs", description = "Agent runs and what happened inside them"),
        (name = "sessions", description = "Conversations that group a tenant's runs"),
        (name = "knowledge", description = "Documents with embeddings, and similarity search over them"),
        (name = "usage", description = "Token and cost aggregates of the caller's tenant"),
        (name = "audit", description = "The tenant's audit trail (tenant admins)"),
        (name = "system", description = "Liveness, readiness and recorded health"),
    ),
)]
pub struct ApiDoc;

/// The bearer scheme, and the responses and headers every operation shares.
#[derive(Debug)]
struct StandardResponses;

const PROBLEM_JSON: &str = "application/problem+json";

fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build())
        .build()
}

fn string_header(description: &str) -> RefOr<utoipa::openapi::header::Header> {
    RefOr::T(HeaderBuilder::new().schema(Some(String::schema())).description(Some(description)).build())
}

impl Modify for StandardResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
        let mut unauthorized = problem_response(
            "The bearer token is missing (`token_missing`), expired (`token_expired`), invalid \
             (`token_invalid`) or names no tenant (`tenant_missing`).",
        );
        unauthorized.headers.insert(
            "WWW-Authenticate".to_owned(),
            string_header("`Bearer`, with `error=\"invalid_token\"` when a token was sent."),
        );
        components.responses.insert("Unauthorized".to_owned(), RefOr::T(unauthorized));
        let mut rate_limited = problem_response(
            "`rate_limited`: the quota of this tenant, IP and route is used up. The body carries \
             `retry_after_ms`.",
        );
        rate_limited.headers.insert(
            "Retry-After".to_owned(),
            string_header("Whole seconds (at least 1) after which a retry can succeed."),
        );
        add_rate_limit_headers(&mut rate_limited);
        components.responses.insert("RateLimited".to_owned(), RefOr::T(rate_limited));
        components.responses.insert(
            "TenantRefused".to_owned(),
            RefOr::T(problem_response(
                "The caller's tenant is suspended (`tenant_suspended`) or unknown to the tenant \
                 directory (`tenant_unknown`); every route answers so.",
            )),
        );
        let mut unavailable = problem_response(
            "`tenant_directory_unavailable`: the caller's tenant cannot be checked right now, or \
             `rate_limiter_unavailable`. The body carries `retry_after_ms`.",
        );
        unavailable.headers.insert(
            "Retry-After".to_owned(),
            string_header("Whole seconds after which a retry can succeed (rate limiter only)."),
        );
        components.responses.insert("Unavailable".to_owned(), RefOr::T(unavailable));
        components.responses.insert(
            "InternalError".to_owned(),
            RefOr::T(problem_response("The server failed (`internal_error`).")),
        );

        for item in openapi.paths.paths.values_mut() {
            let operations =
                [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let responses = &mut operation.responses.responses;
                if secured {
                    responses
                        .entry("401".to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name("Unauthorized")));
                    responses
                        .entry("403".to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name("TenantRefused")));
                    responses
                        .entry("429".to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name("RateLimited")));
                    responses
                        .entry("503".to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name("Unavailable")));
                }
                responses
                    .entry("500".to_owned())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name("InternalError")));
                for response in responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.entry("X-Request-Id".to_owned()).or_insert_with(|| {
                            string_header("The request's id: the client's, when well formed, or a new one.")
                        });
                        if secured {
                            add_rate_limit_headers(response);
                        }
                    }
                }
            }
        }
    }
}

/// `RateLimit-Policy` and `RateLimit` (IETF httpapi draft -11), on every limited answer.
fn add_rate_limit_headers(response: &mut Response) {
    response.headers.entry("RateLimit-Policy".to_owned()).or_insert_with(|| {
        string_header(
            "The quota: `\"<policy>\";q=<requests>;w=<window seconds>`, e.g. `\"default\";q=600;w=60`.",
        )
    });
    response.headers.entry("RateLimit".to_owned()).or_insert_with(|| {
        string_header(
            "What is left: `\"<policy>\";r=<remaining>;t=<seconds until the quota is whole>`, \
             e.g. `\"default\";r=42;t=17`.",
        )
    });
}

/// The document, built once per call (cheap; served from memory by Swagger UI's service).
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
