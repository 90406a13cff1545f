//! Adapters on Supabase's data over PostgREST (HTTP): [`PostgrestTenantDirectory`],
//! [`PostgrestSessionStore`] and [`PostgrestKnowledgeStore`], built from one shared
//! [`PostgrestClient`].
//!
//! Whose credentials a request carries is the point of this module (ADR 0014):
//! - work for a plain user (sessions, knowledge) forwards *that user's* JWT as
//!   `Authorization: Bearer`, so PostgREST's `db-pre-request` (`sba_pre_request`) sets the
//!   tenant context from its claims and row-level security applies. A user without a token,
//!   or whose token's `role` claim is not `authenticated` (a `service_role` token above
//!   all), is refused before any request: the service key is never a fallback for a user;
//! - work for an admin, agent or service goes *through the service*: SBA's roles are not
//!   database roles, so the request carries the service-role key and the caller's tenant in
//!   `X-SBA-Tenant` (honoured by `sba_pre_request` for `service_role` requests only), and the
//!   adapters apply the permission matrix themselves (user filters, no session for another
//!   user, knowledge written by admins and services only);
//! - platform work (the tenant directory) sends the service-role key, which bypasses
//!   row-level security (ADR 0002).
//!
//! User queries also filter on `tenant_id` themselves, as a second fence behind row-level
//! security. Reads (and the read-only `match_knowledge` RPC) are retried on transient
//! failures; writes never are, since a write whose answer was lost may have been applied.

mod check;
mod client;
mod knowledge;
mod sessions;
mod tenants;

use std::fmt::Display;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

pub use client::PostgrestClient;
pub use knowledge::PostgrestKnowledgeStore;
pub use sessions::PostgrestSessionStore;
pub use tenants::PostgrestTenantDirectory;

/// Where PostgREST is and how requests to it behave. `Debug` shows no key.
#[derive(Debug, Clone)]
pub struct PostgrestSettings {
    /// The Supabase project URL (`SUPABASE_URL`); the REST API is under `{url}/rest/v1/`.
    pub url: Url,
    /// The service-role key: platform work (the tenant directory) and the work of admins,
    /// agents and services, never a plain user's.
    pub service_role_key: SecretString,
    /// The anon key, sent as `apikey` on user requests (Supabase's gateway wants one); `None`
    /// for a PostgREST reached directly, which then gets no `apikey` header.
    pub anon_key: Option<SecretString>,
    /// The longest one attempt may take, connecting and reading the body included. A read
    /// may take up to `read_retries + 1` attempts plus the pauses between them.
    pub timeout: Duration,
    /// How many times a read is retried after a connection failure, a timeout or a
    /// 502/503/504. Writes are never retried.
    pub read_retries: u32,
    /// The exposed schema, sent as `Accept-Profile` / `Content-Profile`.
    pub schema: String,
    /// The largest response body accepted; a larger one fails the request.
    pub max_response_bytes: usize,
}

impl PostgrestSettings {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_READ_RETRIES: u32 = 2;
    pub const DEFAULT_SCHEMA: &str = "public";
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

    /// Settings for the project at `url` with the defaults: no anon key, 5 s per attempt,
    /// 2 retries of reads, schema `public`, responses up to 16 MiB.
    pub fn new(url: Url, service_role_key: SecretString) -> Self {
        Self {
            url,
            service_role_key,
            anon_key: None,
            timeout: Self::DEFAULT_TIMEOUT,
            read_retries: Self::DEFAULT_READ_RETRIES,
            schema: Self::DEFAULT_SCHEMA.to_owned(),
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// A PostgREST equality filter value: `eq.<value>`.
fn eq(value: impl Display) -> String {
    format!("eq.{value}")
}

/// The stores on one client: each clones it (one connection pool, one set of settings).
impl PostgrestClient {
    /// The tenant directory (platform work, with the service-role key).
    pub fn tenant_directory(&self) -> PostgrestTenantDirectory {
        PostgrestTenantDirectory::new(self.clone())
    }

    /// Readiness of PostgREST (`supabase` in `/readyz`).
    pub fn dependency_check(&self) -> std::sync::Arc<dyn sba_application::ports::DependencyCheck> {
        std::sync::Arc::new(check::PostgrestCheck::new(self.clone()))
    }

    /// The session store (with each caller's token).
    pub fn session_store(&self) -> PostgrestSessionStore {
        PostgrestSessionStore::new(self.clone())
    }

    /// The knowledge store (with each caller's token).
    pub fn knowledge_store(&self) -> PostgrestKnowledgeStore {
        PostgrestKnowledgeStore::new(self.clone())
    }
}
