//! `[server]`: the HTTP listener.

use std::net::IpAddr;
use std::time::Duration;

use validator::Validate as _;

use super::Ctx;
use super::parse::{collect_validation, parse_or};
use crate::config::settings::ServerSettings;

raw_section! {
    pub(super) struct RawServer {
        host: Option<String>,
        port: Option<String>,
        shutdown_timeout_secs: Option<String>,
        max_body_bytes: Option<String>,
    }
}

pub(super) fn server_settings(ctx: &mut Ctx<'_>, raw: &RawServer) -> ServerSettings {
    let default_host = if ctx.production { IpAddr::from([0, 0, 0, 0]) } else { IpAddr::from([127, 0, 0, 1]) };
    let p = &mut ctx.problems;
    let server = ServerSettings {
        host: parse_or(p, "SBA_SERVER__HOST", raw.host.as_deref(), default_host),
        port: parse_or(p, "PORT", raw.port.as_deref(), 8080),
        shutdown_timeout: Duration::from_secs(parse_or(
            p,
            "SBA_SERVER__SHUTDOWN_TIMEOUT_SECS",
            raw.shutdown_timeout_secs.as_deref(),
            30,
        )),
        max_body_bytes: parse_or(p, "SBA_SERVER__MAX_BODY_BYTES", raw.max_body_bytes.as_deref(), 1 << 20),
    };
    collect_validation(
        p,
        server.validate(),
        &[("port", "PORT"), ("max_body_bytes", "SBA_SERVER__MAX_BODY_BYTES")],
    );
    server
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn port_overrides_the_default_port() {
        assert_eq!(settings_of(&[("PORT", "9191")]).unwrap().server.port, 9191);
    }
}
