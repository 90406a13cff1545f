//! `[cache]`: the cache tiers (ADR 0007) and TTLs per namespace.

use std::time::Duration;

use super::Problems;
use super::parse::{bounded, entries};
use crate::cache::CacheSettings;
use crate::config::settings::CacheConfig;

/// The cache namespaces whose TTLs `SBA_CACHE__TTLS` may set.
pub const CACHE_NAMESPACES: [&str; 4] = [
    sba_application::tenants::TENANT_NAMESPACE.name,
    sba_application::cors::REGISTERED_ORIGIN_NAMESPACE.name,
    sba_application::runs::RUN_ACCESS_NAMESPACE.name,
    sba_application::sessions::SESSION_NAMESPACE.name,
];

raw_section! {
    pub(super) struct RawCache {
        l1_max_mb: Option<String>,
        l1_max_ttl_secs: Option<String>,
        redis_timeout_ms: Option<String>,
        version_ttl_secs: Option<String>,
        ttls: Option<String>,
    }
}

pub(super) fn cache_settings(problems: &mut Problems, raw: &RawCache) -> CacheConfig {
    const TTLS: &str = "SBA_CACHE__TTLS";
    const MIB: u64 = 1024 * 1024;
    let defaults = CacheSettings::default();
    let secs = |d: Duration| d.as_secs();
    let l1_max_mb = bounded(
        problems,
        "SBA_CACHE__L1_MAX_MB",
        raw.l1_max_mb.as_deref(),
        defaults.l1_max_bytes / MIB,
        1..=65_536,
    );
    let l1_max_ttl = bounded(
        problems,
        "SBA_CACHE__L1_MAX_TTL_SECS",
        raw.l1_max_ttl_secs.as_deref(),
        secs(defaults.l1_max_ttl),
        1..=86_400,
    );
    let timeout_ms = bounded(
        problems,
        "SBA_CACHE__REDIS_TIMEOUT_MS",
        raw.redis_timeout_ms.as_deref(),
        u64::try_from(defaults.redis_timeout.as_millis()).unwrap_or(u64::MAX),
        1..=5_000,
    );
    let version_ttl = bounded(
        problems,
        "SBA_CACHE__VERSION_TTL_SECS",
        raw.version_ttl_secs.as_deref(),
        secs(defaults.version_ttl),
        1..=3_600,
    );
    let ttls = raw
        .ttls
        .as_deref()
        .map(|text| {
            entries(problems, TTLS, text, |problems, namespace, value| {
                if !CACHE_NAMESPACES.contains(&namespace) {
                    problems.push(TTLS, format!("`{namespace}` is not a cache namespace ({})", CACHE_NAMESPACES.join(", ")));
                    return None;
                }
                let parsed = value.split_once('/').and_then(|(base, max)| {
                    Some((base.trim().parse::<u64>().ok()?, max.trim().parse::<u64>().ok()?))
                });
                match parsed {
                    Some((base, max)) if base >= 1 && max >= base && max <= 86_400 => {
                        Some((namespace.to_owned(), Duration::from_secs(base), Duration::from_secs(max)))
                    }
                    _ => {
                        problems.push(TTLS, format!("`{namespace}={value}` is not `<base secs>/<max secs>` with 1 ≤ base ≤ max ≤ 86400"));
                        None
                    }
                }
            })
        })
        .unwrap_or_default();
    CacheConfig {
        adapter: CacheSettings {
            l1_max_bytes: l1_max_mb * MIB,
            l1_max_ttl: Duration::from_secs(l1_max_ttl),
            redis_timeout: Duration::from_millis(timeout_ms),
            version_ttl: Duration::from_secs(version_ttl),
        },
        ttls,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn cache_settings_have_defaults_and_reject_out_of_range_values() {
        let defaults = settings_of(&[]).unwrap().cache;
        assert_eq!(defaults, CacheConfig::default());
        let cache = settings_of(&[
            ("SBA_CACHE__L1_MAX_MB", "8"),
            ("SBA_CACHE__L1_MAX_TTL_SECS", "30"),
            ("SBA_CACHE__REDIS_TIMEOUT_MS", "20"),
            ("SBA_CACHE__VERSION_TTL_SECS", "5"),
            ("SBA_CACHE__TTLS", "tenant=30/300; cors_origin=10/10"),
        ])
        .unwrap()
        .cache;
        assert_eq!(cache.adapter.l1_max_bytes, 8 * 1024 * 1024);
        assert_eq!(cache.adapter.l1_max_ttl, Duration::from_secs(30));
        assert_eq!(cache.adapter.redis_timeout, Duration::from_millis(20));
        assert_eq!(cache.adapter.version_ttl, Duration::from_secs(5));
        assert_eq!(
            cache.ttls,
            [
                ("tenant".to_owned(), Duration::from_secs(30), Duration::from_mins(5)),
                ("cors_origin".to_owned(), Duration::from_secs(10), Duration::from_secs(10))
            ]
        );
        for (var, bad) in [
            ("SBA_CACHE__L1_MAX_MB", "0"),
            ("SBA_CACHE__REDIS_TIMEOUT_MS", "9000"),
            ("SBA_CACHE__TTLS", "sessions=10/20"),
            ("SBA_CACHE__TTLS", "tenant=30/10"),
            ("SBA_CACHE__TTLS", "tenant=30"),
        ] {
            let problems = settings_of(&[(var, bad)]).unwrap_err();
            assert!(problems.0.iter().any(|p| p.setting == var), "{var}={bad}: {problems}");
        }
    }
}
