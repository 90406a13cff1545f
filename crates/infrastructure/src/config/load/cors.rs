//! `[cors]`: origins allowed for every tenant, and each tenant's own.

use sba_domain::TenantId;
use validator::Validate as _;

use super::parse::collect_validation;
use super::{Ctx, Problems};
use crate::config::settings::CorsSettings;

raw_section! {
    pub(super) struct RawCors {
        allowed_origins: Option<String>,
        tenant_origins: Option<String>,
    }
}

pub(super) fn cors_settings(ctx: &mut Ctx<'_>, raw: &RawCors) -> CorsSettings {
    let allowed_origins: Vec<String> = raw
        .allowed_origins
        .as_deref()
        .map(|list| list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    ctx.require(!allowed_origins.is_empty(), "SBA_CORS__ALLOWED_ORIGINS", "SBA_CORS__ALLOWED_ORIGINS");
    let tenant_origins = raw.tenant_origins.as_deref().map(|text| tenant_origins(&mut ctx.problems, text));
    let cors = CorsSettings { allowed_origins, tenant_origins: tenant_origins.unwrap_or_default() };
    collect_validation(
        &mut ctx.problems,
        cors.validate(),
        &[("allowed_origins", "SBA_CORS__ALLOWED_ORIGINS")],
    );
    cors
}

/// `<tenant uuid>=<origin> <origin>;<tenant uuid>=<origin>`: each tenant's own origins.
fn tenant_origins(problems: &mut Problems, text: &str) -> Vec<(TenantId, Vec<String>)> {
    const SETTING: &str = "SBA_CORS__TENANT_ORIGINS";
    let mut parsed = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((tenant, origins)) = entry.split_once('=') else {
            problems.push(SETTING, "each entry must look like `<tenant uuid>=<origin> <origin>`");
            continue;
        };
        let Ok(tenant) = tenant.trim().parse::<TenantId>() else {
            let shown: String = tenant.trim().chars().take(40).collect();
            problems.push(SETTING, format!("`{shown}` is not a tenant UUID"));
            continue;
        };
        let origins: Vec<String> = origins.split_whitespace().map(str::to_owned).collect();
        if let Err(error) = crate::config::settings::origins_are_exact(&origins) {
            problems.push(SETTING, error.message.map_or_else(|| error.code.to_string(), |m| m.to_string()));
            continue;
        }
        parsed.push((tenant, origins));
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn tenant_origins_and_the_platform_tenant_are_parsed_and_validated_as_web_origins() {
        let a = "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";
        let b = "1b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";
        let origins = format!("{a}=https://a.example https://admin.a.example; {b}=http://localhost:3000");
        let settings =
            settings_of(&[("SBA_CORS__TENANT_ORIGINS", &origins), ("SBA_AUTH__PLATFORM_TENANT_ID", a)])
                .unwrap();
        let parsed: Vec<(String, Vec<String>)> =
            settings.cors.tenant_origins.iter().map(|(t, o)| (t.to_string(), o.clone())).collect();
        assert_eq!(
            parsed,
            [
                (a.to_owned(), vec!["https://a.example".to_owned(), "https://admin.a.example".to_owned()]),
                (b.to_owned(), vec!["http://localhost:3000".to_owned()]),
            ]
        );
        assert_eq!(settings.auth.platform_tenant.map(|t| t.to_string()).as_deref(), Some(a));

        for bad in [
            format!("{a}=*"),
            format!("{a}=https://a.example/"),
            format!("{a}=null"),
            format!("{a}=file:///x"),
            format!("{a}=https://a.example/path"),
            format!("{a}=https://A.example"),
            format!("{a}=https://a.example:0"),
            format!("{a}=https://a.example:65536"),
            format!("{a}=https://[2001:DB8::1]"),
            "acme=https://a.example".to_owned(),
            "x".to_owned(),
        ] {
            let problems = settings_of(&[("SBA_CORS__TENANT_ORIGINS", &bad)]).unwrap_err();
            assert_eq!(problem_settings(&problems), ["SBA_CORS__TENANT_ORIGINS"], "{bad}");
        }
        for bad in ["https://App.example.com", "null", "https://a.example:0"] {
            let problems = settings_of(&[("SBA_CORS__ALLOWED_ORIGINS", bad)]).unwrap_err();
            assert_eq!(problem_settings(&problems), ["SBA_CORS__ALLOWED_ORIGINS"], "{bad}");
        }
        let ipv6 = format!("{a}=http://[::1]:3000");
        assert!(settings_of(&[("SBA_CORS__TENANT_ORIGINS", &ipv6)]).is_ok());
        let problems = settings_of(&[("SBA_AUTH__PLATFORM_TENANT_ID", "acme")]).unwrap_err();
        assert_eq!(problem_settings(&problems), ["SBA_AUTH__PLATFORM_TENANT_ID"]);
    }
}
