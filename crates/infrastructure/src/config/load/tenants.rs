//! `[tenants]`: plans and quotas of the embedded tenant directory.

use sba_domain::TenantId;

use super::Problems;
use super::parse::{entries, quota};
use crate::config::settings::TenantSettings;

raw_section! {
    pub(super) struct RawTenants {
        plans: Option<String>,
        rate_limits: Option<String>,
    }
}

pub(super) fn tenant_settings(problems: &mut Problems, raw: &RawTenants) -> TenantSettings {
    const PLANS: &str = "SBA_TENANTS__PLANS";
    const LIMITS: &str = "SBA_TENANTS__RATE_LIMITS";
    let plans = raw
        .plans
        .as_deref()
        .map(|text| {
            entries(problems, PLANS, text, |problems, tenant, plan| {
                Some((tenant_id(problems, PLANS, tenant)?, plan.to_owned()))
            })
        })
        .unwrap_or_default();
    let rate_limits = raw
        .rate_limits
        .as_deref()
        .map(|text| {
            entries(problems, LIMITS, text, |problems, tenant, value| {
                let tenant = tenant_id(problems, LIMITS, tenant);
                Some((tenant?, quota(problems, LIMITS, value)?))
            })
        })
        .unwrap_or_default();
    TenantSettings { plans, rate_limits }
}

fn tenant_id(problems: &mut Problems, setting: &str, text: &str) -> Option<TenantId> {
    let parsed = text.parse::<TenantId>().ok();
    if parsed.is_none() {
        let shown: String = text.chars().take(40).collect();
        problems.push(setting, format!("`{shown}` is not a tenant UUID"));
    }
    parsed
}
