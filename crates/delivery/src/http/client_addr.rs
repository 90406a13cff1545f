//! The client's address: the socket peer, or, when the peer is a trusted proxy
//! (`SBA_SERVER__TRUSTED_PROXIES`), the right-most untrusted address of `X-Forwarded-For`.
//! Worked out once per request; rate-limit keys and audit entries (`RequestContext.ip`) use
//! it, never `peer_addr` directly (docs/security.md, "Client address and proxies").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage as _, HttpRequest, web};
use ipnet::IpNet;

use crate::http::AppState;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The networks whose `X-Forwarded-For` is believed. Empty (the default): the header is
/// ignored and the socket peer is the client.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks.into())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&ip))
    }

    /// The client of a request from `peer` carrying the `X-Forwarded-For` values `forwarded`
    /// (in header order). Proxies append the address they received from, so the chain is
    /// read from the right: the first address that is not a trusted proxy is the client;
    /// when every address is trusted, the left-most. An untrusted peer's header is ignored,
    /// and a malformed entry met on the way falls back to the peer (entries left of the
    /// client, which the client itself may have written, are never read). IPv4-mapped IPv6
    /// addresses count as IPv4.
    pub fn client<'h>(
        &self,
        peer: Option<IpAddr>,
        forwarded: impl DoubleEndedIterator<Item = &'h HeaderValue>,
    ) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        let mut left_most = None;
        for value in forwarded.rev() {
            let Ok(text) = value.to_str() else {
                tracing::debug!(%peer, "X-Forwarded-For is not ASCII; the peer is the client");
                return Some(peer);
            };
            for entry in text.rsplit(',') {
                let Some(ip) = parse_entry(entry.trim()) else {
                    tracing::debug!(%peer, "X-Forwarded-For has a malformed entry; the peer is the client");
                    return Some(peer);
                };
                let ip = ip.to_canonical();
                if !self.trusts(ip) {
                    return Some(ip);
                }
                left_most = Some(ip);
            }
        }
        Some(left_most.unwrap_or(peer))
    }
}

/// One `X-Forwarded-For` entry: `192.0.2.7`, `192.0.2.7:5000`, `2001:db8::7`, `[2001:db8::7]`
/// or `[2001:db8::7]:5000`. Anything else (`unknown`, obfuscated names, empty) is malformed.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        let valid_port = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return valid_port.then(|| address.parse::<Ipv6Addr>().ok().map(IpAddr::V6)).flatten();
    }
    let (address, port) = entry.split_once(':')?;
    is_port(port).then(|| address.parse::<Ipv4Addr>().ok().map(IpAddr::V4)).flatten()
}

fn is_port(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

/// The client's address, kept in the request's extensions.
#[derive(Debug, Clone, Copy)]
struct ClientAddr(Option<IpAddr>);

/// The client of `req` (see [`TrustedProxies::client`]); `None` when the peer is unknown.
/// Worked out on first use and kept for the rest of the request.
pub fn client_addr(req: &HttpRequest) -> Option<IpAddr> {
    if let Some(ClientAddr(known)) = req.extensions().get::<ClientAddr>() {
        return *known;
    }
    let peer = req.peer_addr().map(|addr| addr.ip());
    let client = match req.app_data::<web::Data<AppState>>() {
        Some(state) => state.trusted_proxies.client(peer, req.headers().get_all(X_FORWARDED_FOR)),
        None => peer.map(|ip| ip.to_canonical()),
    };
    req.extensions_mut().insert(ClientAddr(client));
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    fn client(proxies: &TrustedProxies, peer: &str, headers: &[&str]) -> Option<IpAddr> {
        let values: Vec<HeaderValue> = headers.iter().map(|h| HeaderValue::from_str(h).unwrap()).collect();
        proxies.client(ip(peer), values.iter())
    }

    #[test]
    fn without_trusted_proxies_the_forwarded_header_is_ignored() {
        let none = TrustedProxies::default();
        assert_eq!(client(&none, "198.51.100.1", &["203.0.113.9"]), ip("198.51.100.1"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&trusted, "198.51.100.1", &["203.0.113.9"]), ip("198.51.100.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_address_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // The client wrote `1.2.3.4` itself; the proxies appended the rest.
        assert_eq!(client(&trusted, "10.0.0.2", &["1.2.3.4, 203.0.113.9, 10.0.0.1"]), ip("203.0.113.9"));
        assert_eq!(
            client(&trusted, "10.0.0.2", &["1.2.3.4", "203.0.113.9", "10.0.0.1"]),
            ip("203.0.113.9"),
            "several headers read as one list"
        );
    }

    #[test]
    fn when_every_forwarded_address_is_trusted_the_left_most_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&trusted, "10.0.0.2", &["10.1.1.1, 10.0.0.1"]), ip("10.1.1.1"));
        assert_eq!(client(&trusted, "10.0.0.2", &[]), ip("10.0.0.2"), "no header: the peer");
    }

    #[test]
    fn a_malformed_entry_on_the_way_falls_back_to_the_peer() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&trusted, "10.0.0.2", &["203.0.113.9, bogus"]), ip("10.0.0.2"));
        assert_eq!(client(&trusted, "10.0.0.2", &["203.0.113.9,,10.0.0.1"]), ip("10.0.0.2"));
        assert_eq!(client(&trusted, "10.0.0.2", &["unknown"]), ip("10.0.0.2"));
        // Left of the client the header is the client's own text, and never read.
        assert_eq!(client(&trusted, "10.0.0.2", &["bogus, 203.0.113.9"]), ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_entries_may_carry_ports_and_brackets() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&trusted, "10.0.0.2", &["203.0.113.9:4711"]), ip("203.0.113.9"));
        assert_eq!(client(&trusted, "10.0.0.2", &["[2001:db8::7]:4711"]), ip("2001:db8::7"));
        assert_eq!(client(&trusted, "10.0.0.2", &["[2001:db8::7]"]), ip("2001:db8::7"));
        assert_eq!(client(&trusted, "10.0.0.2", &["2001:db8::7"]), ip("2001:db8::7"));
        assert_eq!(client(&trusted, "10.0.0.2", &["203.0.113.9:99999"]), ip("10.0.0.2"));
        assert_eq!(client(&trusted, "10.0.0.2", &["[203.0.113.9]"]), ip("10.0.0.2"));
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4_for_trust_and_result() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&trusted, "::ffff:10.0.0.2", &["::ffff:203.0.113.9"]), ip("203.0.113.9"));
    }

    #[test]
    fn no_peer_means_no_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let value = HeaderValue::from_static("203.0.113.9");
        assert_eq!(trusted.client(None, std::iter::once(&value)), None);
    }
}
