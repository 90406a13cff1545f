//! The `sba` binary's configuration behaviour, run as a real process with a controlled
//! environment.

use std::process::Output;

use crate::helpers::{process_text as text, sba_process};

fn sba(args: &[&str], env: &[(&str, &str)]) -> Output {
    let (mut command, dir) = sba_process(args);
    command.env("SBA_DATA_DIR", dir.join("data")).envs(env.iter().copied()).output().unwrap()
}

#[test]
fn production_with_an_empty_environment_exits_non_zero_listing_every_missing_setting() {
    let output = sba(&["serve"], &[("SBA_ENV", "production"), ("PORT", "1")]);
    let text = text(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    for setting in [
        "DATABASE_URL",
        "REDIS_URL",
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_JWT_SECRET or SBA_AUTH__JWT_SECRETS",
        "SBA_AUTH__ISSUER",
        "SBA_AUTH__AUDIENCE",
        "SBA_CORS__ALLOWED_ORIGINS",
    ] {
        assert!(text.contains(setting), "{setting} not listed in:\n{text}");
    }
    assert!(!text.contains("sba is serving"), "{text}");
}

#[test]
fn next_public_supabase_url_instead_of_supabase_url_still_fails() {
    let output = sba(
        &["config", "check"],
        &[
            ("SBA_ENV", "production"),
            ("DATABASE_URL", "postgres://sba@db:5432/sba"),
            ("REDIS_URL", "redis://cache:6379"),
            ("NEXT_PUBLIC_SUPABASE_URL", "https://abc.supabase.co"),
            ("SUPABASE_SERVICE_ROLE_KEY", "service-role"),
            ("SUPABASE_JWT_SECRET", "0123456789abcdef0123456789abcdef-secret"),
            ("SBA_AUTH__ISSUER", "https://abc.supabase.co/auth/v1"),
            ("SBA_AUTH__AUDIENCE", "authenticated"),
            ("SBA_CORS__ALLOWED_ORIGINS", "https://app.example.com"),
        ],
    );
    let text = text(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("SUPABASE_URL: is required in production"), "{text}");
    assert!(text.contains("NEXT_PUBLIC_SUPABASE_URL is set"), "{text}");
}

#[test]
fn config_check_prints_the_effective_configuration_without_secrets() {
    let output = sba(
        &["config", "check"],
        &[
            ("DATABASE_URL", "postgres://sba:hunter2-db@db:5432/sba"),
            ("SBA_AUTH__JWT_SECRETS", "very-secret-value-very-secret-value-42"),
            ("NEXT_PUBLIC_SUPABASE_ANON_KEY", "anon"),
        ],
    );
    let text = text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("environment") && text.contains("development"), "{text}");
    assert!(text.contains("configuration is valid"), "{text}");
    assert!(text.contains("NEXT_PUBLIC_SUPABASE_ANON_KEY is set and ignored"), "{text}");
    assert!(!text.contains("hunter2-db") && !text.contains("very-secret-value"), "secret leaked:\n{text}");
}

#[test]
fn dev_token_rejects_a_tenant_that_is_not_a_uuid() {
    let output = sba(&["dev-token", "--tenant", "acme", "--user", "alice"], &[]);
    assert!(!output.status.success());
    assert!(text(&output).contains("--tenant"), "{}", text(&output));
}

#[test]
fn migrate_status_reports_pending_then_applied_migrations() {
    let dir = std::env::temp_dir().join(format!("sba-migrate-{}", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}", dir.join("m.db").display());
    let env = [("DATABASE_URL", url.as_str())];
    let before = sba(&["migrate", "status"], &env);
    assert_eq!(before.status.code(), Some(1), "{}", text(&before));
    assert!(text(&before).contains("pending"), "{}", text(&before));

    assert!(sba(&["migrate", "up"], &env).status.success());
    let after = sba(&["migrate", "status"], &env);
    assert!(after.status.success(), "{}", text(&after));
    assert!(text(&after).contains("0 pending migration(s)"), "{}", text(&after));

    assert!(sba(&["migrate", "down", "--steps", "1"], &env).status.success());
    assert_eq!(sba(&["migrate", "status"], &env).status.code(), Some(1));
}
