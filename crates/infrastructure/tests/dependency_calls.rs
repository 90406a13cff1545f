#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! The metrics and spans of the adapters' calls to PostgreSQL (the internal store, and the
//! Supabase schema over direct SQL) and Redis, against the test services
//! (`SBA_TEST_DATABASE_URL`, `SBA_TEST_REDIS_URL`): each port call is counted by its operation
//! and outcome and timed, with no id in a label, and is a child span of the current span only
//! when there is one.
//!
//! Metrics are read from a `DebuggingRecorder` installed for the test's thread (tokio's
//! test runtime runs everything on it); spans from a small capturing layer.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sba_application::ports::{RateLimiter as _, TenantDirectory as _};
use sba_domain::ratelimit::Quota;
use sba_domain::{RunId, TenantId};
use sba_infrastructure::internal_store::StoreLocation;
use sba_infrastructure::internal_store::test_support::{
    admin_url, creation_audit, execute_sql, fresh_postgres_store, fresh_supabase_url, new_run,
};
use sba_infrastructure::redis::test_support::redis_url;
use sba_infrastructure::redis::{FredRateLimiter, FredRateLimiterSettings};
use sba_infrastructure::supabase::connect_sql;
use secrecy::{ExposeSecret as _, SecretString};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Instrument as _, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use uuid::Uuid;

type Labels = Vec<(String, String)>;

/// Every series, by metric name: its labels and value (a histogram's: its number of
/// samples). Taken once per test: a snapshot drains the histograms.
fn metrics_of(snapshotter: &Snapshotter) -> BTreeMap<String, Vec<(Labels, u64)>> {
    let mut found: BTreeMap<String, Vec<(Labels, u64)>> = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels = key.key().labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        let value = match value {
            DebugValue::Counter(n) => n,
            DebugValue::Histogram(samples) => samples.len() as u64,
            DebugValue::Gauge(_) => panic!("{} is not a gauge", key.key().name()),
        };
        found.entry(key.key().name().to_owned()).or_default().push((labels, value));
    }
    for series in found.values_mut() {
        series.sort();
    }
    found
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[tokio::test]
async fn an_internal_store_call_on_postgresql_is_counted_ok_and_timed_under_its_operation() {
    let (store, _) = fresh_postgres_store().await;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let run = new_run();
    store.run_ledger().create_run(&run, &creation_audit(&run)).await.unwrap();
    assert!(store.run_repository().get(run.tenant_id, run.id).await.unwrap().is_some());
    // A missing run is the store's answer, not its failure.
    let missing = RunId::from_uuid(Uuid::now_v7());
    assert!(store.run_repository().get(run.tenant_id, missing).await.unwrap().is_none());

    let internal = |operation| [("database", "internal"), ("operation", operation)];
    let counted = |operation, outcome| {
        let [database, operation] = internal(operation);
        labels(&[database, operation, ("outcome", outcome)])
    };
    let metrics = metrics_of(&snapshotter);
    assert_eq!(
        metrics["sba_db_calls_total"],
        vec![(counted("ledger.create_run", "ok"), 1), (counted("runs.get", "ok"), 2)]
    );
    assert_eq!(
        metrics["sba_db_call_seconds"],
        vec![(labels(&internal("ledger.create_run")), 1), (labels(&internal("runs.get")), 2)]
    );
    assert_eq!(metrics.len(), 2, "{metrics:?}");
}

#[tokio::test]
async fn an_internal_store_call_on_a_dropped_database_is_counted_error() {
    let (store, location) = fresh_postgres_store().await;
    let StoreLocation::Postgres(url) = location else { unreachable!("a PostgreSQL store") };
    let name = url::Url::parse(url.expose_secret()).unwrap().path().trim_start_matches('/').to_owned();
    let runs = store.run_repository();
    execute_sql(&admin_url(), &format!("DROP DATABASE {name} WITH (FORCE)")).await;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let tenant = TenantId::from_uuid(Uuid::now_v7());
    assert!(runs.get(tenant, RunId::from_uuid(Uuid::now_v7())).await.is_err());

    let metrics = metrics_of(&snapshotter);
    assert_eq!(
        metrics["sba_db_calls_total"],
        vec![(labels(&[("database", "internal"), ("operation", "runs.get"), ("outcome", "error")]), 1)]
    );
    assert_eq!(
        metrics["sba_db_call_seconds"],
        vec![(labels(&[("database", "internal"), ("operation", "runs.get")]), 1)]
    );
}

#[tokio::test]
async fn a_supabase_sql_call_is_counted_under_the_supabase_database() {
    let url = SecretString::from(fresh_supabase_url().await);
    let sql = connect_sql(&url, Duration::from_secs(10)).await.unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    assert!(sql.tenant_directory().find(TenantId::from_uuid(Uuid::now_v7())).await.unwrap().is_none());

    let metrics = metrics_of(&snapshotter);
    let find = [("database", "supabase"), ("operation", "tenants.find")];
    assert_eq!(metrics["sba_db_calls_total"], vec![(labels(&[find[0], find[1], ("outcome", "ok")]), 1)]);
    assert_eq!(metrics["sba_db_call_seconds"], vec![(labels(&find), 1)]);
}

#[tokio::test]
async fn a_redis_call_is_counted_ok_and_counted_error_when_redis_is_unreachable() {
    // Generous for the test Redis, which parallel tests share; short where nothing answers.
    let settings =
        FredRateLimiterSettings { timeout: Duration::from_secs(2), connect_timeout: Duration::from_secs(5) };
    let reachable = FredRateLimiter::connect(&SecretString::from(redis_url()), settings).await.unwrap();
    // A port nothing listens on: bound, then released.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let short = FredRateLimiterSettings {
        timeout: Duration::from_millis(50),
        connect_timeout: Duration::from_millis(50),
    };
    let unreachable =
        FredRateLimiter::connect(&SecretString::from(format!("redis://127.0.0.1:{closed}")), short)
            .await
            .unwrap();

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let quota = Quota::new(10, 60).unwrap();
    let key = format!("test:dependency-calls:{}", Uuid::now_v7());
    assert!(reachable.check(&key, quota, 1).await.is_ok());
    assert!(unreachable.check(&key, quota, 1).await.is_err());

    let check = ("operation", "limiter.check");
    let metrics = metrics_of(&snapshotter);
    assert_eq!(
        metrics["sba_redis_calls_total"],
        vec![(labels(&[check, ("outcome", "error")]), 1), (labels(&[check, ("outcome", "ok")]), 1)]
    );
    assert_eq!(metrics["sba_redis_call_seconds"], vec![(labels(&[check]), 2)]);
    assert_eq!(metrics.len(), 2, "{metrics:?}");
}

/// A span as [`Spans`] saw it made: its name, its parent's, and its fields.
#[derive(Debug, Clone)]
struct Captured {
    name: &'static str,
    parent: Option<&'static str>,
    fields: BTreeMap<String, String>,
}

/// A layer that keeps every span made.
#[derive(Debug, Clone, Default)]
struct Spans(Arc<Mutex<Vec<Captured>>>);

impl Spans {
    fn dependency_calls(&self) -> Vec<Captured> {
        self.0.lock().unwrap().iter().filter(|span| span.name == "dependency call").cloned().collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attributes.record(&mut Fields(&mut fields));
        let parent = ctx.span(id).and_then(|span| span.parent()).map(|parent| parent.name());
        self.0.lock().unwrap().push(Captured { name: attributes.metadata().name(), parent, fields });
    }
}

#[tokio::test]
async fn a_store_call_is_a_child_span_of_the_current_span_and_makes_none_without_one() {
    let (store, _) = fresh_postgres_store().await;
    let spans = Spans::default();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let (ledger, runs) = (store.run_ledger(), store.run_repository());
    let run = new_run();

    ledger.create_run(&run, &creation_audit(&run)).instrument(tracing::info_span!("request")).await.unwrap();
    let calls = spans.dependency_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].parent, Some("request"));
    let field = |name: &str| calls[0].fields.get(name).map(String::as_str);
    assert_eq!(field("otel.name"), Some("postgresql ledger.create_run"));
    assert_eq!(field("otel.kind"), Some("client"));
    assert_eq!(field("db.system.name"), Some("postgresql"));
    assert_eq!(field("db.operation.name"), Some("ledger.create_run"));

    // A background loop's call (no current span) starts no trace of its own.
    assert!(runs.get(run.tenant_id, run.id).await.unwrap().is_some());
    assert_eq!(spans.dependency_calls().len(), 1);
}
