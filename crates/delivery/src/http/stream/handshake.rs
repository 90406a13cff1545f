//! Where the handshake of `GET /v1/stream` carries its token: `Authorization: Bearer`, else
//! a `bearer.<jwt>` entry of `Sec-WebSocket-Protocol` (browsers cannot set headers on a
//! WebSocket), else the `access_token` query parameter. The authentication middleware reads
//! it through [`token`] for this route only: REST routes take the header alone.
//!
//! The query string of this route is never written anywhere: the access log and the
//! request metrics name the route template, not the URI.

use actix_web::HttpRequest;
use actix_web::http::header;

/// The prefix of the subprotocol entry carrying the token.
const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The query parameter carrying the token.
const QUERY_PARAMETER: &str = "access_token";

/// What the handshake presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Token(String),
    /// An `Authorization` header that is not valid text.
    Unreadable,
    Missing,
}

/// The token of a handshake, from the first transport that carries one.
pub fn token(req: &HttpRequest) -> Presented {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let Ok(text) = value.to_str() else { return Presented::Unreadable };
        return text
            .trim()
            .split_once(' ')
            .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
            .map_or(Presented::Missing, |(_, token)| Presented::Token(token.trim().to_owned()));
    }
    let from_protocols = subprotocols(req)
        .find_map(|entry| entry.strip_prefix(BEARER_PROTOCOL_PREFIX).filter(|token| !token.is_empty()));
    if let Some(token) = from_protocols {
        return Presented::Token(token.to_owned());
    }
    query_token(req.query_string()).map_or(Presented::Missing, Presented::Token)
}

/// Whether the client offers `protocol` in its `Sec-WebSocket-Protocol` list.
pub fn offers_subprotocol(req: &HttpRequest, protocol: &str) -> bool {
    subprotocols(req).any(|entry| entry == protocol)
}

/// The entries of every `Sec-WebSocket-Protocol` header, trimmed.
fn subprotocols(req: &HttpRequest) -> impl Iterator<Item = &str> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
}

/// The `access_token` parameter of a query string (percent-decoded), when present and not
/// empty.
fn query_token(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == QUERY_PARAMETER)
        .map(|(_, value)| value.into_owned())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn presented(request: TestRequest) -> Presented {
        token(&request.to_http_request())
    }

    #[test]
    fn the_authorization_header_comes_first() {
        let request = TestRequest::default()
            .uri("/v1/stream?access_token=from-query")
            .insert_header((header::AUTHORIZATION, "Bearer from-header"))
            .insert_header((header::SEC_WEBSOCKET_PROTOCOL, "sba.v1, bearer.from-protocol"));
        assert_eq!(presented(request), Presented::Token("from-header".into()));
    }

    #[test]
    fn a_bearer_subprotocol_entry_carries_the_token() {
        let request = TestRequest::default()
            .uri("/v1/stream?access_token=from-query")
            .insert_header((header::SEC_WEBSOCKET_PROTOCOL, "sba.v1, bearer.eyJ.a.b"));
        assert_eq!(presented(request), Presented::Token("eyJ.a.b".into()));
    }

    #[test]
    fn the_query_parameter_is_the_last_resort_and_is_percent_decoded() {
        let request = TestRequest::default()
            .uri("/v1/stream?x=1&access_token=a%2Eb.c")
            .insert_header((header::SEC_WEBSOCKET_PROTOCOL, "sba.v1"));
        assert_eq!(presented(request), Presented::Token("a.b.c".into()));
    }

    #[test]
    fn a_subprotocol_is_offered_only_as_a_whole_entry_of_any_list() {
        let request = TestRequest::default()
            .append_header((header::SEC_WEBSOCKET_PROTOCOL, "bearer.x"))
            .append_header((header::SEC_WEBSOCKET_PROTOCOL, "chat, sba.v1 "))
            .to_http_request();
        assert!(offers_subprotocol(&request, "sba.v1"));
        let request = TestRequest::default()
            .insert_header((header::SEC_WEBSOCKET_PROTOCOL, "sba.v1x, bearer.sba.v1"))
            .to_http_request();
        assert!(!offers_subprotocol(&request, "sba.v1"));
    }

    #[test]
    fn nothing_usable_is_missing_and_a_non_bearer_header_does_not_fall_through() {
        assert_eq!(presented(TestRequest::default().uri("/v1/stream?access_token=")), Presented::Missing);
        let basic = TestRequest::default()
            .uri("/v1/stream?access_token=t")
            .insert_header((header::AUTHORIZATION, "Basic dXNlcjpwYXNz"));
        assert_eq!(presented(basic), Presented::Missing, "a header that is there decides");
    }
}
