//! `[telemetry]`: where traces go (`OTEL_EXPORTER_OTLP_ENDPOINT`).

use url::Url;

use super::Problems;
use super::parse::http_url;

raw_section! {
    pub(super) struct RawTelemetry {
        otlp_endpoint: Option<String>,
    }
}

/// The OTLP endpoint, when set and an http(s) URL.
pub(super) fn otlp_endpoint(problems: &mut Problems, raw: &RawTelemetry) -> Option<Url> {
    raw.otlp_endpoint.as_deref().and_then(|url| http_url(problems, "OTEL_EXPORTER_OTLP_ENDPOINT", url))
}
