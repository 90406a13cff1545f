//! [`SeaOrmUsageLedger`]: usage summaries computed by the database, one aggregate query per
//! call, never by loading usage rows into memory.
//!
//! Both backends answer with the same numbers and keys for the same data:
//! - sums are cast to `BIGINT` (PostgreSQL's `SUM(bigint)` is `numeric`; SQLite's is already
//!   an integer), so they decode as `i64` everywhere;
//! - PostgreSQL keys are compared with the `"C"` collation, SQLite's default is binary, so
//!   buckets come in byte order whatever the database's locale;
//! - the day of a record is its UTC calendar day. On SQLite `created_at` is the RFC 3339 text
//!   sqlx writes for a `DateTime<Utc>` (`2026-03-02T23:59:59.999999+00:00`: always `+00:00`,
//!   with 0, 3, 6 or 9 fraction digits), so the day is its first ten characters. That text
//!   also sorts like the instant it encodes (where one value has fewer fraction digits, the
//!   `+` after them sorts below `.` and every digit), so the range bounds, bound here as
//!   `DateTime<Utc>` and encoded the same way, are compared as text and can use the
//!   `(tenant_id, created_at)` index.

use async_trait::async_trait;
use chrono::SubsecRound as _;
use sba_application::ports::{RepositoryError, UsageBucket, UsageGrouping, UsageLedger, UsageRange};
use sba_domain::TenantId;
use sea_orm::{DatabaseConnection, DbBackend, FromQueryResult, Statement};

use crate::observe;
use crate::sql::map_db_err;
use crate::tenant_data::corrupt_row;

/// Usage summaries of the `usage_metrics` table, always filtered by tenant.
#[derive(Debug, Clone)]
pub struct SeaOrmUsageLedger {
    db: DatabaseConnection,
}

impl SeaOrmUsageLedger {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

/// The summary query with `$key` as the bucket key. `$1` is the tenant, `[$2, $3)` the range;
/// sqlx's SQLite driver accepts `$N` placeholders too. `COUNT(DISTINCT run_id)` skips the
/// `NULL` run of usage whose run was purged.
macro_rules! summary_sql {
    ($key:literal) => {
        concat!(
            "SELECT ",
            $key,
            " AS bucket, \
             CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
             CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
             CAST(SUM(cost_micros) AS BIGINT) AS cost_micros, \
             COUNT(DISTINCT run_id) AS runs \
             FROM usage_metrics \
             WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 \
             GROUP BY bucket \
             ORDER BY bucket"
        )
    };
}

fn summary_sql(backend: DbBackend, group_by: UsageGrouping) -> Result<&'static str, RepositoryError> {
    Ok(match (backend, group_by) {
        (DbBackend::Postgres, UsageGrouping::Day) => {
            summary_sql!(r#"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') COLLATE "C""#)
        }
        (DbBackend::Postgres, UsageGrouping::Model) => summary_sql!(r#"model COLLATE "C""#),
        (DbBackend::Postgres, UsageGrouping::Agent) => summary_sql!(r#"agent COLLATE "C""#),
        (DbBackend::Sqlite, UsageGrouping::Day) => summary_sql!("substr(created_at, 1, 10)"),
        (DbBackend::Sqlite, UsageGrouping::Model) => summary_sql!("model"),
        (DbBackend::Sqlite, UsageGrouping::Agent) => summary_sql!("agent"),
        (other, _) => {
            return Err(RepositoryError::Unexpected(anyhow::anyhow!(
                "usage summaries are not implemented for {other:?}"
            )));
        }
    })
}

#[derive(Debug, FromQueryResult)]
struct BucketRow {
    bucket: String,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
    runs: i64,
}

impl TryFrom<BucketRow> for UsageBucket {
    type Error = RepositoryError;

    fn try_from(row: BucketRow) -> Result<Self, Self::Error> {
        let counter = |what: &'static str, value: i64| {
            u64::try_from(value)
                .map_err(|_| corrupt_row("usage_metrics", format_args!("{what} sums to {value}")))
        };
        Ok(Self {
            input_tokens: counter("input_tokens", row.input_tokens)?,
            output_tokens: counter("output_tokens", row.output_tokens)?,
            cost_micros: counter("cost_micros", row.cost_micros)?,
            runs: counter("runs", row.runs)?,
            key: row.bucket,
        })
    }
}

#[async_trait]
impl UsageLedger for SeaOrmUsageLedger {
    async fn summary(
        &self,
        tenant: TenantId,
        range: UsageRange,
        group_by: UsageGrouping,
    ) -> Result<Vec<UsageBucket>, RepositoryError> {
        observe::sql!(Internal, "usage.summary", &self.db, async {
            let backend = self.db.get_database_backend();
            // PostgreSQL keeps microseconds and its driver drops finer digits of a bound; SQLite
            // would compare them as text. Truncating first makes both compare the same instants.
            let (from, to) = (range.from.trunc_subsecs(6), range.to.trunc_subsecs(6));
            let statement = Statement::from_sql_and_values(
                backend,
                summary_sql(backend, group_by)?,
                [tenant.as_uuid().into(), from.into(), to.into()],
            );
            BucketRow::find_by_statement(statement)
                .all(&self.db)
                .await
                .map_err(|e| map_db_err(e, "summarising usage"))?
                .into_iter()
                .map(UsageBucket::try_from)
                .collect()
        })
        .await
    }
}
