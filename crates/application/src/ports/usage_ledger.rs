//! Reads of recorded token usage and cost, aggregated per day, model or agent.

use async_trait::async_trait;
use chrono::{DateTime, Datelike as _, TimeDelta, Utc};
use sba_domain::{TenantId, ValidationError};

use super::RepositoryError;

/// What a usage summary is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageGrouping {
    /// The UTC calendar day of each usage record; keys are `YYYY-MM-DD`.
    Day,
    /// The model that was billed.
    Model,
    /// The agent whose run reported the usage.
    Agent,
}

impl UsageGrouping {
    pub const ALL: [Self; 3] = [Self::Day, Self::Model, Self::Agent];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Model => "model",
            Self::Agent => "agent",
        }
    }

    /// # Errors
    /// A `group_by` [`ValidationError`] for anything but `day`, `model` or `agent`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|g| g.as_str() == value)
            .ok_or_else(|| ValidationError::new("group_by", "must be one of `day`, `model`, `agent`"))
    }
}

/// The half-open time range `[from, to)` of a summary: a record made exactly at `to` is not
/// counted. A range with `to <= from` is empty. Bounds count to the microsecond, the precision
/// usage times are stored with; finer digits are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl UsageRange {
    /// The longest range one summary covers: a year, leap day included. A summary reads
    /// every usage record in its range, so its cost grows with the range; a client wanting
    /// more asks year by year.
    pub const MAX_DAYS: i64 = 366;

    /// The range `[from, to)` a client asked for.
    ///
    /// # Errors
    /// A [`ValidationError`] on `from` when it is after `to`, on `from`/`to` when either is
    /// outside the years 1–9999 (no usage record is there, and not every store can compare
    /// with it), and on `to` when the range is longer than [`Self::MAX_DAYS`].
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Self, ValidationError> {
        for (field, bound) in [("from", from), ("to", to)] {
            if !(1..=9999).contains(&bound.year()) {
                return Err(ValidationError::new(field, "must be within the years 1 to 9999"));
            }
        }
        if from > to {
            return Err(ValidationError::new("from", "must not be after `to`"));
        }
        if to - from > TimeDelta::days(Self::MAX_DAYS) {
            return Err(ValidationError::new(
                "to",
                format!("must be at most {} days after `from`", Self::MAX_DAYS),
            ));
        }
        Ok(Self { from, to })
    }
}

/// The totals of one group. Cost is in integer micro-units of the billing currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBucket {
    /// The day (`YYYY-MM-DD`, UTC), model or agent.
    pub key: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
    /// How many distinct runs contributed. Usage whose run has since been purged still counts
    /// in the sums but no longer in `runs`.
    pub runs: u64,
}

/// Aggregates of the usage recorded by the run ledger, computed by the store.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait UsageLedger: std::fmt::Debug + Send + Sync + 'static {
    /// The usage of `tenant` recorded within `range`, summed per `group_by` key; one bucket
    /// per key that has usage, ordered by key ascending (byte order). Empty when nothing was
    /// recorded in the range.
    ///
    /// # Errors
    /// `Unexpected` on storage failure, a stored negative counter, or a sum beyond `i64`.
    async fn summary(
        &self,
        tenant: TenantId,
        range: UsageRange,
        group_by: UsageGrouping,
    ) -> Result<Vec<UsageBucket>, RepositoryError>;
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeDelta, Utc};

    use super::{UsageGrouping, UsageRange};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_usage_range_is_at_most_366_days_within_the_years_1_to_9999() {
        let from = at("2024-01-01T00:00:00Z");
        let longest = from + TimeDelta::days(UsageRange::MAX_DAYS);
        assert_eq!(UsageRange::new(from, longest).map(|r| r.to), Ok(longest));
        assert_eq!(UsageRange::new(from, from).map(|r| r.from), Ok(from));
        let too_long = UsageRange::new(from, longest + TimeDelta::microseconds(1)).err();
        assert_eq!(too_long.as_ref().map(|e| e.field), Some("to"));
        assert!(too_long.is_some_and(|e| e.message.contains("366 days")));
        let reversed = UsageRange::new(longest, from).err();
        assert_eq!(reversed.map(|e| e.field), Some("from"));
        for (from, to, field) in [
            ("0000-12-31T00:00:00Z", "0001-01-01T00:00:00Z", "from"),
            ("9999-12-31T00:00:00Z", "9999-12-31T23:59:59Z", "to"),
        ] {
            let (from, to) = (at(from), at(to));
            let to = if field == "to" { to + TimeDelta::seconds(1) } else { to };
            assert_eq!(UsageRange::new(from, to).err().map(|e| e.field), Some(field), "{from} {to}");
        }
    }

    #[test]
    fn grouping_parses_what_it_prints_and_nothing_else() {
        for grouping in UsageGrouping::ALL {
            assert_eq!(UsageGrouping::parse(grouping.as_str()).ok(), Some(grouping));
        }
        for bad in ["", "Day", "week", "model "] {
            let error = UsageGrouping::parse(bad).err();
            assert_eq!(error.map(|e| e.field), Some("group_by"), "{bad:?}");
        }
    }
}
