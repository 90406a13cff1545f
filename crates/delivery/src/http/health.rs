//! Liveness (`/healthz`) and readiness (`/readyz`).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::AppState;

/// Liveness: the process serves requests; no dependency is consulted.
#[utoipa::path(get, path = "/healthz", tag = "system", operation_id = "healthz",
    responses((status = 200, description = "The process is alive.", body = Liveness)))]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { status: "ok" })
}

/// `{"status":"ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Liveness {
    #[schema(example = "ok")]
    status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
struct Check {
    /// `up` or `down`.
    status: &'static str,
    latency_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    checks: BTreeMap<String, Check>,
}

/// Readiness: every dependency answers in time; 503 with the failing components otherwise.
/// Causes are logged, never sent: the body only says which component is down. The answer
/// is reused for about a second (one round of checks at a time, whatever the call rate).
#[utoipa::path(get, path = "/readyz", tag = "system", operation_id = "readyz",
    responses(
        (status = 200, description = "Every dependency answered in time.", body = Readiness),
        (status = 503, description = "A dependency is down; `checks` says which.", body = Readiness),
    ))]
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let records = state.health.readiness().await;
    let ready = records.iter().all(|r| r.up);
    // The last answer, for dashboards and alerts (components are a fixed set).
    metrics::gauge!("sba_ready").set(f64::from(u8::from(ready)));
    for record in records.iter() {
        metrics::gauge!("sba_dependency_up", "component" => record.component.clone())
            .set(f64::from(u8::from(record.up)));
    }
    let checks = records
        .iter()
        .map(|r| {
            (
                r.component.clone(),
                Check { status: if r.up { "up" } else { "down" }, latency_ms: r.latency_ms },
            )
        })
        .collect();
    let body = Readiness { status: if ready { "ready" } else { "not_ready" }, checks };
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}
