//! Liveness (`/healthz`) and readiness (`/readyz`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use futures_util::future::join_all;
use serde::Serialize;

use crate::startup::AppState;

/// How long one readiness check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

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
    checks: BTreeMap<&'static str, Check>,
}

/// Readiness: every dependency answers within [`CHECK_TIMEOUT`]; 503 with details otherwise.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let results = join_all(state.checks.iter().map(|check| async move {
        let started = Instant::now();
        let outcome = tokio::time::timeout(CHECK_TIMEOUT, check.check()).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let up = match outcome {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(
                    component = check.component(),
                    error = format!("{error:#}"),
                    "readiness check failed"
                );
                false
            }
            Err(_) => {
                tracing::warn!(component = check.component(), "readiness check timed out");
                false
            }
        };
        (check.component(), Check { status: if up { "up" } else { "down" }, latency_ms })
    }))
    .await;
    let ready = results.iter().all(|(_, check)| check.status == "up");
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks: results.into_iter().collect(),
    };
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}
