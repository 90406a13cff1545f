//! Helpers of the configuration tests: a fresh data directory per test, and a complete
//! production environment.

use super::{LoadOptions, Problems, load};
use crate::config::env::EnvSnapshot;
use crate::config::settings::Settings;

pub(super) fn options() -> LoadOptions {
    let dir = std::env::temp_dir().join(format!("sba-config-test-{}", uuid::Uuid::new_v4().simple()));
    LoadOptions { config_dir: dir.join("config"), create_dev_secret: true }
}

pub(super) fn dev_env(pairs: &[(&str, &str)]) -> (EnvSnapshot, LoadOptions) {
    let options = options();
    let data_dir = options.config_dir.parent().unwrap().join("data");
    let mut all: Vec<(String, String)> = vec![("SBA_DATA_DIR".into(), data_dir.display().to_string())];
    all.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    (EnvSnapshot::from_pairs(all), options)
}

pub(super) const SECRET: &str = "0123456789abcdef0123456789abcdef-prod";

pub(super) fn production_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SBA_ENV", "production"),
        ("DATABASE_URL", "postgres://sba:pw@db.internal:5432/sba"),
        ("REDIS_URL", "redis://cache.internal:6379"),
        ("SUPABASE_URL", "https://abc.supabase.co"),
        ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key"),
        ("SUPABASE_JWT_SECRET", SECRET),
        ("SBA_AUTH__ISSUER", "https://abc.supabase.co/auth/v1"),
        ("SBA_AUTH__AUDIENCE", "authenticated"),
        ("SBA_CORS__ALLOWED_ORIGINS", "https://app.example.com, https://admin.example.com"),
    ]
}

pub(super) fn settings_of(pairs: &[(&str, &str)]) -> Result<Settings, Problems> {
    let (env, options) = dev_env(pairs);
    load(&env, &options)
}

pub(super) fn problem_settings(problems: &Problems) -> Vec<&str> {
    problems.0.iter().map(|p| p.setting.as_str()).collect()
}
