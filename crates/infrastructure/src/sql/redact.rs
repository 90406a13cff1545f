//! URLs in messages, logs and `sba config check`, without their credentials: one redaction
//! for every URL SBA prints (database, Redis, Supabase, JWKS, OTLP).

/// What replaces a credential; plain letters, so the URL stays a valid URL.
const REDACTED: &str = "REDACTED";

/// `postgres (host:port/db)`, without user or password.
pub(crate) fn describe_postgres(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => format!(
            "postgres ({}:{}{})",
            parsed.host_str().unwrap_or("localhost"),
            parsed.port().unwrap_or(5432),
            parsed.path()
        ),
        Err(_) => "postgres".to_owned(),
    }
}

/// `url` with its user info replaced by `REDACTED` and the value of every query parameter
/// that names a credential (`password`, `secret`, `token`, `key`, ...) too. Text that does
/// not parse as a URL is replaced whole: it could be anything.
pub(crate) fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url.trim()) else { return REDACTED.to_owned() };
    let had_user_info = !parsed.username().is_empty() || parsed.password().is_some();
    if had_user_info && (parsed.set_username("").is_err() || parsed.set_password(None).is_err()) {
        return REDACTED.to_owned();
    }
    if let Some(query) = parsed.query().map(redact_query) {
        parsed.set_query(Some(&query));
    }
    let text = parsed.to_string();
    match text.split_once("://") {
        Some((scheme, rest)) if had_user_info => format!("{scheme}://{REDACTED}@{rest}"),
        _ => text,
    }
}

/// The query with the value of each credential-like parameter replaced; the other
/// parameters are kept byte for byte.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if names_a_credential(name) => format!("{name}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn names_a_credential(name: &str) -> bool {
    let name: String = url::form_urlencoded::parse(format!("{name}=").as_bytes())
        .map(|(name, _)| name.to_lowercase())
        .collect();
    ["pass", "pwd", "secret", "token", "key", "auth", "credential", "signature"]
        .iter()
        .any(|word| name.contains(word))
}

/// Redacts every URL inside `text` that carries credentials (drivers sometimes echo the
/// URL).
pub(crate) fn redact_url_in(text: &str) -> String {
    text.split(' ')
        .map(|word| match url::Url::parse(word) {
            Ok(parsed) if parsed.password().is_some() || !parsed.username().is_empty() => redact_url(word),
            _ => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_of_a_postgres_url_has_no_credentials() {
        let text = describe_postgres("postgres://app:s3cret@db.internal:6543/sba?sslmode=require");
        assert_eq!(text, "postgres (db.internal:6543/sba)");
    }

    #[test]
    fn passwords_in_driver_messages_are_redacted() {
        let text = redact_url_in("cannot reach postgres://app:s3cret@db:5432/sba now");
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(text, "cannot reach postgres://REDACTED@db:5432/sba now");
    }

    #[test]
    fn redacted_urls_keep_neither_user_info_nor_credential_query_values() {
        for (url, redacted) in [
            ("postgres://app:s3cret@db:5432/sba", "postgres://REDACTED@db:5432/sba"),
            ("postgres://app@db:5432/sba", "postgres://REDACTED@db:5432/sba"),
            ("redis://:s3cret@cache:6379/0", "redis://REDACTED@cache:6379/0"),
            (
                "postgresql://db/sba?user=app&password=s3cret&sslmode=require",
                "postgresql://db/sba?user=app&password=REDACTED&sslmode=require",
            ),
            ("https://user:s3cret@abc.supabase.co/", "https://REDACTED@abc.supabase.co/"),
            (
                "https://keys.example/jwks.json?apikey=s3cret",
                "https://keys.example/jwks.json?apikey=REDACTED",
            ),
            (
                "http://collector:4317/?Access_Token=s3cret&x=1",
                "http://collector:4317/?Access_Token=REDACTED&x=1",
            ),
            ("https://abc.supabase.co/", "https://abc.supabase.co/"),
            ("not a url s3cret", "REDACTED"),
        ] {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }
}
