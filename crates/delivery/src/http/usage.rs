//! `GET /v1/usage?from=&to=&group_by=day|model|agent`: the caller's tenant's usage.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Days, NaiveDate, Utc};
use sba_application::ports::{UsageBucket, UsageGrouping, UsageRange};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
use utoipa::{IntoParams, ToSchema};

use super::auth::Authenticated;
use super::error::ApiError;
use super::error::Problem;
use crate::http::AppState;

/// The range used when `from` is omitted: the 30 days before `to`.
const DEFAULT_DAYS: u64 = 30;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Start (inclusive): an RFC 3339 instant or a `YYYY-MM-DD` date; default 30 days before
    /// `to`; not after `to`, and at most 366 days before it (a longer range is 400
    /// `invalid_request`: ask year by year). Both ends within the years 1–9999.
    #[param(schema_with = instant_or_date)]
    pub from: Option<String>,
    /// End: an RFC 3339 instant (exclusive) or a `YYYY-MM-DD` date (that whole day); default now.
    #[param(schema_with = instant_or_date)]
    pub to: Option<String>,
    /// `day` (default), `model` or `agent`.
    #[param(schema_with = grouping)]
    pub group_by: Option<String>,
}

/// `from` and `to`: an RFC 3339 instant or a `YYYY-MM-DD` date.
fn instant_or_date() -> Schema {
    let string = |format| {
        ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(format)))
    };
    Schema::OneOf(
        OneOfBuilder::new().item(string(KnownFormat::DateTime)).item(string(KnownFormat::Date)).build(),
    )
}

/// `group_by`: one of the groupings.
fn grouping() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(UsageGrouping::ALL.map(UsageGrouping::as_str)))
        .default(Some(UsageGrouping::Day.as_str().into()))
        .build()
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BucketResponse {
    key: String,
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
    runs: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UsageResponse {
    #[schema(value_type = String, example = "day")]
    group_by: &'static str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    data: Vec<BucketResponse>,
}

impl From<UsageBucket> for BucketResponse {
    fn from(b: UsageBucket) -> Self {
        Self {
            key: b.key,
            input_tokens: b.input_tokens,
            output_tokens: b.output_tokens,
            cost_micros: b.cost_micros,
            runs: b.runs,
        }
    }
}

/// Which end of the range a date names: `from=2026-11-01` starts at that day's first instant,
/// `to=2026-11-30` includes the whole day (the range ends at the next midnight).
#[derive(Debug, Clone, Copy)]
enum Bound {
    From,
    To,
}

/// An RFC 3339 instant, or a `YYYY-MM-DD` UTC date.
fn parse_bound(name: &str, text: &str, bound: Bound) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        ApiError::invalid_request(format!("`{name}` must be an RFC 3339 instant or a YYYY-MM-DD date"))
    })?;
    let day = match bound {
        Bound::From => Some(date),
        Bound::To => date.checked_add_days(Days::new(1)),
    };
    day.and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| ApiError::invalid_request(format!("`{name}` is out of range")))
}

impl UsageQuery {
    fn parse(&self, now: DateTime<Utc>) -> Result<(UsageRange, UsageGrouping), ApiError> {
        let group_by = UsageGrouping::parse(self.group_by.as_deref().unwrap_or("day"))
            .map_err(|e| ApiError::invalid_request(format!("`group_by` {}", e.message)))?;
        let to = self.to.as_deref().map(|t| parse_bound("to", t, Bound::To)).transpose()?.unwrap_or(now);
        let from = match self.from.as_deref() {
            Some(text) => parse_bound("from", text, Bound::From)?,
            None => to
                .checked_sub_days(Days::new(DEFAULT_DAYS))
                .ok_or_else(|| ApiError::invalid_request("`to` is out of range"))?,
        };
        let range = UsageRange::new(from, to)
            .map_err(|e| ApiError::invalid_request(format!("`{}` {}", e.field, e.message)))?;
        Ok((range, group_by))
    }
}

/// Token and cost totals of the caller's tenant, grouped by day, model or agent.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", operation_id = "getUsage",
    params(UsageQuery),
    responses(
        (status = 200, description = "The totals per group.", body = UsageResponse),
        (status = 400, description = "`invalid_request`: a bad range (`from` after `to`, longer than 366 days, outside the years 1–9999) or grouping.",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub(super) async fn usage(
    state: web::Data<AppState>,
    Authenticated(ctx): Authenticated,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (range, group_by) = query.parse(Utc::now())?;
    let buckets = state
        .usage
        .summary(&ctx, range, group_by)
        .await
        .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("summarising usage")))?;
    Ok(HttpResponse::Ok().json(UsageResponse {
        group_by: group_by.as_str(),
        from: range.from,
        to: range.to,
        data: buckets.into_iter().map(BucketResponse::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(from: Option<&str>, to: Option<&str>, group_by: Option<&str>) -> UsageQuery {
        UsageQuery { from: from.map(Into::into), to: to.map(Into::into), group_by: group_by.map(Into::into) }
    }

    #[test]
    fn dates_cover_whole_days_and_instants_are_exact() {
        let now = Utc::now();
        let (range, group) = query(Some("2026-11-01"), Some("2026-11-30"), Some("model")).parse(now).unwrap();
        assert_eq!(range.from.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(range.to.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(group, UsageGrouping::Model);
        let (range, _) =
            query(Some("2026-11-01T10:00:00+02:00"), Some("2026-11-02T00:00:00Z"), None).parse(now).unwrap();
        assert_eq!(range.from.to_rfc3339(), "2026-11-01T08:00:00+00:00");
    }

    #[test]
    fn defaults_are_the_last_thirty_days_by_day() {
        let now = Utc::now();
        let (range, group) = query(None, None, None).parse(now).unwrap();
        assert_eq!((range.to, range.to - range.from), (now, chrono::Duration::days(30)));
        assert_eq!(group, UsageGrouping::Day);
    }

    #[test]
    fn bad_values_are_rejected() {
        let now = Utc::now();
        for q in [
            query(Some("yesterday"), None, None),
            query(None, Some("2026-13-01"), None),
            query(None, None, Some("week")),
            query(Some("2026-11-02"), Some("2026-11-01T00:00:00Z"), None),
            query(Some("2025-01-01"), Some("2026-01-02"), None),
            query(Some("0000-06-01"), Some("0000-06-02"), None),
        ] {
            assert_eq!(q.parse(now).unwrap_err().code(), crate::http::ProblemCode::InvalidRequest, "{q:?}");
        }
    }
}
