//! `[supabase]`: where tenants, sessions and knowledge live (ADR 0008).

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

use super::Ctx;
use super::parse::{bounded, secure_url};
use crate::config::settings::{SupabaseRest, SupabaseSettings};

raw_section! {
    pub(super) struct RawSupabase {
        url: Option<String>,
        service_role_key: Option<SecretString>,
        anon_key: Option<SecretString>,
        db_url: Option<SecretString>,
        timeout_ms: Option<String>,
    }
}

pub(super) fn supabase_settings(ctx: &mut Ctx<'_>, raw: RawSupabase) -> Option<SupabaseSettings> {
    let key_setting = "SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SERVICE_KEY)";
    ctx.require(raw.url.is_some(), "SUPABASE_URL", "SUPABASE_URL");
    ctx.require(raw.service_role_key.is_some(), key_setting, "SUPABASE_SERVICE_ROLE_KEY");
    // Outside production the two go together or not at all.
    if !ctx.production {
        match (&raw.url, &raw.service_role_key) {
            (Some(_), None) => ctx.problems.push(key_setting, "is required when SUPABASE_URL is set"),
            (None, Some(_)) => {
                ctx.problems.push("SUPABASE_URL", "is required when the service role key is set");
            }
            _ => {}
        }
    }
    let timeout_ms =
        bounded(&mut ctx.problems, "SBA_SUPABASE__TIMEOUT_MS", raw.timeout_ms.as_deref(), 5000, 100..=60_000);
    let db_url = raw.db_url.filter(|url| {
        let valid = Url::parse(url.expose_secret())
            .is_ok_and(|u| matches!(u.scheme(), "postgres" | "postgresql") && u.host_str().is_some());
        if !valid {
            ctx.problems.push("SUPABASE_DB_URL", "must be a postgres:// or postgresql:// URL");
        }
        valid
    });
    let url =
        raw.url.as_deref().and_then(|url| secure_url(&mut ctx.problems, "SUPABASE_URL", url, ctx.production));
    let rest = url.zip(raw.service_role_key).map(|(url, service_role_key)| SupabaseRest {
        url,
        service_role_key,
        anon_key: raw.anon_key,
    });
    if rest.is_none() && db_url.is_none() {
        return None;
    }
    Some(SupabaseSettings { rest, db_url, timeout: Duration::from_millis(timeout_ms) })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn service_key_alias_is_accepted() {
        let mut env: Vec<_> =
            production_env().into_iter().filter(|(k, _)| *k != "SUPABASE_SERVICE_ROLE_KEY").collect();
        env.push(("SUPABASE_SERVICE_KEY", "alias-key"));
        let settings = settings_of(&env).unwrap();
        assert_eq!(settings.supabase.unwrap().rest.unwrap().service_role_key.expose_secret(), "alias-key");
    }

    #[test]
    fn a_supabase_database_url_alone_selects_the_sql_adapters_in_development() {
        let settings =
            settings_of(&[("SUPABASE_DB_URL", "postgres://sba:pw@pooler.test:6543/postgres")]).unwrap();
        let supabase = settings.supabase.unwrap();
        assert!(supabase.rest.is_none());
        assert!(supabase.db_url.is_some());
        assert_eq!(supabase.timeout, Duration::from_secs(5));
        let problems = settings_of(&[("SUPABASE_DB_URL", "https://not-a-database")]).unwrap_err();
        assert!(problems.0.iter().any(|p| p.setting == "SUPABASE_DB_URL"), "{problems}");
    }

    #[test]
    fn the_anon_key_and_timeout_are_read_with_the_rest_settings() {
        let mut env = production_env();
        env.extend([("SUPABASE_ANON_KEY", "anon-key"), ("SBA_SUPABASE__TIMEOUT_MS", "800")]);
        let supabase = settings_of(&env).unwrap().supabase.unwrap();
        assert_eq!(supabase.rest.unwrap().anon_key.unwrap().expose_secret(), "anon-key");
        assert_eq!(supabase.timeout, Duration::from_millis(800));
    }
}
