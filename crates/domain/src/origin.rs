//! Web origins (`https://app.example.com`) as browsers send them in `Origin`: the only form
//! a CORS allow-list can match.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ValidationError;

/// An exact web origin: `http` or `https`, `://`, a host, an optional port, nothing else.
///
/// The host is a DNS name (labels of `a-z`, `0-9` and inner `-`, at most 63 characters
/// each and 253 in all), an IPv4 address (a name ending in a number must be one) or a
/// bracketed IPv6 address; the port is 1–65535 without leading zeros; everything is lower
/// case. `null`, `file:` origins, paths (a trailing slash included), queries, fragments and
/// user info are refused: a browser never sends them as an origin, and an allow-list entry
/// that cannot match is a mistake worth reporting. The SQL CHECK on `tenants.cors_origins`
/// states the same rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebOrigin(String);

const RULE: &str = "an origin is http(s)://host[:port] in lower case, without path, query or user info";

impl WebOrigin {
    /// # Errors
    /// An `origin` [`ValidationError`] saying which part breaks the rule (the text itself is
    /// not repeated: callers decide whether it may be shown).
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let invalid = |why: &str| ValidationError::new("origin", format!("{why} ({RULE})"));
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("it must be lower case"));
        }
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or_else(|| invalid("the scheme must be http:// or https://"))?;
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (address, after) =
                bracketed.split_once(']').ok_or_else(|| invalid("an IPv6 address needs its closing `]`"))?;
            if address.parse::<Ipv6Addr>().is_err() {
                return Err(invalid("the host is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| invalid("only a port may follow the host"))?),
            };
            (None, port)
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (Some(host), Some(port)),
                None => (Some(rest), None),
            }
        };
        if let Some(host) = host
            && !is_dns_name_or_ipv4(host)
        {
            return Err(invalid("the host must be a DNS name or an IP address, with nothing after it"));
        }
        if let Some(port) = port
            && !is_port(port)
        {
            return Err(invalid("the port must be a number from 1 to 65535"));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A DNS name, or an IPv4 address when its last label is a number (as URL parsers read it).
fn is_dns_name_or_ipv4(host: &str) -> bool {
    let Some(last) = host.rsplit('.').next() else { return false };
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return host.parse::<Ipv4Addr>().is_ok();
    }
    (1..=253).contains(&host.len())
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_port(text: &str) -> bool {
    !text.starts_with('0')
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u16>().is_ok_and(|p| p >= 1)
}

impl fmt::Display for WebOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for WebOrigin {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_parse_and_read_back_unchanged() {
        for origin in [
            "https://app.example.com",
            "http://localhost:3000",
            "https://a.example:65535",
            "https://a.example:1",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
            "https://[2001:db8::1]",
            "https://xn--bcher-kva.example",
            "https://my-app.example",
        ] {
            let parsed = WebOrigin::parse(origin).unwrap();
            assert_eq!(
                (parsed.as_str(), parsed.as_ref(), parsed.to_string().as_str()),
                (origin, origin, origin)
            );
            assert_eq!(parsed.into_string(), origin);
        }
    }

    #[test]
    fn anything_but_an_exact_lower_case_origin_is_refused() {
        for text in [
            "",
            "null",
            "*",
            "file:///x",
            "file://",
            "ftp://a.example",
            "https://",
            "https://a.example/",
            "https://a.example/path",
            "https://a.example?x=1",
            "https://a.example#top",
            "https://user@a.example",
            "https://user:pw@a.example",
            "HTTPS://a.example",
            "https://A.example",
            "https://a.example:0",
            "https://a.example:65536",
            "https://a.example:99999999",
            "https://a.example:080",
            "https://a.example:",
            "https://a.example:x",
            "https://a.example:80:80",
            "https://[::1",
            "https://[::1]x",
            "https://[::1]/",
            "https://[2001:DB8::1]",
            "https://[fe80::1%eth0]",
            "https://::1",
            "https://256.1.1.1",
            "https://01.1.1.1",
            "https://0x7f.1",
            "https://-a.example",
            "https://a-.example",
            "https://a..example",
            "https://a.example.",
            "https://a_b.example",
            "https://a example",
            "https://ä.example",
            " https://a.example",
            "https://a.example\n",
        ] {
            assert!(WebOrigin::parse(text).is_err(), "{text:?} was accepted");
        }
        let long_label = format!("https://{}.example", "a".repeat(64));
        assert!(WebOrigin::parse(&long_label).is_err());
        let long_name = format!("https://{}a.example", "a.".repeat(126));
        assert!(WebOrigin::parse(&long_name).is_err());
    }

    #[test]
    fn refusals_say_what_is_wrong_without_repeating_the_text() {
        let error = WebOrigin::parse("https://user:s3cret@a.example").unwrap_err();
        assert_eq!(error.field, "origin");
        assert!(!error.message.contains("s3cret"), "{}", error.message);
        assert!(WebOrigin::parse("https://A.example").unwrap_err().message.contains("lower case"));
    }
}
