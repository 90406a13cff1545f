//! Metrics and trace spans of the adapters' calls to the databases and Redis: each port
//! method's work is counted by outcome and timed, and inside a traced request it is a child
//! span of the request's, as an OpenTelemetry client span.
//!
//! - SQL: `sba_db_calls_total{database,operation,outcome}` and
//!   `sba_db_call_seconds{database,operation}` (histogram); `database` is `internal` (the
//!   internal store, PostgreSQL or SQLite) or `supabase` (its direct-SQL adapter).
//! - Redis: `sba_redis_calls_total{operation,outcome}` and `sba_redis_call_seconds{operation}`.
//!
//! `operation` names the adapter method, `<area>.<method>` (the cache, whose port calls
//! reach Redis only on an L1 miss, names each Redis round trip instead), always a literal of
//! the code ([`sql!`], [`redis!`], or a `static` [`Operation`]): never an id, a tenant or a
//! key, so the number of series stays bounded. `outcome` is `ok` or `error`: an error is the dependency failing or not answering
//! (or a reply the adapter cannot read); an answer that the port reports as an error of the
//! caller's (a missing row, a taken id, a transition the run's state refuses) is `ok`, since
//! the dependency did its work ([`CallError`]).
//!
//! A span is made only under a current span: the background loops (polling, sweeps, the
//! cache's replay) would otherwise each start a trace of their own. It is a `debug` span of
//! target `sba::dependency`; while that is disabled, or without a parent, a call costs two
//! clock readings and two registry lookups of keys whose labels are built at compile time,
//! and allocates nothing.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use metrics::{Key, Label, Level, Metadata};
use sba_application::ports::{
    EventBusError, LedgerError, QueueError, RateLimitError, RepositoryError, SequencerError,
};
use sea_orm::{ConnectionTrait, DbBackend};
use tracing::{Instrument as _, Span};

const DB_CALLS: &str = "sba_db_calls_total";
const DB_SECONDS: &str = "sba_db_call_seconds";
const REDIS_CALLS: &str = "sba_redis_calls_total";
const REDIS_SECONDS: &str = "sba_redis_call_seconds";

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The database of an SQL call, as the `database` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Database {
    /// The internal store, whatever its backend.
    Internal,
    /// The Supabase database, over direct SQL.
    Supabase,
}

impl Database {
    const fn label(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Supabase => "supabase",
        }
    }
}

/// The server behind a call, as OpenTelemetry's `db.system.name` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum System {
    Postgresql,
    Sqlite,
    /// Another SQL database (sea-orm's backends are not exhaustive): none SBA connects to.
    OtherSql,
    Redis,
}

impl System {
    /// The backend of a sea-orm connection (or transaction).
    pub(crate) fn of(connection: &impl ConnectionTrait) -> Self {
        match connection.get_database_backend() {
            DbBackend::Postgres => Self::Postgresql,
            DbBackend::Sqlite => Self::Sqlite,
            _ => Self::OtherSql,
        }
    }

    const fn as_str(self) -> &'static str {
        match self {
            Self::Postgresql => "postgresql",
            Self::Sqlite => "sqlite",
            Self::OtherSql => "other_sql",
            Self::Redis => "redis",
        }
    }
}

/// One adapter method, declared once as a `static` by [`sql!`] or [`redis!`]: its labels are
/// built at compile time, so recording a call allocates nothing.
#[derive(Debug)]
pub(crate) struct Operation {
    name: &'static str,
    labels: Labels,
}

#[derive(Debug)]
enum Labels {
    Sql { ok: [Label; 3], error: [Label; 3], timing: [Label; 2] },
    Redis { ok: [Label; 2], error: [Label; 2], timing: [Label; 1] },
}

impl Operation {
    /// A call of `database`; `name` is `<area>.<method>`.
    pub(crate) const fn sql(database: Database, name: &'static str) -> Self {
        let database = database.label();
        Self {
            name,
            labels: Labels::Sql {
                ok: [label("database", database), label("operation", name), label("outcome", "ok")],
                error: [label("database", database), label("operation", name), label("outcome", "error")],
                timing: [label("database", database), label("operation", name)],
            },
        }
    }

    /// A call of Redis; `name` is `<area>.<method>`.
    pub(crate) const fn redis(name: &'static str) -> Self {
        Self {
            name,
            labels: Labels::Redis {
                ok: [label("operation", name), label("outcome", "ok")],
                error: [label("operation", name), label("outcome", "error")],
                timing: [label("operation", name)],
            },
        }
    }

    /// Counts one call and records how long it took.
    fn record(&'static self, ok: bool, elapsed: Duration) {
        let (calls, seconds) = match &self.labels {
            Labels::Sql { ok: on_ok, error, timing } => (
                Key::from_static_parts(DB_CALLS, if ok { on_ok } else { error }),
                Key::from_static_parts(DB_SECONDS, timing),
            ),
            Labels::Redis { ok: on_ok, error, timing } => (
                Key::from_static_parts(REDIS_CALLS, if ok { on_ok } else { error }),
                Key::from_static_parts(REDIS_SECONDS, timing),
            ),
        };
        metrics::with_recorder(|recorder| {
            recorder.register_counter(&calls, &METADATA).increment(1);
            recorder.register_histogram(&seconds, &METADATA).record(elapsed.as_secs_f64());
        });
    }
}

const fn label(key: &'static str, value: &'static str) -> Label {
    Label::from_static_parts(key, value)
}

/// How a failed call counts: as the dependency's failure, or as an answer about the
/// caller's request (the dependency did its work).
pub(crate) trait CallError {
    /// The failure's `error.type` on the span, a fixed word (never the error's text, which
    /// may quote data); `None` for an answer, counted `ok`.
    fn failure(&self) -> Option<&'static str>;
}

/// Runs `call`, the work of one adapter method on `system`, as `operation`: counted, timed,
/// and a child span of the current span if there is one. [`sql!`] and [`redis!`] declare
/// the operation and call this.
pub(crate) async fn observed<T, E: CallError>(
    operation: &'static Operation,
    system: System,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let mut call = pin!(call.instrument(span(operation, system)));
    let started = Instant::now();
    let result = call.as_mut().await;
    let elapsed = started.elapsed();
    let failure = result.as_ref().err().and_then(CallError::failure);
    if let Some(error_type) = failure {
        let span = call.span();
        span.record("error.type", error_type);
        span.record("otel.status_code", "error");
    }
    operation.record(failure.is_none(), elapsed);
    result
}

/// The call's span, or none without a current span. The span's name is formatted only
/// when the span is enabled (`tracing` evaluates fields of enabled callsites only).
fn span(operation: &'static Operation, system: System) -> Span {
    // `Span::current().is_none()` without taking a reference to the current span.
    let has_parent = tracing::dispatcher::get_default(|dispatch| dispatch.current_span().id().is_some());
    if !has_parent {
        return Span::none();
    }
    tracing::debug_span!(
        target: "sba::dependency",
        "dependency call",
        otel.name = %SpanName { system, operation: operation.name },
        otel.kind = "client",
        db.system.name = system.as_str(),
        db.operation.name = operation.name,
        "error.type" = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// `<system> <operation>`, as OpenTelemetry names a client span (`postgresql runs.get`).
struct SpanName {
    system: System,
    operation: &'static str,
}

impl fmt::Display for SpanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.system.as_str(), self.operation)
    }
}

/// Observes an SQL call of an adapter method:
/// `observe::sql!(Internal, "runs.get", &self.db, async { … }).await`, with the
/// [`Database`] variant, the operation (a literal, `<area>.<method>`), the connection (whose
/// backend the span names) and the call's future.
macro_rules! sql {
    ($database:ident, $operation:literal, $connection:expr, $call:expr $(,)?) => {{
        static OPERATION: $crate::observe::Operation =
            $crate::observe::Operation::sql($crate::observe::Database::$database, $operation);
        $crate::observe::observed(&OPERATION, $crate::observe::System::of($connection), $call)
    }};
}

/// Observes a Redis call of an adapter method:
/// `observe::redis!("limiter.check", async { … }).await`, with the operation (a literal,
/// `<area>.<method>`) and the call's future.
macro_rules! redis {
    ($operation:literal, $call:expr $(,)?) => {{
        static OPERATION: $crate::observe::Operation = $crate::observe::Operation::redis($operation);
        $crate::observe::observed(&OPERATION, $crate::observe::System::Redis, $call)
    }};
}

pub(crate) use {redis, sql};

impl CallError for RepositoryError {
    fn failure(&self) -> Option<&'static str> {
        match self {
            Self::NotFound | Self::Conflict(_) => None,
            Self::Unexpected(_) => Some("unexpected"),
        }
    }
}

impl CallError for LedgerError {
    fn failure(&self) -> Option<&'static str> {
        match self {
            Self::NotFound | Self::InvalidTransition(_) | Self::Rejected(_) => None,
            Self::Unexpected(_) => Some("unexpected"),
        }
    }
}

impl CallError for SequencerError {
    fn failure(&self) -> Option<&'static str> {
        Some(match self {
            Self::Unavailable(_) => "unavailable",
            Self::Unexpected(_) => "unexpected",
        })
    }
}

impl CallError for QueueError {
    fn failure(&self) -> Option<&'static str> {
        Some(match self {
            Self::Unavailable(_) => "unavailable",
            Self::Unexpected(_) => "unexpected",
        })
    }
}

impl CallError for RateLimitError {
    fn failure(&self) -> Option<&'static str> {
        match self {
            Self::Unavailable(_) => Some("unavailable"),
        }
    }
}

impl CallError for EventBusError {
    fn failure(&self) -> Option<&'static str> {
        match self {
            Self::Unavailable(_) => Some("unavailable"),
        }
    }
}

/// A readiness check's failure.
impl CallError for anyhow::Error {
    fn failure(&self) -> Option<&'static str> {
        Some("unavailable")
    }
}

impl CallError for fred::error::Error {
    fn failure(&self) -> Option<&'static str> {
        use fred::error::ErrorKind;
        Some(match self.kind() {
            ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure => {
                "unavailable"
            }
            _ => "unexpected",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Instrument as _, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
    use tracing_subscriber::registry::LookupSpan;

    use super::*;

    static RUNS_GET: Operation = Operation::sql(Database::Internal, "runs.get");
    static LIMITER_CHECK: Operation = Operation::redis("limiter.check");

    /// Every series of the recorder: name, labels and value (histograms: their sample count).
    type Series = (String, Vec<(String, String)>, u64);

    fn series(recorder: &DebuggingRecorder) -> Vec<Series> {
        let mut found: Vec<_> = recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let labels = key.key().labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
                let value = match value {
                    DebugValue::Counter(n) => n,
                    DebugValue::Histogram(samples) => samples.len() as u64,
                    DebugValue::Gauge(_) => panic!("no gauge expected"),
                };
                (key.key().name().to_owned(), labels, value)
            })
            .collect();
        found.sort();
        found
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[tokio::test]
    async fn calls_are_counted_by_outcome_and_timed_and_an_answer_of_the_port_is_no_error() {
        let recorder = DebuggingRecorder::new();
        let _local = metrics::set_default_local_recorder(&recorder);

        let found = observed(&RUNS_GET, System::Postgresql, async { Ok::<_, RepositoryError>(1) }).await;
        assert_eq!(found.unwrap(), 1);
        let missing = observed(&RUNS_GET, System::Sqlite, async { Err::<(), _>(RepositoryError::NotFound) });
        assert!(matches!(missing.await, Err(RepositoryError::NotFound)));
        let failed = observed(&RUNS_GET, System::Postgresql, async {
            Err::<(), _>(RepositoryError::Unexpected(anyhow::anyhow!("connection reset")))
        });
        assert!(failed.await.is_err());
        let decided = observed(&LIMITER_CHECK, System::Redis, async {
            Err::<(), _>(RateLimitError::Unavailable(anyhow::anyhow!("down")))
        });
        assert!(decided.await.is_err());

        let sql = [("database", "internal"), ("operation", "runs.get")];
        assert_eq!(
            series(&recorder),
            vec![
                ("sba_db_call_seconds".to_owned(), labels(&sql), 3),
                ("sba_db_calls_total".to_owned(), labels(&[sql[0], sql[1], ("outcome", "error")]), 1),
                ("sba_db_calls_total".to_owned(), labels(&[sql[0], sql[1], ("outcome", "ok")]), 2),
                ("sba_redis_call_seconds".to_owned(), labels(&[("operation", "limiter.check")]), 1),
                (
                    "sba_redis_calls_total".to_owned(),
                    labels(&[("operation", "limiter.check"), ("outcome", "error")]),
                    1
                ),
            ]
        );
    }

    /// A span as the test layer saw it: its name, its parent's and its fields as last recorded.
    #[derive(Debug, Clone)]
    struct Captured {
        id: Id,
        name: &'static str,
        parent: Option<&'static str>,
        fields: BTreeMap<String, String>,
    }

    #[derive(Debug, Clone, Default)]
    struct Spans(Arc<Mutex<Vec<Captured>>>);

    impl Spans {
        fn named(&self, name: &str) -> Vec<Captured> {
            self.0.lock().unwrap().iter().filter(|span| span.name == name).cloned().collect()
        }
    }

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }

        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
        fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let mut fields = BTreeMap::new();
            attributes.record(&mut Fields(&mut fields));
            let parent = ctx.span(id).and_then(|span| span.parent()).map(|parent| parent.name());
            let name = attributes.metadata().name();
            self.0.lock().unwrap().push(Captured { id: id.clone(), name, parent, fields });
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
            if let Some(span) = self.0.lock().unwrap().iter_mut().rev().find(|span| &span.id == id) {
                values.record(&mut Fields(&mut span.fields));
            }
        }
    }

    #[tokio::test]
    async fn a_call_under_a_current_span_is_a_client_span_of_its_own_with_a_failure_recorded() {
        let spans = Spans::default();
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));

        let call = observed(&LIMITER_CHECK, System::Redis, async {
            Err::<(), _>(RateLimitError::Unavailable(anyhow::anyhow!("secret key k1 timed out")))
        });
        assert!(call.instrument(tracing::info_span!("request")).await.is_err());

        let calls = spans.named("dependency call");
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].parent, Some("request"));
        let fields: Vec<_> = calls[0].fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            fields,
            [
                ("db.operation.name", "limiter.check"),
                ("db.system.name", "redis"),
                ("error.type", "unavailable"),
                ("otel.kind", "client"),
                ("otel.name", "redis limiter.check"),
                ("otel.status_code", "error"),
            ]
        );
    }

    #[tokio::test]
    async fn a_call_without_a_current_span_makes_no_span() {
        let spans = Spans::default();
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
        observed(&RUNS_GET, System::Postgresql, async { Ok::<_, RepositoryError>(()) }).await.unwrap();
        assert!(spans.named("dependency call").is_empty());
    }

    #[tokio::test]
    async fn a_call_makes_no_span_while_the_dependency_target_is_disabled() {
        let spans = Spans::default();
        let filtered = spans.clone().with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
            metadata.target() != "sba::dependency"
        }));
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(filtered));
        let call = observed(&RUNS_GET, System::Postgresql, async { Ok::<_, RepositoryError>(()) });
        call.instrument(tracing::info_span!("request")).await.unwrap();
        assert_eq!(spans.named("request").len(), 1);
        assert!(spans.named("dependency call").is_empty());
    }

    #[test]
    fn the_span_name_is_the_system_then_the_operation() {
        let name = SpanName { system: System::Postgresql, operation: "runs.get" };
        assert_eq!(name.to_string(), "postgresql runs.get");
        assert_eq!(
            SpanName { system: System::Sqlite, operation: "usage.summary" }.to_string(),
            "sqlite usage.summary"
        );
    }
}
