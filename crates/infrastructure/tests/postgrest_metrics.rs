#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! The PostgREST client's metrics, against a wiremock stand-in: every attempt is counted by
//! the table it called and its outcome, and timed, with no id, query or tenant in a label.

use metrics::{SharedString, Unit};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use sba_application::ports::TenantDirectory as _;
use sba_domain::TenantId;
use sba_infrastructure::supabase::postgrest::{PostgrestClient, PostgrestSettings};
use secrecy::SecretString;
use serde_json::json;
use url::Url;
use uuid::Uuid;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

type Snapshot = Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>;

/// Every series of `name` in a snapshot (taken once: a snapshot drains the histograms):
/// its labels and value.
fn series(snapshot: Snapshot, name: &str) -> Vec<(Vec<(String, String)>, DebugValue)> {
    let mut found: Vec<_> = snapshot
        .into_iter()
        .filter(|(key, ..)| key.key().name() == name)
        .map(|(key, _, _, value)| {
            let labels: Vec<(String, String)> =
                key.key().labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
            (labels, value)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[tokio::test]
async fn each_attempt_is_counted_by_table_and_outcome_and_timed_without_ids() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = MockServer::start().await;
    let tenant = TenantId::from_uuid(Uuid::new_v4());
    let row = json!([{"id": tenant.to_string(), "status": "active", "cors_origins": [], "plan": null,
        "rate_limit_requests": null, "rate_limit_window_secs": null}]);
    // A read that fails with 503 twice (retried), then succeeds; then one answered 400.
    Mock::given(any()).respond_with(ResponseTemplate::new(503)).up_to_n_times(2).mount(&server).await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(&row))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"code": "22P02", "message": "bad"})))
        .mount(&server)
        .await;
    let url = Url::parse(&format!("{}/rest/v1/", server.uri())).unwrap();
    let directory =
        PostgrestClient::new(PostgrestSettings::new(url, SecretString::from("service-key".to_owned())))
            .unwrap()
            .tenant_directory();

    assert!(directory.find(tenant).await.unwrap().is_some(), "found on the third attempt");
    assert!(directory.find(tenant).await.is_err(), "a 400 is not retried");

    let (counters, timings): (Snapshot, Snapshot) = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .partition(|(key, ..)| key.key().name() == "sba_supabase_requests_total");
    assert_eq!(
        series(counters, "sba_supabase_requests_total"),
        vec![
            (labels(&[("path", "tenants"), ("outcome", "ok")]), DebugValue::Counter(1)),
            (labels(&[("path", "tenants"), ("outcome", "status_4xx")]), DebugValue::Counter(1)),
            (labels(&[("path", "tenants"), ("outcome", "status_5xx")]), DebugValue::Counter(2)),
        ]
    );
    let timings = series(timings, "sba_supabase_request_seconds");
    assert_eq!(timings.len(), 1, "{timings:?}");
    assert_eq!(timings[0].0, labels(&[("path", "tenants")]));
    let DebugValue::Histogram(samples) = &timings[0].1 else { panic!("{timings:?}") };
    assert_eq!(samples.len(), 4, "one sample per attempt");
}
