//! `GET /metrics`: Prometheus text format, from the process-wide `metrics` recorder. No
//! token is needed: restrict it at the network edge (docs/architecture.md, "Public contract").
//!
//! The recorder is split in two ([`SplitRecorder`]). Request series (`sba_http_*`, one per
//! route template, method class and status, registered on every request) live in a
//! Prometheus recorder that forgets a series idle for [`REQUEST_SERIES_IDLE_TIMEOUT`], so
//! whatever clients send, the series they caused do not outlive their traffic. Every other
//! metric lives in one that never forgets: those are updated through handles the code keeps
//! (limiter, cache, fallback gauges), and an idle timeout would detach a kept handle from the
//! registry for good, silencing the metric (metrics-rs/metrics#704).

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::HttpResponse;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;

/// Names of the per-request series, the ones an idle timeout may drop.
const REQUEST_SERIES_PREFIX: &str = "sba_http_";

/// How long a request series may go without a request before it leaves `/metrics` (it comes
/// back, from zero, with the next request; Prometheus reads that as a counter reset).
pub const REQUEST_SERIES_IDLE_TIMEOUT: Duration = Duration::from_mins(10);

/// The two recorders' handles: what `/metrics` renders and the upkeep folds.
#[derive(Debug, Clone)]
pub struct MetricsHandle {
    process: PrometheusHandle,
    requests: PrometheusHandle,
}

impl MetricsHandle {
    /// Every series of both recorders, in Prometheus text format (no metric name is in both).
    pub fn render(&self) -> String {
        let mut text = self.process.render();
        text.push_str(&self.requests.render());
        text
    }

    fn run_upkeep(&self) {
        self.process.run_upkeep();
        self.requests.run_upkeep();
    }
}

/// A `metrics` recorder that sends `sba_http_*` metrics to a recorder with an idle timeout
/// and everything else to one without.
#[derive(Debug)]
pub struct SplitRecorder {
    process: PrometheusRecorder,
    requests: PrometheusRecorder,
}

impl SplitRecorder {
    /// Request series are forgotten after `idle_timeout` without an update.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            process: PrometheusBuilder::new().build_recorder(),
            requests: PrometheusBuilder::new()
                .idle_timeout(MetricKindMask::ALL, Some(idle_timeout))
                .build_recorder(),
        }
    }

    pub fn handle(&self) -> MetricsHandle {
        MetricsHandle { process: self.process.handle(), requests: self.requests.handle() }
    }

    fn target(&self, name: &str) -> &PrometheusRecorder {
        if name.starts_with(REQUEST_SERIES_PREFIX) { &self.requests } else { &self.process }
    }
}

impl Recorder for SplitRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.target(key.as_str()).describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.target(key.as_str()).describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.target(key.as_str()).describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.target(key.name()).register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.target(key.name()).register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.target(key.name()).register_histogram(key, metadata)
    }
}

static RECORDER: OnceLock<Option<MetricsHandle>> = OnceLock::new();

/// Installs the split recorder once per process (several apps in one test process share
/// it) and returns its handle; `None` when another recorder was installed first.
pub fn recorder() -> Option<&'static MetricsHandle> {
    RECORDER
        .get_or_init(|| {
            let recorder = SplitRecorder::new(REQUEST_SERIES_IDLE_TIMEOUT);
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    // Which build answers, for dashboards comparing nodes during a rollout.
                    metrics::gauge!("sba_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .as_ref()
}

/// How often histograms are folded: their samples are held until then.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Folds the recorders' histogram samples every few seconds, so memory stays flat between
/// scrapes (a recorder built by hand leaves this to the caller). Runs until its runtime
/// stops.
pub async fn upkeep() {
    let Some(handle) = recorder() else { return };
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        handle.run_upkeep();
    }
}

/// Every metric of this process.
#[utoipa::path(get, path = "/metrics", tag = "system", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format.", body = String,
        content_type = "text/plain; version=0.0.4")))]
pub(super) async fn metrics() -> HttpResponse {
    let body = recorder().map(MetricsHandle::render).unwrap_or_default();
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_request_series_leave_the_output_while_idle_process_metrics_stay() {
        let idle_timeout = Duration::from_millis(50);
        let recorder = SplitRecorder::new(idle_timeout);
        let handle = recorder.handle();
        let held = metrics::with_local_recorder(&recorder, || {
            metrics::counter!("sba_http_requests_total", "method" => "other", "route" => "unmatched")
                .increment(1);
            // Kept, as the limiter and the cache keep theirs.
            let held = metrics::counter!("sba_ratelimit_redis_errors_total");
            held.increment(1);
            held
        });
        let before = handle.render();
        assert!(before.contains("sba_http_requests_total{"), "{before}");
        assert!(before.contains("sba_ratelimit_redis_errors_total 1"), "{before}");

        std::thread::sleep(idle_timeout * 3);
        let after = handle.render();
        assert!(!after.contains("sba_http_requests_total"), "an idle request series is forgotten: {after}");
        assert!(after.contains("sba_ratelimit_redis_errors_total 1"), "{after}");

        held.increment(1);
        assert!(
            handle.render().contains("sba_ratelimit_redis_errors_total 2"),
            "a kept handle still reaches the output after an idle period"
        );
    }

    #[test]
    fn a_request_series_that_keeps_being_updated_stays() {
        let idle_timeout = Duration::from_millis(200);
        let recorder = SplitRecorder::new(idle_timeout);
        let handle = recorder.handle();
        for _ in 0..6 {
            metrics::with_local_recorder(&recorder, || {
                metrics::counter!("sba_http_requests_total", "route" => "/v1/runs").increment(1);
            });
            assert!(handle.render().contains("sba_http_requests_total{route=\"/v1/runs\"}"));
            std::thread::sleep(idle_timeout / 4);
        }
    }
}
