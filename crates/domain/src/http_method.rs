//! [`HttpMethod`]: the request methods the service tells apart. Anything a client sends
//! becomes one of eight values, so a client inventing methods cannot grow a metric label
//! set or the rate limiter's key space (docs/security.md, "Unauthenticated load").

use std::fmt;

/// A request method, from a fixed set: the methods HTTP APIs use, and `Other` for every
/// other token a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    /// Any other method (`PROPFIND`, `FOO123`, ...).
    Other,
}

impl HttpMethod {
    /// The method named by `token`. Case is ignored (as rate-limit keys always did), so
    /// `get` and `GET` share a bucket; an unknown token is [`HttpMethod::Other`].
    pub fn classify(token: &str) -> Self {
        const KNOWN: [(&str, HttpMethod); 7] = [
            ("GET", HttpMethod::Get),
            ("HEAD", HttpMethod::Head),
            ("POST", HttpMethod::Post),
            ("PUT", HttpMethod::Put),
            ("PATCH", HttpMethod::Patch),
            ("DELETE", HttpMethod::Delete),
            ("OPTIONS", HttpMethod::Options),
        ];
        KNOWN.iter().find(|(name, _)| name.eq_ignore_ascii_case(token)).map_or(Self::Other, |(_, m)| *m)
    }

    /// The upper-case method name, or `other`, which no method token renders as once
    /// classified: the value of metric labels and of the method part of rate-limit keys.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_keep_their_name_and_any_other_token_is_other() {
        assert_eq!(HttpMethod::classify("GET").as_str(), "GET");
        assert_eq!(HttpMethod::classify("patch"), HttpMethod::Patch);
        assert_eq!(HttpMethod::classify("OPTIONS").as_str(), "OPTIONS");
        for invented in ["FOO123", "PROPFIND", "GETX", "", "other", "OTHER"] {
            assert_eq!(HttpMethod::classify(invented), HttpMethod::Other, "{invented}");
        }
        assert_eq!(HttpMethod::Other.to_string(), "other");
    }
}
