//! The OpenAPI 3.1 document served at `/openapi.json`, browsable with Swagger UI at `/docs`
//! (vendored: it works offline).
//!
//! Handlers carry their own `#[utoipa::path]`; [`StandardResponses`] adds what every
//! operation shares (the bearer scheme, 401 with its challenge, 413 and 415 for a JSON
//! body, 500, `X-Request-Id`), so the per-route annotations only list what is particular
//! to them. The problem schema is the body the server writes ([`super::error::Problem`]),
//! its `code` the enumeration of every [`super::error::ProblemCode`]. The API test
//! `every_route_is_in_the_openapi_document` fails when a route of [`super::ROUTES`] is
//! missing from the document.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::header::ContentType;
use actix_web::web::Bytes;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi, PartialSchema as _, ToSchema};

use super::{audit, health, knowledge, run_details, runs, sessions, system, usage};

/// Why a run or step failed.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "documentation schema of sba_domain::RunError")]
pub struct ErrorDetail {
    #[schema(example = "tool_timeout")]
    code: String,
    message: String,
}

/// Free-form metadata in a request body (`Metadata` in the domain): an object of at most 64
/// keys of 1–64 characters, or `null` (none).
pub(super) fn metadata_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .max_properties(Some(sba_domain::Metadata::MAX_KEYS))
        // JSON Schema's `propertyNames` (utoipa has no builder for it).
        .extensions(Some(Extensions::from_iter([(
            "propertyNames",
            serde_json::json!({"minLength": 1, "maxLength": sba_domain::Metadata::MAX_KEY_LEN}),
        )])))
        .build()
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
        super::ingest::ingest_events,
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
        super::stream::stream,
    ),
    components(schemas(
        super::error::Problem,
        super::error::ProblemCode,
        ErrorDetail,
        super::error::FieldError,
        super::ingest::IngestEvent
    )),
    modifiers(&StandardResponses),
    tags(
        (name = "auth", description = "The caller behind a token"),
        (name = "runs", description = "Agent runs and what happened inside them"),
        (name = "sessions", description = "Conversations that group a tenant's runs"),
        (name = "knowledge", description = "Documents with embeddings, and similarity search over them"),
        (name = "usage", description = "Token and cost aggregates of the caller's tenant"),
        (name = "audit", description = "The tenant's audit trail (tenant admins)"),
        (name = "system", description = "Liveness, readiness and recorded health"),
        (name = "stream", description = "The WebSocket stream of run events"),
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
        components.responses.insert(
            "PayloadTooLarge".to_owned(),
            RefOr::T(problem_response("`payload_too_large`: the request body exceeds the size limit.")),
        );
        components.responses.insert(
            "UnsupportedMediaType".to_owned(),
            RefOr::T(problem_response(
                "`unsupported_media_type`: the request body must be `application/json`.",
            )),
        );

        for item in openapi.paths.paths.values_mut() {
            let operations =
                [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                if has_body {
                    responses
                        .entry("413".to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name("PayloadTooLarge")));
                    responses
                        .entry("415".to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name("UnsupportedMediaType")));
                }
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

/// The document, built once per call.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served, built once per process: each application instance (two per
/// server worker) holding its own copy cost about 1.5 MB.
static DOCUMENT_JSON: LazyLock<Bytes> =
    LazyLock::new(|| serde_json::to_vec(&document()).map(Bytes::from).unwrap_or_default());

/// `GET /openapi.json`.
pub async fn serve_document() -> HttpResponse {
    HttpResponse::Ok().content_type(ContentType::json()).body(DOCUMENT_JSON.clone())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::document;
    use crate::http::ProblemCode;

    /// The values the document allows for the problem's `code`.
    fn documented_codes() -> Vec<String> {
        let doc = serde_json::to_value(document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let code = &schemas["Problem"]["properties"]["code"];
        let target =
            code["$ref"].as_str().map_or(code, |r| &schemas[r.trim_start_matches("#/components/schemas/")]);
        target["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("no enum in {target}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn every_problem_code_is_in_the_error_schema_and_nothing_else() {
        let documented = documented_codes();
        for code in ProblemCode::ALL {
            assert!(
                documented.contains(&code.as_str().to_owned()),
                "{code} is not documented: {documented:?}"
            );
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                Value::from(code.as_str()),
                "{code} serialises as documented"
            );
        }
        assert_eq!(documented.len(), ProblemCode::ALL.len(), "{documented:?}");
        assert!(
            documented.iter().all(|code| code.contains('_') || code == "forbidden"),
            "snake case: {documented:?}"
        );
    }

    #[test]
    fn the_problem_schema_is_required_where_the_server_always_writes() {
        let doc = serde_json::to_value(document()).unwrap();
        let required: Vec<&str> = doc["components"]["schemas"]["Problem"]["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for field in ["type", "title", "status", "detail", "code"] {
            assert!(required.contains(&field), "{field} is always written: {required:?}");
        }
        for field in ["request_id", "errors", "retry_after_ms"] {
            assert!(!required.contains(&field), "{field} is optional: {required:?}");
        }
    }
}
