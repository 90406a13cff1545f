//! `[auth]`: how tokens are verified (HS256 secrets, JWKS) and who the platform tenant is.

use std::path::Path;
use std::time::Duration;

use sba_domain::TenantId;
use secrecy::{ExposeSecret as _, SecretString};
use validator::Validate as _;

use super::parse::{collect_validation, parse_or, secure_url};
use super::{Ctx, LoadOptions};
use crate::config::dev_secret;
use crate::config::settings::{AuthSettings, SecretSource};

/// The shortest HS256 secret accepted: 256 bits, as RFC 7518 §3.2 requires.
const MIN_SECRET_BYTES: usize = 32;

raw_section! {
    pub(super) struct RawAuth {
        jwt_secrets: Option<SecretString>,
        supabase_jwt_secret: Option<SecretString>,
        jwks_url: Option<String>,
        issuer: Option<String>,
        audience: Option<String>,
        leeway_secs: Option<String>,
        platform_tenant_id: Option<String>,
    }
}

pub(super) fn auth_settings(
    ctx: &mut Ctx<'_>,
    raw: RawAuth,
    data_dir: &Path,
    options: &LoadOptions,
) -> AuthSettings {
    let mut secrets: Vec<SecretString> = Vec::new();
    if let Some(secret) = raw.supabase_jwt_secret {
        secrets.push(secret);
    }
    if let Some(list) = raw.jwt_secrets {
        secrets.extend(
            list.expose_secret()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| SecretString::from(s.to_owned())),
        );
    }
    let secrets = dedup_secrets(secrets);
    if secrets.iter().any(|s| s.expose_secret().len() < MIN_SECRET_BYTES) {
        ctx.problems.push(
            "SUPABASE_JWT_SECRET / SBA_AUTH__JWT_SECRETS",
            format!("every HS256 secret must be at least {MIN_SECRET_BYTES} bytes long"),
        );
    }
    let jwks_url = raw
        .jwks_url
        .as_deref()
        .and_then(|url| secure_url(&mut ctx.problems, "SBA_AUTH__JWKS_URL", url, ctx.production));
    let configured = !secrets.is_empty() || jwks_url.is_some();
    if ctx.production {
        if !configured {
            let hint = ctx.public_hint("SUPABASE_JWT_SECRET");
            ctx.problems.push(
                "SUPABASE_JWT_SECRET or SBA_AUTH__JWT_SECRETS",
                format!("a JWT verification key is required in production{hint}"),
            );
        }
        ctx.require(raw.issuer.is_some(), "SBA_AUTH__ISSUER", "SBA_AUTH__ISSUER");
        ctx.require(raw.audience.is_some(), "SBA_AUTH__AUDIENCE", "SBA_AUTH__AUDIENCE");
    }
    let leeway = Duration::from_secs(parse_or(
        &mut ctx.problems,
        "SBA_AUTH__LEEWAY_SECS",
        raw.leeway_secs.as_deref(),
        30,
    ));

    let (secrets, secret_source, issuer, audience) = if configured || ctx.production {
        (secrets, SecretSource::Configured, raw.issuer, raw.audience)
    } else {
        let path = dev_secret::path_in(data_dir);
        let secret = if options.create_dev_secret {
            dev_secret::read_or_create(&path).map(Some)
        } else {
            dev_secret::read(&path)
        };
        let secrets = match secret {
            Ok(secret) => secret.into_iter().collect(),
            Err(e) => {
                ctx.problems.push("development JWT secret", format!("{e:#}"));
                Vec::new()
            }
        };
        let issuer = raw.issuer.or_else(|| Some("sba-dev".to_owned()));
        let audience = raw.audience.or_else(|| Some("sba".to_owned()));
        (secrets, SecretSource::GeneratedFile(path), issuer, audience)
    };
    let platform_tenant = raw.platform_tenant_id.as_deref().and_then(|text| {
        text.trim()
            .parse::<TenantId>()
            .map_err(|_| ctx.problems.push("SBA_AUTH__PLATFORM_TENANT_ID", "must be a tenant UUID"))
            .ok()
    });
    let auth = AuthSettings { secrets, secret_source, jwks_url, issuer, audience, leeway, platform_tenant };
    collect_validation(&mut ctx.problems, auth.validate(), &[("leeway", "SBA_AUTH__LEEWAY_SECS")]);
    auth
}

/// Distinct secrets only, in their given order: verifying twice with one key proves nothing.
fn dedup_secrets(secrets: Vec<SecretString>) -> Vec<SecretString> {
    let mut seen = std::collections::HashSet::new();
    secrets.into_iter().filter(|s| seen.insert(s.expose_secret().to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn secrets_from_both_variables_are_combined_first_signing() {
        let settings = settings_of(&[
            ("SUPABASE_JWT_SECRET", "supabase-secret-supabase-secret-123"),
            (
                "SBA_AUTH__JWT_SECRETS",
                "next-secret-next-secret-next-secret, old-secret-old-secret-old-secret-1",
            ),
        ])
        .unwrap();
        let secrets: Vec<_> = settings.auth.secrets.iter().map(|s| s.expose_secret().to_owned()).collect();
        assert_eq!(
            secrets,
            [
                "supabase-secret-supabase-secret-123",
                "next-secret-next-secret-next-secret",
                "old-secret-old-secret-old-secret-1"
            ]
        );
        assert_eq!(settings.auth.secret_source, SecretSource::Configured);
    }

    #[test]
    fn a_jwks_url_alone_is_a_valid_production_key() {
        let mut env = production_env();
        env.retain(|(k, _)| *k != "SUPABASE_JWT_SECRET");
        env.push(("SBA_AUTH__JWKS_URL", "https://abc.supabase.co/auth/v1/.well-known/jwks.json"));
        let settings = settings_of(&env).unwrap();
        assert!(settings.auth.secrets.is_empty());
        assert_eq!(settings.auth.jwks_url.unwrap().path(), "/auth/v1/.well-known/jwks.json");
        let problems = settings_of(&[("SBA_AUTH__JWKS_URL", "ftp://keys")]).unwrap_err();
        assert_eq!(problem_settings(&problems), ["SBA_AUTH__JWKS_URL"]);
    }

    #[test]
    fn production_refuses_plain_http_for_the_jwks_and_supabase_urls_together() {
        let mut env = production_env();
        env.retain(|(k, _)| *k != "SUPABASE_URL");
        env.extend([
            ("SUPABASE_URL", "http://abc.supabase.co"),
            ("SBA_AUTH__JWKS_URL", "http://abc.supabase.co/auth/v1/.well-known/jwks.json"),
        ]);
        let problems = settings_of(&env).unwrap_err();
        assert_eq!(problem_settings(&problems), ["SUPABASE_URL", "SBA_AUTH__JWKS_URL"]);
        assert!(problems.0.iter().all(|p| p.message.contains("https://")), "{problems}");
    }

    #[test]
    fn development_accepts_plain_http_jwks_and_supabase_urls() {
        let settings = settings_of(&[
            ("SUPABASE_URL", "http://127.0.0.1:54321"),
            ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key"),
            ("SBA_AUTH__JWKS_URL", "http://127.0.0.1:54321/auth/v1/.well-known/jwks.json"),
        ])
        .unwrap();
        assert_eq!(settings.auth.jwks_url.unwrap().scheme(), "http");
        assert_eq!(settings.supabase.unwrap().rest.unwrap().url.scheme(), "http");
    }
}
