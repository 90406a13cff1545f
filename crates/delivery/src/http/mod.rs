//! The HTTP API: routes, request ids, authentication and problem+json errors.

mod audit;
mod auth;
mod error;
mod health;
mod lists;
mod request_id;
mod run_details;
mod runs;
mod usage;

use actix_web::middleware::from_fn;
use actix_web::web;

pub use error::ApiError;

use crate::startup::AppState;

/// Request size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
}

/// Registers every route, the shared state and the error handlers on an actix app.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<AppState>, limits: Limits) {
    cfg.app_data(state)
        .app_data(error::json_config(limits.max_body_bytes))
        .app_data(error::path_config())
        .app_data(error::query_config())
        .service(
            web::scope("")
                .wrap(from_fn(request_id::middleware))
                .configure(health::routes)
                .service(
                    web::scope("/v1")
                        .configure(runs::routes)
                        .configure(run_details::routes)
                        .configure(audit::routes)
                        .configure(usage::routes),
                )
                .default_service(web::to(error::not_found)),
        );
}
