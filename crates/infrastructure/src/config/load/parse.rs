//! Parsers shared by the sections: each records a problem, named by the setting's variable,
//! instead of stopping at the first.

use std::str::FromStr;
use std::time::Duration;

use sba_domain::ratelimit::Quota;
use url::Url;
use validator::{ValidationErrors, ValidationErrorsKind};

use super::Problems;
use crate::config::report::duration_text;

/// Parses `value` when present, else returns `default`; records a problem (and returns the
/// default, so later checks still run) when it does not parse.
pub(super) fn parse_or<T: FromStr>(
    problems: &mut Problems,
    setting: &str,
    value: Option<&str>,
    default: T,
) -> T {
    let Some(text) = value else { return default };
    text.trim().parse().unwrap_or_else(|_| {
        let shown: String = text.chars().take(40).collect();
        problems.push(setting, format!("`{shown}` is not a valid value"));
        default
    })
}

/// A whole number in `range`, or the default (with a problem when out of range).
pub(super) fn bounded(
    problems: &mut Problems,
    setting: &str,
    value: Option<&str>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> u64 {
    let parsed = parse_or(problems, setting, value, default);
    if range.contains(&parsed) {
        parsed
    } else {
        problems.push(setting, format!("must be between {} and {}", range.start(), range.end()));
        default
    }
}

/// A duration written with its unit, `250ms`, `30s`, `10m` or `24h`, within `range`; the
/// default when absent, or (with a problem) when it does not parse or is out of range.
pub(super) fn duration(
    problems: &mut Problems,
    setting: &str,
    value: Option<&str>,
    default: Duration,
    range: std::ops::RangeInclusive<Duration>,
) -> Duration {
    let Some(text) = value else { return default };
    let Some(parsed) = parse_duration(text) else {
        let shown: String = text.chars().take(40).collect();
        problems.push(setting, format!("`{shown}` is not a duration like `250ms`, `30s`, `10m` or `24h`"));
        return default;
    };
    if range.contains(&parsed) {
        parsed
    } else {
        problems.push(
            setting,
            format!("must be between {} and {}", duration_text(*range.start()), duration_text(*range.end())),
        );
        default
    }
}

/// `<whole number><ms|s|m|h>`; a bare number is refused, as its unit would be a guess.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis_per_unit = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.checked_mul(millis_per_unit).map(Duration::from_millis)
}

/// `<key>=<value>; <key>=<value>`, each pair parsed by `parse` (which reports its own
/// problems and returns `None` to skip the entry).
pub(super) fn entries<T>(
    problems: &mut Problems,
    setting: &str,
    text: &str,
    mut parse: impl FnMut(&mut Problems, &str, &str) -> Option<T>,
) -> Vec<T> {
    let mut parsed = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('=') {
            Some((key, value)) => parsed.extend(parse(problems, key.trim(), value.trim())),
            None => problems.push(setting, format!("`{entry}` is not `<key>=<value>`")),
        }
    }
    parsed
}

/// `<limit>/<window secs>`, e.g. `100/60`.
pub(super) fn quota(problems: &mut Problems, setting: &str, text: &str) -> Option<Quota> {
    let parsed = text
        .trim()
        .split_once('/')
        .and_then(|(limit, window)| Some((limit.trim().parse().ok()?, window.trim().parse().ok()?)))
        .and_then(|(limit, window)| Quota::new(limit, window).ok());
    if parsed.is_none() {
        let shown: String = text.chars().take(40).collect();
        problems.push(
            setting,
            format!("`{shown}` is not a quota like `100/60` (requests per seconds, window at most a day)"),
        );
    }
    parsed
}

/// An `https://` URL in production, where plain http would let anyone on the path read or
/// change what crosses it (keys, tenants); `http://` is accepted too in development.
pub(super) fn secure_url(
    problems: &mut Problems,
    setting: &str,
    value: &str,
    production: bool,
) -> Option<Url> {
    let url = http_url(problems, setting, value)?;
    if production && url.scheme() != "https" {
        problems.push(setting, "must be an https:// URL in production");
        return None;
    }
    Some(url)
}

pub(super) fn http_url(problems: &mut Problems, setting: &str, value: &str) -> Option<Url> {
    match Url::parse(value.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Some(url),
        _ => {
            problems.push(setting, "must be an http:// or https:// URL");
            None
        }
    }
}

/// Turns `validator` errors into problems named by the setting's variable.
pub(super) fn collect_validation(
    problems: &mut Problems,
    result: Result<(), ValidationErrors>,
    names: &[(&str, &str)],
) {
    let Err(errors) = result else { return };
    for (field, kind) in errors.errors() {
        let setting =
            names.iter().find(|(f, _)| *f == field.as_ref()).map_or(field.as_ref(), |(_, name)| name);
        if let ValidationErrorsKind::Field(list) = kind {
            for error in list {
                let message =
                    error.message.as_ref().map_or_else(|| error.code.to_string(), ToString::to_string);
                problems.push(setting, message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_stay_within_their_range() {
        let range = Duration::from_millis(1)..=Duration::from_hours(24);
        let mut problems = Problems::default();
        for (text, expected) in [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            (" 10m ", Duration::from_mins(10)),
            ("24h", Duration::from_hours(24)),
        ] {
            assert_eq!(duration(&mut problems, "X", Some(text), Duration::ZERO, range.clone()), expected);
        }
        assert_eq!(
            duration(&mut problems, "X", None, Duration::from_secs(7), range.clone()),
            Duration::from_secs(7)
        );
        assert!(problems.0.is_empty(), "{problems}");

        for bad in ["30", "s", "1.5s", "-1s", "10 days", "25h", "0ms", "99999999999999999999h"] {
            let mut problems = Problems::default();
            let value = duration(&mut problems, "X", Some(bad), Duration::from_secs(7), range.clone());
            assert_eq!(value, Duration::from_secs(7), "{bad}: the default stands in");
            assert_eq!(problems.0.len(), 1, "{bad}");
        }
        let mut problems = Problems::default();
        duration(&mut problems, "X", Some("25h"), Duration::ZERO, range);
        assert_eq!(problems.0[0].message, "must be between 1ms and 24h");
    }
}
