//! Database URLs in messages and logs, without their credentials.

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

/// Replaces the userinfo of any URL inside `text` (drivers sometimes echo the URL).
pub(crate) fn redact_url_in(text: &str) -> String {
    text.split(' ')
        .map(|word| match url::Url::parse(word) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("REDACTED"));
                parsed.to_string()
            }
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
        assert!(text.contains("REDACTED"));
    }
}
