//! The HTTP API: routes, request ids, CORS, authentication, problem+json errors and the
//! OpenAPI document.

mod audit;
mod auth;
pub mod client_addr;
mod cors;
mod error;
mod health;
mod ingest;
mod knowledge;
mod lists;
mod me;
pub mod metrics;
pub mod openapi;
pub mod playground;
mod ratelimit;
mod request_id;
mod run_details;
mod runs;
mod sessions;
mod state;
pub mod stream;
mod system;
mod usage;

use std::rc::Rc;

use actix_web::middleware::from_fn;
use actix_web::{HttpMessage as _, HttpRequest, web};
use utoipa_swagger_ui::SwaggerUi;

pub use error::{ApiError, ProblemCode};

pub use state::AppState;

/// Request size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
}

/// The route template a request matched (`/v1/runs/{run_id}`), kept in its extensions.
#[derive(Clone)]
struct RouteTemplate(Option<Rc<str>>);

/// The route template of `req`, or `None` when no route matched. Matched once per request
/// (the rate limiter keys by it, the access log and metrics label by it).
fn route_template(req: &HttpRequest) -> Option<Rc<str>> {
    if let Some(RouteTemplate(known)) = req.extensions().get::<RouteTemplate>() {
        return known.clone();
    }
    let template: Option<Rc<str>> = req.match_pattern().map(Rc::from);
    req.extensions_mut().insert(RouteTemplate(template.clone()));
    template
}

/// Declares the route table once: [`ROUTES`] (which the OpenAPI test checks against the
/// document) and the actix registration, where every path also answers other methods with
/// 405 problem+json. A path with `(body_limit = n)` reads JSON bodies of up to `n` bytes
/// (instead of the configured limit), with the same problems as every other route.
macro_rules! api_routes {
    ($($path:literal $((body_limit = $limit:expr))? => { $($method:ident: $handler:path),+ $(,)? }),+ $(,)?) => {
        /// Every API route as `(method, path template)`.
        pub const ROUTES: &[(&str, &str)] = &[$($((stringify!($method), $path),)+)+];

        fn register_routes(cfg: &mut web::ServiceConfig) {
            $(
                cfg.service(
                    web::resource($path)
                        $(.app_data(error::json_config($limit)))?
                        $(.route(web::$method().to($handler)))+
                        .default_service(web::to(error::method_not_allowed)),
                );
            )+
        }
    };
}

api_routes! {
    "/healthz" => { get: health::healthz },
    "/readyz" => { get: health::readyz },
    "/metrics" => { get: metrics::metrics },
    "/v1/runs" => { post: runs::create_run, get: runs::list_runs },
    "/v1/runs/{run_id}" => { get: runs::get_run },
    "/v1/runs/{run_id}/cancel" => { post: runs::cancel_run },
    "/v1/runs/{run_id}/steps" => { get: run_details::list_steps },
    "/v1/runs/{run_id}/tool-calls" => { get: run_details::list_tool_calls },
    "/v1/runs/{run_id}/events" (body_limit = ingest::BATCH_BODY_LIMIT) => {
        get: run_details::list_events,
        post: ingest::ingest_events,
    },
    "/v1/sessions" => { post: sessions::create_session, get: sessions::list_sessions },
    "/v1/sessions/{session_id}" => { get: sessions::get_session, patch: sessions::update_session },
    "/v1/knowledge/documents" (body_limit = knowledge::DOCUMENT_BODY_LIMIT) => {
        post: knowledge::create_document,
    },
    "/v1/knowledge/documents/{document_id}" => { get: knowledge::get_document },
    "/v1/knowledge/search" => { post: knowledge::search },
    "/v1/me" => { get: me::me },
    "/v1/usage" => { get: usage::usage },
    "/v1/audit-logs" => { get: audit::list_audit_logs },
    "/v1/system/health" => { get: system::system_health },
    "/v1/stream" => { get: stream::stream },
}

/// Where the operator routes (`/metrics`, `/openapi.json`, `/docs`) are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoutes {
    /// On the public port, beside the API (no `SBA_SERVER__ADMIN_PORT`).
    Public,
    /// On the admin port only ([`configure_admin`]); the public port answers 404 for them.
    Separate,
}

/// Registers every route, the shared state and the error handlers on an actix app.
pub fn configure(
    cfg: &mut web::ServiceConfig,
    state: web::Data<AppState>,
    limits: Limits,
    admin: AdminRoutes,
) {
    let pages = state.clone();
    cfg.app_data(state)
        .app_data(error::json_config(limits.max_body_bytes))
        .app_data(error::path_config())
        .app_data(error::query_config())
        .service(
            web::scope("")
                // The last `wrap` runs first: request id, CORS, authentication, rate limit,
                // then the routes.
                .wrap(from_fn(ratelimit::middleware))
                .wrap(from_fn(auth::middleware))
                .wrap(from_fn(cors::middleware))
                .wrap(from_fn(request_id::middleware))
                .configure(|cfg| match admin {
                    // Registered ahead of the route table, so it wins over its `/metrics`.
                    AdminRoutes::Separate => {
                        cfg.service(web::resource("/metrics").to(error::not_found));
                    }
                    AdminRoutes::Public => admin_routes(cfg),
                })
                .configure(register_routes)
                .configure(|cfg| playground::configure(cfg, &pages))
                .default_service(web::to(error::not_found)),
        );
}

/// The admin port's app: `/metrics`, `/openapi.json` and `/docs` only, without
/// authentication, CORS or rate limits (it must not be reachable from outside); anything
/// else is 404 problem+json.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/metrics").get(metrics::metrics).default_service(web::to(error::method_not_allowed)),
    );
    admin_routes(cfg);
    cfg.default_service(web::to(error::not_found));
}

/// `/docs` (Swagger UI) and `/openapi.json`.
fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::redirect("/docs", "/docs/"))
        .service(web::resource("/openapi.json").guard(actix_web::guard::Get()).to(openapi::serve_document))
        .service(SwaggerUi::new("/docs/{_:.*}").config(utoipa_swagger_ui::Config::from("/openapi.json")));
}
