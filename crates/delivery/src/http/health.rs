//! Liveness (`/healthz`) and readiness (`/readyz`).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::startup::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz)).route("/readyz", web::get().to(readyz));
}

/// Liveness: the process serves requests; no dependency is consulted.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

#[derive(Debug, Serialize)]
struct Check {
    status: &'static str,
    latency_ms: u64,
}

#[derive(Debug, Serialize)]
struct Readiness {
    status: &'static str,
    checks: BTreeMap<String, Check>,
}

/// Readiness: every dependency answers in time; 503 with the failing components otherwise.
/// Causes are logged, never sent: the body only says which component is down.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let records = state.health.check_all().await;
    let ready = records.iter().all(|r| r.up);
    let checks = records
        .into_iter()
        .map(|r| (r.component, Check { status: if r.up { "up" } else { "down" }, latency_ms: r.latency_ms }))
        .collect();
    let body = Readiness { status: if ready { "ready" } else { "not_ready" }, checks };
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}
