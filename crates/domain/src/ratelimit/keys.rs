//! Rate-limit keys: the bodies of the keys of docs/architecture.md ("Redis key schema"),
//! built from typed parts so that two different callers never share a bucket (ADR 0012). The `sba:rl:` prefix is the
//! Redis adapter's; the in-process limiter uses the bodies as they are.
//!
//! Each part is escaped for its key's separator: `%` always becomes `%25`, and the
//! separator itself (`|` in HTTP keys, `:` in WebSocket keys) becomes `%7C` or `%3A`. The
//! separators left in a rendered key are then exactly the ones between its parts, so
//! different parts always render differently, while ordinary values (UUIDs, IPv4
//! addresses, user ids without `:` or `%`, methods, route templates) read exactly as
//! before. IPv6 clients are keyed by their /64 network, which contains `:`, so in WebSocket keys
//! they read `2001%3Adb8%3A%3A/64`.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv6Addr};

use crate::HttpMethod;
use crate::ids::{TenantId, UserId};

/// The HTTP key body `{tenant}|{ip}|{METHOD}|{route template}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HttpLimitKey<'a> {
    /// The caller's tenant; `None` for unauthenticated requests, which are limited per IP
    /// (rendered `-`, which no tenant id can be).
    pub tenant: Option<TenantId>,
    /// The client's address (delivery resolves trusted proxies); `None` when unknown
    /// (rendered `unknown`). IPv6 clients are keyed by their /64.
    pub ip: Option<IpAddr>,
    /// The request method as sent; rendered through [`HttpMethod::classify`], so any
    /// method outside the fixed set shares the one `other` key part.
    pub method: &'a str,
    /// The route *template* (`/v1/runs/{run_id}`), never the raw path, so ids do not
    /// create a key each.
    pub route: &'a str,
}

/// The HTTP key body `{tenant}|*|{METHOD}|{route template}` of a tenant's aggregate bucket:
/// every address of the tenant together (`SBA_RATE_LIMIT__TENANT_AGGREGATE_FACTOR`). `*`
/// is never a rendered address, so it never meets an [`HttpLimitKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantAggregateKey<'a> {
    pub tenant: TenantId,
    /// The request method as sent; rendered through [`HttpMethod::classify`], as in
    /// [`HttpLimitKey`].
    pub method: &'a str,
    /// The route template, as in [`HttpLimitKey`].
    pub route: &'a str,
}

/// The WebSocket key body `ws:{tenant}:{user}:{ip}:{event}` of one client operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WsLimitKey<'a> {
    pub tenant: TenantId,
    pub user: &'a UserId,
    /// The client's address; `None` when unknown (rendered `unknown`). IPv6 clients are
    /// keyed by their /64.
    pub ip: Option<IpAddr>,
    /// The operation (`subscribe`, `ping`, ...).
    pub op: &'a str,
}

/// A rate-limit key of either kind. An HTTP key starts with a tenant id or `-`, a
/// WebSocket key with `ws:`, so the two kinds never meet either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitKey<'a> {
    Http(HttpLimitKey<'a>),
    TenantAggregate(TenantAggregateKey<'a>),
    Ws(WsLimitKey<'a>),
}

impl fmt::Display for HttpLimitKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut part = Escaped { out: f, separator: '|' };
        match self.tenant {
            Some(tenant) => write!(part, "{tenant}")?,
            None => part.write_char('-')?,
        }
        part.out.write_char('|')?;
        write_ip(&mut part, self.ip)?;
        part.out.write_char('|')?;
        part.write_str(HttpMethod::classify(self.method).as_str())?;
        part.out.write_char('|')?;
        part.write_str(self.route)
    }
}

impl fmt::Display for TenantAggregateKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut part = Escaped { out: f, separator: '|' };
        write!(part, "{}", self.tenant)?;
        part.out.write_str("|*|")?;
        part.write_str(HttpMethod::classify(self.method).as_str())?;
        part.out.write_char('|')?;
        part.write_str(self.route)
    }
}

impl fmt::Display for WsLimitKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ws:")?;
        let mut part = Escaped { out: f, separator: ':' };
        write!(part, "{}", self.tenant)?;
        part.out.write_char(':')?;
        part.write_str(self.user.as_str())?;
        part.out.write_char(':')?;
        write_ip(&mut part, self.ip)?;
        part.out.write_char(':')?;
        part.write_str(self.op)
    }
}

impl fmt::Display for RateLimitKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(key) => key.fmt(f),
            Self::TenantAggregate(key) => key.fmt(f),
            Self::Ws(key) => key.fmt(f),
        }
    }
}

impl<'a> From<HttpLimitKey<'a>> for RateLimitKey<'a> {
    fn from(key: HttpLimitKey<'a>) -> Self {
        Self::Http(key)
    }
}

impl<'a> From<TenantAggregateKey<'a>> for RateLimitKey<'a> {
    fn from(key: TenantAggregateKey<'a>) -> Self {
        Self::TenantAggregate(key)
    }
}

impl<'a> From<WsLimitKey<'a>> for RateLimitKey<'a> {
    fn from(key: WsLimitKey<'a>) -> Self {
        Self::Ws(key)
    }
}

/// Writes the client part of a key: an IPv4 address as it is (an IPv4-mapped IPv6 address
/// counts as IPv4), an IPv6 address as its /64 network. A single IPv6 host is usually given
/// a whole /64, so keying by the full address would give one client 2^64 buckets.
fn write_ip(part: &mut Escaped<'_, '_>, ip: Option<IpAddr>) -> fmt::Result {
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => write!(part, "{v4}"),
        Some(IpAddr::V6(v6)) => {
            let network = Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX));
            write!(part, "{network}/64")
        }
        None => part.write_str("unknown"),
    }
}

/// Writes one part of a key with `%` and the key's separator percent-encoded.
struct Escaped<'f, 'a> {
    out: &'f mut fmt::Formatter<'a>,
    separator: char,
}

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(['%', self.separator]) {
            self.out.write_str(&rest[..at])?;
            // Both are ASCII: one byte, two hex digits.
            write!(self.out, "%{:02X}", rest.as_bytes()[at])?;
            rest = &rest[at + 1..];
        }
        self.out.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn tenant() -> TenantId {
        TenantId::from_uuid(Uuid::parse_str("6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11").unwrap())
    }

    fn ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn ordinary_values_render_exactly_as_the_key_schema_shows() {
        let http = HttpLimitKey {
            tenant: Some(tenant()),
            ip: ip("203.0.113.7"),
            method: "get",
            route: "/v1/runs/{run_id}",
        };
        assert_eq!(
            http.to_string(),
            "6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11|203.0.113.7|GET|/v1/runs/{run_id}"
        );
        let anonymous = HttpLimitKey { tenant: None, ip: ip("::1"), method: "POST", route: "/v1/runs" };
        assert_eq!(anonymous.to_string(), "-|::/64|POST|/v1/runs", "`:` needs no escape in HTTP keys");
        let unknown = HttpLimitKey { ip: None, ..anonymous };
        assert_eq!(unknown.to_string(), "-|unknown|POST|/v1/runs");

        let alice = user("alice");
        let ws = WsLimitKey { tenant: tenant(), user: &alice, ip: ip("10.0.0.1"), op: "subscribe" };
        assert_eq!(ws.to_string(), "ws:6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11:alice:10.0.0.1:subscribe");
        assert_eq!(RateLimitKey::from(ws).to_string(), ws.to_string());
        assert_eq!(RateLimitKey::from(http).to_string(), http.to_string());
    }

    #[test]
    fn parts_holding_a_separator_no_longer_share_a_websocket_bucket() {
        let (u2, u) = (user("u:2"), user("u"));
        let first = WsLimitKey { tenant: tenant(), user: &u2, ip: ip("1::8"), op: "subscribe" };
        let second = WsLimitKey { tenant: tenant(), user: &u, ip: ip("2:1::8"), op: "subscribe" };
        assert_ne!(first.to_string(), second.to_string());
        assert_eq!(
            first.to_string(),
            "ws:6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11:u%3A2:1%3A%3A/64:subscribe",
            "IPv6 addresses are escaped in WebSocket keys"
        );
        assert_eq!(second.to_string(), "ws:6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11:u:2%3A1%3A%3A/64:subscribe");
    }

    #[test]
    fn percent_is_always_escaped_and_each_key_escapes_its_own_separator() {
        let odd = user("50%|x:y");
        let ws = WsLimitKey { tenant: tenant(), user: &odd, ip: None, op: "ping" };
        assert_eq!(ws.to_string(), "ws:6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11:50%25|x%3Ay:unknown:ping");
        // `%3A` in a user id is not `:` escaped: it reads `%253A`.
        let encoded = user("u%3A2");
        let lookalike = WsLimitKey { user: &encoded, ..ws };
        assert_eq!(lookalike.to_string(), "ws:6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11:u%253A2:unknown:ping");
        let http = HttpLimitKey { tenant: None, ip: None, method: "GET", route: "/a|b%c" };
        assert_eq!(http.to_string(), "-|unknown|GET|/a%7Cb%25c");
    }

    #[test]
    fn invented_methods_share_one_key_part() {
        let key = |method| HttpLimitKey { tenant: None, ip: None, method, route: "/v1/runs" }.to_string();
        assert_eq!(key("FOO123"), "-|unknown|other|/v1/runs");
        assert_eq!(key("m|x%"), key("PROPFIND"), "every method outside the set is one bucket");
        assert_eq!(key("delete"), "-|unknown|DELETE|/v1/runs");
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_network() {
        let key = |addr: &str| HttpLimitKey { tenant: None, ip: ip(addr), method: "GET", route: "/v1/me" };
        assert_eq!(key("2001:db8:1:2::1").to_string(), "-|2001:db8:1:2::/64|GET|/v1/me");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff").to_string(), key("2001:db8:1:2::1").to_string());
        assert_ne!(key("2001:db8:1:3::1").to_string(), key("2001:db8:1:2::1").to_string());
        let alice = user("alice");
        let ws = WsLimitKey { tenant: tenant(), user: &alice, ip: ip("2001:db8::7"), op: "ping" };
        assert_eq!(ws.to_string(), "ws:6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11:alice:2001%3Adb8%3A%3A/64:ping");
    }

    #[test]
    fn ipv4_mapped_ipv6_clients_count_as_ipv4() {
        let key = |addr: &str| HttpLimitKey { tenant: None, ip: ip(addr), method: "GET", route: "/v1/me" };
        assert_eq!(key("::ffff:203.0.113.7").to_string(), key("203.0.113.7").to_string());
        assert_eq!(key("::ffff:203.0.113.7").to_string(), "-|203.0.113.7|GET|/v1/me");
    }

    #[test]
    fn a_tenants_aggregate_key_names_every_address_and_no_single_one() {
        let aggregate = TenantAggregateKey { tenant: tenant(), method: "get", route: "/v1/runs" };
        assert_eq!(aggregate.to_string(), "6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11|*|GET|/v1/runs");
        assert_eq!(RateLimitKey::from(aggregate).to_string(), aggregate.to_string());
        let single = HttpLimitKey { tenant: Some(tenant()), ip: None, method: "GET", route: "/v1/runs" };
        assert_ne!(single.to_string(), aggregate.to_string());
        let invented = TenantAggregateKey { tenant: tenant(), method: "m|x%", route: "/v1/runs" };
        assert_eq!(invented.to_string(), "6f1c1a52-6a4e-4b8e-9a53-0c3f0f5d2b11|*|other|/v1/runs");
    }
}
