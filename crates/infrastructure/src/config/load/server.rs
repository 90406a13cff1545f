//! `[server]`: the HTTP listener.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use validator::Validate as _;

use super::parse::{collect_validation, parse_or};
use super::{Ctx, Problems};
use crate::config::settings::ServerSettings;

raw_section! {
    pub(super) struct RawServer {
        host: Option<String>,
        port: Option<String>,
        shutdown_timeout_secs: Option<String>,
        max_body_bytes: Option<String>,
        trusted_proxies: Option<String>,
        admin_port: Option<String>,
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
        trusted_proxies: raw
            .trusted_proxies
            .as_deref()
            .map(|text| trusted_proxies(p, text))
            .unwrap_or_default(),
        admin_port: raw
            .admin_port
            .as_deref()
            .map(|text| parse_or(p, "SBA_SERVER__ADMIN_PORT", Some(text), 0)),
    };
    match server.admin_port {
        Some(0) => p.push("SBA_SERVER__ADMIN_PORT", "must be a TCP port between 1 and 65535"),
        Some(admin) if admin == server.port => {
            p.push("SBA_SERVER__ADMIN_PORT", "must differ from PORT (the public port)");
        }
        _ => {}
    }
    collect_validation(
        p,
        server.validate(),
        &[("port", "PORT"), ("max_body_bytes", "SBA_SERVER__MAX_BODY_BYTES")],
    );
    server
}

/// `SBA_SERVER__TRUSTED_PROXIES`: networks (`10.0.0.0/8`) or single addresses
/// (`192.0.2.10`), separated by commas or spaces. Host bits of a network are cleared.
fn trusted_proxies(problems: &mut Problems, text: &str) -> Vec<IpNet> {
    let mut networks = Vec::new();
    for entry in text.split([',', ' ', '\t', '\n']).filter(|e| !e.is_empty()) {
        let parsed = entry.parse::<IpNet>().or_else(|_| entry.parse::<IpAddr>().map(IpNet::from));
        if let Ok(network) = parsed {
            networks.push(network.trunc());
        } else {
            let shown: String = entry.chars().take(45).collect();
            problems.push(
                "SBA_SERVER__TRUSTED_PROXIES",
                format!("`{shown}` is not an IP network (`10.0.0.0/8`) or address"),
            );
        }
    }
    networks
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn port_overrides_the_default_port() {
        assert_eq!(settings_of(&[("PORT", "9191")]).unwrap().server.port, 9191);
    }

    #[test]
    fn trusted_proxies_are_empty_by_default_and_take_networks_and_addresses() {
        assert!(settings_of(&[]).unwrap().server.trusted_proxies.is_empty());
        let settings = settings_of(&[(
            "SBA_SERVER__TRUSTED_PROXIES",
            "10.0.0.0/8, 192.0.2.10 2001:db8::/32,10.1.2.3/16",
        )])
        .unwrap();
        let shown: Vec<String> = settings.server.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.10/32", "2001:db8::/32", "10.1.0.0/16"]);
    }

    #[test]
    fn every_malformed_trusted_proxy_is_listed_with_the_other_problems() {
        let problems = settings_of(&[
            ("SBA_SERVER__TRUSTED_PROXIES", "10.0.0.0/33, proxy.internal, 192.0.2.1"),
            ("PORT", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(problems.contains("`10.0.0.0/33` is not an IP network"), "{problems}");
        assert!(problems.contains("`proxy.internal` is not an IP network"), "{problems}");
        assert!(problems.contains("PORT"), "{problems}");
    }

    #[test]
    fn the_admin_port_is_unset_by_default_and_must_differ_from_the_public_port() {
        assert_eq!(settings_of(&[]).unwrap().server.admin_port, None);
        assert_eq!(settings_of(&[("SBA_SERVER__ADMIN_PORT", "9090")]).unwrap().server.admin_port, Some(9090));
        let problems =
            settings_of(&[("PORT", "9090"), ("SBA_SERVER__ADMIN_PORT", "9090")]).unwrap_err().to_string();
        assert!(problems.contains("SBA_SERVER__ADMIN_PORT"), "{problems}");
        let problems = settings_of(&[("SBA_SERVER__ADMIN_PORT", "0")]).unwrap_err().to_string();
        assert!(problems.contains("SBA_SERVER__ADMIN_PORT"), "{problems}");
    }
}
