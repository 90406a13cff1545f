//! The browser playground, `GET /playground` (development by default,
//! `SBA_PLAYGROUND__ENABLED`): one page that mints a development token ([`dev_token`]),
//! starts an `echo` run and shows its events as they stream in over `GET /v1/stream`, with
//! cancel and resume-from-seq.
//!
//! The page, its script and its style are compiled into the binary and served from three
//! routes, so the Content-Security-Policy allows nothing but this origin: no inline script
//! or style (no hash to keep in step with the files), no other host, no framing. The
//! routes are not API routes: no token, no rate limit, not in the OpenAPI document.

pub mod dev_token;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};

use super::AppState;
use super::error;

/// The page's path.
pub const PAGE: &str = "/playground";

/// What the page may load and where it may connect: its own origin only (`'self'` covers
/// `ws:`/`wss:` to the same host in CSP Level 3). `img-src data:` is for the empty
/// `data:` favicon, which keeps the browser from asking for `/favicon.ico`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Registers the page and its assets when the playground is on, and `POST /dev/token` when
/// the state has an issuer (development only). Unregistered, they answer 404 like any
/// unknown path.
pub(super) fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    if state.playground {
        for (path, content_type, body) in [
            (PAGE, "text/html; charset=utf-8", INDEX_HTML),
            ("/playground/app.js", "text/javascript; charset=utf-8", APP_JS),
            ("/playground/app.css", "text/css; charset=utf-8", APP_CSS),
        ] {
            cfg.service(
                web::resource(path)
                    .route(web::get().to(move || async move { asset(content_type, body) }))
                    .default_service(web::to(error::method_not_allowed)),
            );
        }
    }
    if let Some(issuer) = &state.dev_tokens {
        cfg.service(
            web::resource(dev_token::ROUTE)
                .app_data(web::Data::new(issuer.clone()))
                .route(web::post().to(dev_token::mint))
                .default_service(web::to(error::method_not_allowed)),
        );
    }
}

/// One of the playground's files, with the policy and headers every one of them carries.
fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // Revalidated on every load, so a rebuilt binary's page is never mixed with an old script.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_but_its_own_files() {
        for reference in ["/playground/app.js", "/playground/app.css"] {
            assert!(INDEX_HTML.contains(reference), "{reference}");
        }
        // No other origin is named anywhere, and nothing is inline for the policy to refuse.
        for file in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!file.contains("http://") && !file.contains("https://") && !file.contains("//cdn"));
        }
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("<style"));
        let attributes =
            INDEX_HTML.split(|c: char| c.is_whitespace() || c == '<').filter_map(|word| word.split_once('='));
        for (name, _) in attributes {
            assert!(
                name != "style" && !name.starts_with("on"),
                "an inline `{name}` attribute would be refused by the policy"
            );
        }
    }
}
