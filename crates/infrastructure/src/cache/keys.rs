//! The cache's key layout (docs/architecture.md, "Redis key schema"), the same in L1 and in
//! Redis: entries at `sba:c:{tenant}:{namespace}:v{version}:{key}`, namespace versions at
//! `sba:cv:{tenant}:{namespace}`.

use std::fmt::Write as _;

use sba_application::ports::CacheKey;
use sba_domain::TenantId;
use uuid::Uuid;

/// Where an entry of `key` lives in `version` of its namespace:
/// `sba:c:{tenant}:{namespace}:v{version}:{key}`, in L1 and in Redis alike.
pub fn entry_key(key: &CacheKey, version: u64) -> String {
    versioned_key(key.tenant, key.namespace, version, &key.key)
}

/// Where the current version of a tenant's namespace lives in Redis:
/// `sba:cv:{tenant}:{namespace}` (missing means version 0).
pub fn version_key(tenant: TenantId, namespace: &str) -> String {
    let mut out = String::with_capacity(7 + Uuid::encode_buffer().len() + 1 + namespace.len());
    out.push_str("sba:cv:");
    push_tenant(&mut out, tenant);
    out.push(':');
    out.push_str(namespace);
    out
}

/// [`entry_key`] from its parts: invalidation messages carry the namespace as a plain
/// string.
pub(crate) fn versioned_key(tenant: TenantId, namespace: &str, version: u64, key: &str) -> String {
    // One exact allocation: this runs on every L1 hit.
    let mut out = String::with_capacity(6 + 36 + 1 + namespace.len() + 2 + 20 + 1 + key.len());
    out.push_str("sba:c:");
    push_tenant(&mut out, tenant);
    out.push(':');
    out.push_str(namespace);
    out.push_str(":v");
    // Writing into a String cannot fail.
    let _ = write!(out, "{version}");
    out.push(':');
    out.push_str(key);
    out
}

fn push_tenant(out: &mut String, tenant: TenantId) {
    out.push_str(tenant.as_uuid().hyphenated().encode_lower(&mut Uuid::encode_buffer()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let tenant = TenantId::from_uuid(Uuid::parse_str("0190f3a0-0000-7000-8000-000000000001").unwrap());
        let key = CacheKey::new(tenant, "run", "a|b:c");
        assert_eq!(entry_key(&key, 42), "sba:c:0190f3a0-0000-7000-8000-000000000001:run:v42:a|b:c");
        assert_eq!(version_key(tenant, "run"), "sba:cv:0190f3a0-0000-7000-8000-000000000001:run");
        assert_eq!(entry_key(&key, 42), format!("sba:c:{tenant}:run:v42:a|b:c"));
    }
}
