//! `[database]`: the internal store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use url::Url;
use validator::Validate as _;

use super::parse::{collect_validation, parse_or};
use super::{Ctx, Problems};
use crate::config::settings::StoreSettings;
use crate::internal_store::StoreLocation;

raw_section! {
    pub(super) struct RawDatabase {
        backend: Option<String>,
        url: Option<SecretString>,
        max_connections: Option<String>,
        connect_timeout_secs: Option<String>,
    }
}

pub(super) fn store_settings(ctx: &mut Ctx<'_>, raw: &RawDatabase, data_dir: &Path) -> StoreSettings {
    ctx.require(raw.url.is_some(), "DATABASE_URL", "DATABASE_URL");
    let location = match &raw.url {
        None => StoreLocation::Sqlite(data_dir.join("sba.db")),
        Some(url) => store_location(&mut ctx.problems, url, ctx.production),
    };
    // The storage switch: when set, it must agree with the URL, so a deployment cannot end
    // up on the other backend by accident.
    match (raw.backend.as_deref().map(str::trim), &location) {
        (None | Some("postgres"), StoreLocation::Postgres(_))
        | (None | Some("sqlite"), StoreLocation::Sqlite(_)) => {}
        (Some("postgres"), StoreLocation::Sqlite(_)) => {
            ctx.problems
                .push("DATABASE_URL", "a postgres:// URL is required by SBA_DATABASE__BACKEND=postgres");
        }
        (Some("sqlite"), StoreLocation::Postgres(_)) => {
            ctx.problems
                .push("SBA_DATABASE__BACKEND", "is `sqlite`, but DATABASE_URL names a PostgreSQL database");
        }
        (Some(other), _) => {
            ctx.problems.push("SBA_DATABASE__BACKEND", format!("`{other}` is not `postgres` or `sqlite`"));
        }
    }
    let p = &mut ctx.problems;
    let store = StoreSettings {
        location,
        max_connections: parse_or(p, "SBA_DATABASE__MAX_CONNECTIONS", raw.max_connections.as_deref(), 20),
        connect_timeout: Duration::from_secs(parse_or(
            p,
            "SBA_DATABASE__CONNECT_TIMEOUT_SECS",
            raw.connect_timeout_secs.as_deref(),
            5,
        )),
    };
    collect_validation(p, store.validate(), &[("max_connections", "SBA_DATABASE__MAX_CONNECTIONS")]);
    store
}

fn store_location(problems: &mut Problems, url: &SecretString, production: bool) -> StoreLocation {
    let text = url.expose_secret();
    if let Some(rest) = text.strip_prefix("sqlite://").or_else(|| text.strip_prefix("sqlite:")) {
        if production {
            problems
                .push("DATABASE_URL", "must be a PostgreSQL URL in production (SQLite is for development)");
        }
        let path = rest.split('?').next().unwrap_or_default();
        return StoreLocation::Sqlite(PathBuf::from(path));
    }
    match Url::parse(text) {
        Ok(parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") && parsed.host_str().is_some() => {
        }
        _ => problems
            .push("DATABASE_URL", "must be a postgres:// URL with a host (or sqlite:<path> in development)"),
    }
    StoreLocation::Postgres(url.clone())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn the_storage_switch_must_agree_with_the_database_url() {
        let sqlite = settings_of(&[("SBA_DATABASE__BACKEND", "sqlite")]).unwrap();
        assert!(matches!(sqlite.store.location, StoreLocation::Sqlite(_)));
        let postgres =
            settings_of(&[("SBA_DATABASE__BACKEND", "postgres"), ("DATABASE_URL", "postgres://db:5432/sba")])
                .unwrap();
        assert!(matches!(postgres.store.location, StoreLocation::Postgres(_)));
        for (env, setting) in [
            (vec![("SBA_DATABASE__BACKEND", "postgres")], "DATABASE_URL"),
            (
                vec![("SBA_DATABASE__BACKEND", "sqlite"), ("DATABASE_URL", "postgres://db/sba")],
                "SBA_DATABASE__BACKEND",
            ),
            (vec![("SBA_DATABASE__BACKEND", "mysql")], "SBA_DATABASE__BACKEND"),
        ] {
            let problems = settings_of(&env).unwrap_err();
            assert!(problem_settings(&problems).contains(&setting), "{env:?}: {problems}");
        }
    }
}
