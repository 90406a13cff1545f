//! `[log]`: the log filter (`RUST_LOG`) and format.

use super::Ctx;
use crate::config::settings::{LogFormat, LogSettings};

raw_section! {
    pub(super) struct RawLog {
        filter: Option<String>,
        format: Option<String>,
    }
}

pub(super) fn log_settings(ctx: &mut Ctx<'_>, raw: RawLog) -> LogSettings {
    let format = match raw.format.as_deref() {
        None if ctx.production => LogFormat::Json,
        None | Some("pretty" | "text") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            ctx.problems.push("SBA_LOG__FORMAT", format!("`{other}` is not `json` or `pretty`"));
            LogFormat::Json
        }
    };
    LogSettings { filter: raw.filter.unwrap_or_else(|| "info".to_owned()), format }
}
