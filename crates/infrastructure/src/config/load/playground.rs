//! `[playground]`: the browser playground at `/playground` and its development token
//! endpoint `POST /dev/token`.

use super::Ctx;
use super::parse::parse_or;
use crate::config::settings::{PlaygroundSettings, ServerSettings};

raw_section! {
    pub(super) struct RawPlayground {
        enabled: Option<String>,
    }
}

/// On by default in development only. The token endpoint follows the playground but never
/// exists in production, whatever is configured: it signs any tenant and role with the
/// server's own secret, which would be a way around the real issuer there.
pub(super) fn playground_settings(ctx: &mut Ctx<'_>, raw: &RawPlayground) -> PlaygroundSettings {
    let enabled =
        parse_or(&mut ctx.problems, "SBA_PLAYGROUND__ENABLED", raw.enabled.as_deref(), !ctx.production);
    PlaygroundSettings { enabled, dev_tokens: enabled && !ctx.production }
}

/// A warning when the token endpoint listens beyond the loopback interface: anyone who
/// reaches the port can then mint an admin token of any tenant.
pub(super) fn exposure_warning(playground: PlaygroundSettings, server: &ServerSettings) -> Option<String> {
    (playground.dev_tokens && !server.host.is_loopback()).then(|| {
        format!(
            "POST /dev/token (the playground's development tokens) is served on {}: anyone who reaches \
             that address can mint a token of any tenant; bind SBA_SERVER__HOST to 127.0.0.1 or set \
             SBA_PLAYGROUND__ENABLED=false",
            server.host
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn the_playground_and_its_token_endpoint_are_on_in_development_and_off_in_production() {
        let development = settings_of(&[]).unwrap().playground;
        assert!(development.enabled && development.dev_tokens);
        let production = settings_of(&production_env()).unwrap().playground;
        assert!(!production.enabled && !production.dev_tokens);
    }

    #[test]
    fn turning_the_playground_off_removes_its_token_endpoint_too() {
        let off = settings_of(&[("SBA_PLAYGROUND__ENABLED", "false")]).unwrap().playground;
        assert!(!off.enabled && !off.dev_tokens);
    }

    #[test]
    fn production_may_serve_the_page_but_never_mints_development_tokens() {
        let mut env = production_env();
        env.push(("SBA_PLAYGROUND__ENABLED", "true"));
        let production = settings_of(&env).unwrap().playground;
        assert!(production.enabled);
        assert!(!production.dev_tokens);
    }

    #[test]
    fn an_invalid_switch_is_a_problem_named_by_its_variable() {
        let problems = settings_of(&[("SBA_PLAYGROUND__ENABLED", "sometimes")]).unwrap_err();
        assert_eq!(problem_settings(&problems), ["SBA_PLAYGROUND__ENABLED"]);
    }

    #[test]
    fn serving_the_token_endpoint_beyond_loopback_is_warned_about() {
        let exposed = settings_of(&[("SBA_SERVER__HOST", "0.0.0.0")]).unwrap();
        assert!(
            exposed.warnings.iter().any(|w| w.starts_with("POST /dev/token") && w.contains("0.0.0.0")),
            "{:?}",
            exposed.warnings
        );
        let local = settings_of(&[]).unwrap();
        assert!(local.warnings.iter().all(|w| !w.contains("/dev/token")), "{:?}", local.warnings);
        let off =
            settings_of(&[("SBA_SERVER__HOST", "0.0.0.0"), ("SBA_PLAYGROUND__ENABLED", "false")]).unwrap();
        assert!(off.warnings.iter().all(|w| !w.contains("/dev/token")), "{:?}", off.warnings);
    }
}
