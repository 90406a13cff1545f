//! Configuration: one typed [`Settings`], loaded once from optional files and the
//! environment, validated once, and passed down explicitly.
//!
//! This module is the only place that reads environment variables. Development mode needs
//! nothing; production mode requires its settings and reports *every* problem at once.
//! `NEXT_PUBLIC_*` variables are browser configuration: they are never read, and one present
//! is reported as ignored.

mod dev_secret;
mod env;
mod load;
mod report;
mod settings;

pub use env::EnvSnapshot;
pub use load::{CACHE_NAMESPACES, LoadOptions, Problem, Problems, load};
pub use settings::{
    AuthSettings, CacheConfig, CorsSettings, DemoSettings, Environment, EventsSettings, KnowledgeSettings,
    LogFormat, LogSettings, PlaygroundSettings, RateLimitSettings, RedisSettings, SecretSource,
    ServerSettings, Settings, StoreSettings, StreamSettings, SupabaseRest, SupabaseSettings, TenantSettings,
    WorkerSettings,
};
