//! `[redis]`: the shared Redis (`REDIS_URL`).

use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

use super::Ctx;
use crate::config::settings::RedisSettings;

raw_section! {
    pub(super) struct RawRedis {
        url: Option<SecretString>,
    }
}

pub(super) fn redis_settings(ctx: &mut Ctx<'_>, raw: RawRedis) -> Option<RedisSettings> {
    ctx.require(raw.url.is_some(), "REDIS_URL", "REDIS_URL");
    let url = raw.url?;
    if Url::parse(url.expose_secret()).is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss")) {
        Some(RedisSettings { url })
    } else {
        ctx.problems.push("REDIS_URL", "must be a redis:// or rediss:// URL");
        None
    }
}
