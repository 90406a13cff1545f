//! [`PostgrestClient`] and how one PostgREST call is made: credentials, headers, a bounded
//! body, retries of reads, and PostgREST's errors translated into the ports' contract.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use rand::Rng as _;
use reqwest::header::{self, HeaderName, HeaderValue, InvalidHeaderValue};
use reqwest::{Method, StatusCode};
use sba_application::context::Caller;
use sba_application::ports::RepositoryError;
use sba_domain::Role;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use url::Url;

use super::PostgrestSettings;
use crate::trace_context;

const APIKEY: HeaderName = HeaderName::from_static("apikey");
const ACCEPT_PROFILE: HeaderName = HeaderName::from_static("accept-profile");
const CONTENT_PROFILE: HeaderName = HeaderName::from_static("content-profile");
const PREFER: HeaderName = HeaderName::from_static("prefer");
/// The tenant of a request made with the service-role key for an admin, agent or service:
/// `sba_pre_request` sets the tenant context from it for `service_role` requests only.
const SBA_TENANT: HeaderName = HeaderName::from_static("x-sba-tenant");
/// The only `role` claim of a token that is forwarded: Supabase's `authenticated`, the
/// database role PostgREST then switches to.
const FORWARDED_ROLE: &str = "authenticated";

/// The pause before the first retry of a read; it doubles with each further retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// PostgREST's messages are quoted in errors up to this many characters.
const MAX_QUOTED_CHARS: usize = 300;

/// The HTTP client shared by the PostgREST adapters: one connection pool, connect and
/// request timeouts, bounded response bodies. Cheap to clone; `Debug` shows no key.
#[derive(Clone)]
pub struct PostgrestClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `{SUPABASE_URL}/rest/v1/`.
    base: Url,
    /// `base` without credentials, for `Debug`.
    shown_base: String,
    schema: HeaderValue,
    timeout: Duration,
    read_retries: u32,
    max_response_bytes: usize,
    /// Kept to scrub it from any text PostgREST sends back.
    service_role_key: SecretString,
    service_apikey: HeaderValue,
    service_bearer: HeaderValue,
    anon_key: Option<SecretString>,
    anon_apikey: Option<HeaderValue>,
}

impl fmt::Debug for PostgrestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("PostgrestClient")
            .field("base", &inner.shown_base)
            .field("schema", &inner.schema)
            .field("timeout", &inner.timeout)
            .field("read_retries", &inner.read_retries)
            .field("max_response_bytes", &inner.max_response_bytes)
            .field("anon_key", &inner.anon_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl PostgrestClient {
    /// A client for the PostgREST API of `settings.url`. Sends nothing yet.
    ///
    /// # Errors
    /// When the URL is not http(s), the schema is empty, a key cannot be a header value, or
    /// the HTTP client cannot be built (its TLS backend failed to initialise). The error
    /// never contains a key.
    pub fn new(settings: PostgrestSettings) -> anyhow::Result<Self> {
        let base = rest_base(&settings.url)?;
        let mut shown = base.clone();
        // Both only fail for URLs that cannot carry credentials, which then have none.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        anyhow::ensure!(!settings.schema.trim().is_empty(), "the PostgREST schema must not be empty");
        let schema = HeaderValue::from_str(&settings.schema)
            .context("the PostgREST schema is not a valid header value")?;
        let service_key = settings.service_role_key.expose_secret();
        anyhow::ensure!(!service_key.is_empty(), "the service role key must not be empty");
        let service_apikey =
            secret_header(service_key).context("the service role key is not a valid header value")?;
        let service_bearer = secret_header(&format!("Bearer {service_key}"))
            .context("the service role key is not a valid header value")?;
        let anon_apikey = settings
            .anon_key
            .as_ref()
            .map(|key| secret_header(key.expose_secret()))
            .transpose()
            .context("the anon key is not a valid header value")?;
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            // PostgREST never redirects; following one could carry a token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sba/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the PostgREST HTTP client")?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                shown_base: shown.to_string(),
                schema,
                timeout: settings.timeout,
                read_retries: settings.read_retries,
                max_response_bytes: settings.max_response_bytes,
                service_role_key: settings.service_role_key,
                service_apikey,
                service_bearer,
                anon_key: settings.anon_key,
                anon_apikey,
            }),
        })
    }

    /// Makes `call` for `acting` and parses PostgREST's JSON answer.
    pub(super) async fn fetch<T: DeserializeOwned>(
        &self,
        acting: Acting<'_>,
        call: Call,
    ) -> Result<T, RepositoryError> {
        let operation = call.operation;
        let body = self.execute(acting, call).await?;
        serde_json::from_slice(&body).map_err(|error| {
            RepositoryError::Unexpected(
                anyhow::Error::new(error).context(format!("{operation}: PostgREST's answer is malformed")),
            )
        })
    }

    /// Makes `call` for `acting` and returns the body of its successful answer. Reads are
    /// retried on transient failures, writes never.
    pub(super) async fn execute(&self, acting: Acting<'_>, call: Call) -> Result<Vec<u8>, RepositoryError> {
        let credentials = self.credentials(acting, call.operation)?;
        let mut url = self.inner.base.join(call.path).map_err(|error| {
            RepositoryError::Unexpected(anyhow::Error::new(error).context(call.operation))
        })?;
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(call.query.iter().map(|(key, value)| (*key, value.as_str())));
        }
        let retries = match call.retry {
            Retry::Read => self.inner.read_retries,
            Retry::Never => 0,
        };
        let mut attempt = 0;
        loop {
            let started = std::time::Instant::now();
            let span = tracing::debug_span!(
                target: "sba::dependency",
                "dependency call",
                otel.name = format!("supabase {} {}", call.method, call.path),
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                http.request.method = call.method.as_str(),
                http.response.status_code = tracing::field::Empty,
                url.path = call.path,
            );
            let result = self.attempt(&call, &url, &credentials).instrument(span.clone()).await;
            match &result {
                Ok(_) => {}
                Err(Failure::Status { status, .. }) => {
                    span.record("http.response.status_code", i64::from(status.as_u16()));
                    span.record("otel.status_code", "error");
                }
                Err(_) => {
                    span.record("otel.status_code", "error");
                }
            }
            record(&call, &result, started.elapsed());
            match result {
                Ok(body) => return Ok(body),
                Err(failure) if attempt < retries && failure.is_transient() => {
                    attempt += 1;
                    let pause = backoff(attempt);
                    tracing::warn!(
                        operation = call.operation,
                        attempt,
                        error = %failure.summary(),
                        "a PostgREST read failed; retrying in {pause:?}"
                    );
                    tokio::time::sleep(pause).await;
                }
                Err(failure) => return Err(self.translate(failure, call.operation, &credentials)),
            }
        }
    }

    fn credentials<'a>(
        &'a self,
        acting: Acting<'a>,
        operation: &'static str,
    ) -> Result<Credentials<'a>, RepositoryError> {
        match acting {
            Acting::Platform => Ok(Credentials {
                authorization: self.inner.service_bearer.clone(),
                apikey: Some(&self.inner.service_apikey),
                user_token: None,
                tenant: None,
            }),
            // SBA's `admin`, `agent` and `service` are not database roles: their work goes
            // through the service (ADR 0014), with the tenant named for `sba_pre_request`.
            // The adapters add the tenant (and, below the whole tenant, the user) filters
            // that row-level security would have applied.
            Acting::User(caller) if through_the_service(caller) => {
                let tenant = HeaderValue::from_str(&caller.tenant.to_string()).map_err(|_| {
                    RepositoryError::Unexpected(anyhow::anyhow!(
                        "{operation}: the tenant id is not a valid header value"
                    ))
                })?;
                Ok(Credentials {
                    authorization: self.inner.service_bearer.clone(),
                    apikey: Some(&self.inner.service_apikey),
                    user_token: None,
                    tenant: Some(tenant),
                })
            }
            Acting::User(caller) => {
                let Some(token) = &caller.token else {
                    return Err(RepositoryError::Unexpected(anyhow::anyhow!(
                        "{operation}: no user token to forward"
                    )));
                };
                // The auth layer refuses `service_role` tokens already; a token that would
                // make PostgREST act as anything but `authenticated` is still never sent.
                if role_claim(token.expose()).as_deref() != Some(FORWARDED_ROLE) {
                    return Err(RepositoryError::Unexpected(anyhow::anyhow!(
                        "{operation}: the user token's role claim is not `{FORWARDED_ROLE}`; it is not forwarded"
                    )));
                }
                let authorization = secret_header(&format!("Bearer {}", token.expose())).map_err(|_| {
                    RepositoryError::Unexpected(anyhow::anyhow!(
                        "{operation}: the user token is not a valid header value"
                    ))
                })?;
                Ok(Credentials {
                    authorization,
                    apikey: self.inner.anon_apikey.as_ref(),
                    user_token: Some(token.expose()),
                    tenant: None,
                })
            }
        }
    }

    async fn attempt(
        &self,
        call: &Call,
        url: &Url,
        credentials: &Credentials<'_>,
    ) -> Result<Vec<u8>, Failure> {
        // PostgREST reads the schema of a GET from Accept-Profile, of anything else from
        // Content-Profile.
        let profile = if call.method == Method::GET { ACCEPT_PROFILE } else { CONTENT_PROFILE };
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), url.clone())
            .header(header::ACCEPT, "application/json")
            .header(profile, self.inner.schema.clone())
            .header(header::AUTHORIZATION, credentials.authorization.clone());
        if let Some(apikey) = credentials.apikey {
            request = request.header(APIKEY, apikey.clone());
        }
        if let Some(tenant) = &credentials.tenant {
            request = request.header(SBA_TENANT, tenant.clone());
        }
        if let Some(prefer) = call.prefer {
            request = request.header(PREFER, prefer);
        }
        if let Some(body) = &call.body {
            request = request.header(header::CONTENT_TYPE, "application/json").body(body.clone());
        }
        let mut response = trace_context::inject(request).send().await.map_err(Failure::Transport)?;
        let status = response.status();
        let body = self.read_body(&mut response).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(Failure::Status { status, error: serde_json::from_slice(&body).ok() })
        }
    }

    async fn read_body(&self, response: &mut reqwest::Response) -> Result<Vec<u8>, Failure> {
        let limit = self.inner.max_response_bytes;
        if response.content_length().is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX)) {
            return Err(Failure::TooLarge(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Failure::Transport)? {
            if body.len() + chunk.len() > limit {
                return Err(Failure::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The ports' meaning of a failure. A unique violation (or any 409) is a conflict,
    /// PostgREST's "no row" a `NotFound`; everything else is unexpected, naming the
    /// operation and PostgREST's code and message, scrubbed of every key and token.
    fn translate(
        &self,
        failure: Failure,
        operation: &'static str,
        credentials: &Credentials<'_>,
    ) -> RepositoryError {
        match failure {
            Failure::Status { status, error } => {
                let error = error.unwrap_or_default();
                let code = error.code.as_deref().map(|code| self.quote(code, credentials));
                let message = error.message.as_deref().map(|message| self.quote(message, credentials));
                if status == StatusCode::CONFLICT || code.as_deref() == Some("23505") {
                    let kind = crate::sql::conflict_kind(message.as_deref().unwrap_or_default());
                    return RepositoryError::Conflict(kind);
                }
                if code.as_deref() == Some("PGRST116") {
                    return RepositoryError::NotFound;
                }
                let quoted = match (code, message) {
                    (Some(code), Some(message)) => format!(" ({code}: {message})"),
                    (Some(code), None) => format!(" ({code})"),
                    (None, Some(message)) => format!(" ({message})"),
                    (None, None) => String::new(),
                };
                let hint = error
                    .hint
                    .as_deref()
                    .map(|hint| format!("; hint: {}", self.quote(hint, credentials)))
                    .unwrap_or_default();
                RepositoryError::Unexpected(anyhow::anyhow!(
                    "{operation}: PostgREST answered {status}{quoted}{hint}"
                ))
            }
            Failure::Transport(error) if error.is_timeout() => {
                RepositoryError::Unexpected(anyhow::Error::new(error.without_url()).context(format!(
                    "{operation}: PostgREST did not answer within {:?}",
                    self.inner.timeout
                )))
            }
            Failure::Transport(error) => RepositoryError::Unexpected(
                anyhow::Error::new(error.without_url())
                    .context(format!("{operation}: the request to PostgREST failed")),
            ),
            Failure::TooLarge(limit) => RepositoryError::Unexpected(anyhow::anyhow!(
                "{operation}: PostgREST's answer is larger than {limit} bytes"
            )),
        }
    }

    /// `text` from PostgREST, shortened, with every key and token this call knows replaced:
    /// a message may echo what it was sent.
    fn quote(&self, text: &str, credentials: &Credentials<'_>) -> String {
        let secrets = [
            Some(self.inner.service_role_key.expose_secret()),
            self.inner.anon_key.as_ref().map(ExposeSecret::expose_secret),
            credentials.user_token,
        ];
        let mut text = text.to_owned();
        for secret in secrets.into_iter().flatten().filter(|secret| !secret.is_empty()) {
            text = text.replace(secret, "<redacted>");
        }
        if text.chars().count() > MAX_QUOTED_CHARS {
            text = text.chars().take(MAX_QUOTED_CHARS).chain(['…']).collect();
        }
        text
    }
}

/// `{url}/rest/v1/`, for a project URL with or without a trailing slash or a path prefix.
fn rest_base(url: &Url) -> anyhow::Result<Url> {
    anyhow::ensure!(matches!(url.scheme(), "http" | "https"), "the Supabase URL must be http or https");
    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    let path = format!("{}/rest/v1/", base.path().trim_end_matches('/'));
    base.set_path(&path);
    Ok(base)
}

/// Whether `caller`'s requests go through the service (the service-role key) rather than
/// with its own token: every role but a plain user, since only `authenticated` is a
/// database role.
pub(super) fn through_the_service(caller: &Caller) -> bool {
    caller.role != Role::Authenticated
}

/// The `role` claim of a JWT's payload, read without verifying it (the auth layer did);
/// `None` when there is none or the token is not a JWT.
fn role_claim(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Claims {
        role: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Claims>(&json).ok()?.role
}

/// A header value that HTTP tooling (and reqwest's `Debug`) treats as sensitive.
fn secret_header(value: &str) -> Result<HeaderValue, InvalidHeaderValue> {
    let mut header = HeaderValue::from_str(value)?;
    header.set_sensitive(true);
    Ok(header)
}

/// The pause before retry number `attempt` (from 1): 50 ms, 100 ms, 200 ms… up to 2 s, the
/// upper half of it random, so that readers which failed together do not retry together.
fn backoff(attempt: u32) -> Duration {
    let full = FIRST_BACKOFF.saturating_mul(2_u32.saturating_pow(attempt.saturating_sub(1))).min(MAX_BACKOFF);
    let half = full / 2;
    rand::rng().random_range(half..=full)
}

/// Whom a call acts for, which decides its credentials.
#[derive(Debug, Clone, Copy)]
pub(super) enum Acting<'a> {
    /// A caller of a tenant. A plain user's token is forwarded, so row-level security
    /// applies; an admin, agent or service goes through the service: the service-role key
    /// and the caller's tenant in `X-SBA-Tenant`.
    User(&'a Caller),
    /// The platform: the service-role key, which bypasses row-level security.
    Platform,
}

/// The headers that say who is asking.
struct Credentials<'a> {
    authorization: HeaderValue,
    apikey: Option<&'a HeaderValue>,
    /// The forwarded token, to scrub it from PostgREST's messages.
    user_token: Option<&'a str>,
    /// `X-SBA-Tenant`, on requests made with the service-role key for a tenant's caller.
    tenant: Option<HeaderValue>,
}

/// Whether a failed call may be made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: a repeat has no effect beyond the first.
    Read,
    /// Writes: the lost answer may belong to an applied write.
    Never,
}

/// One PostgREST request, described before it is sent (and, for a read, sent again).
#[derive(Debug)]
pub(super) struct Call {
    /// What the adapter was doing, for errors: "reading a session".
    operation: &'static str,
    method: Method,
    /// Under the REST base: `sessions`, `rpc/match_knowledge`.
    path: &'static str,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    prefer: Option<&'static str>,
    retry: Retry,
}

impl Call {
    /// A `GET` of `path`, retried on transient failures.
    pub(super) const fn get(operation: &'static str, path: &'static str) -> Self {
        Self {
            operation,
            method: Method::GET,
            path,
            query: Vec::new(),
            body: None,
            prefer: None,
            retry: Retry::Read,
        }
    }

    /// A `POST` of `body` to `path`, never retried.
    pub(super) fn post(
        operation: &'static str,
        path: &'static str,
        body: &impl Serialize,
        prefer: &'static str,
    ) -> Result<Self, RepositoryError> {
        Self::with_body(operation, Method::POST, path, body, Some(prefer), Retry::Never)
    }

    /// A `PATCH` of the rows the query selects with `body`, never retried.
    pub(super) fn patch(
        operation: &'static str,
        path: &'static str,
        body: &impl Serialize,
        prefer: &'static str,
    ) -> Result<Self, RepositoryError> {
        Self::with_body(operation, Method::PATCH, path, body, Some(prefer), Retry::Never)
    }

    /// A call of a function that writes (`POST /rpc/...`), never retried.
    pub(super) fn rpc(
        operation: &'static str,
        path: &'static str,
        args: &impl Serialize,
    ) -> Result<Self, RepositoryError> {
        Self::with_body(operation, Method::POST, path, args, None, Retry::Never)
    }

    /// A call of a function that only reads (`stable`), retried like a `GET`.
    pub(super) fn read_only_rpc(
        operation: &'static str,
        path: &'static str,
        args: &impl Serialize,
    ) -> Result<Self, RepositoryError> {
        Self::with_body(operation, Method::POST, path, args, None, Retry::Read)
    }

    /// Adds `key=value` to the query string (URL-encoded when sent).
    pub(super) fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    fn with_body(
        operation: &'static str,
        method: Method,
        path: &'static str,
        body: &impl Serialize,
        prefer: Option<&'static str>,
        retry: Retry,
    ) -> Result<Self, RepositoryError> {
        let body = serde_json::to_vec(body).map_err(|error| {
            RepositoryError::Unexpected(
                anyhow::Error::new(error).context(format!("{operation}: encoding the body")),
            )
        })?;
        Ok(Self { operation, method, path, query: Vec::new(), body: Some(body), prefer, retry })
    }
}

/// PostgREST's error body; `details` is left out on purpose, as it can quote row data.
#[derive(Debug, Default, Deserialize)]
struct PostgrestError {
    code: Option<String>,
    message: Option<String>,
    hint: Option<String>,
}

/// `sba_supabase_requests_total{path,outcome}` and `sba_supabase_request_seconds{path}`:
/// each attempt (retries count), labelled by the table or function called (a fixed set),
/// never by ids, queries or tenants.
fn record(call: &Call, result: &Result<Vec<u8>, Failure>, elapsed: Duration) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(Failure::Status { status, .. }) if status.is_client_error() => "status_4xx",
        Err(Failure::Status { .. }) => "status_5xx",
        Err(Failure::Transport(error)) if error.is_timeout() => "timeout",
        Err(Failure::Transport(_)) => "unreachable",
        Err(Failure::TooLarge(_)) => "too_large",
    };
    metrics::counter!("sba_supabase_requests_total", "path" => call.path, "outcome" => outcome).increment(1);
    metrics::histogram!("sba_supabase_request_seconds", "path" => call.path).record(elapsed.as_secs_f64());
}

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    /// No answer: connection refused or lost, timeout.
    Transport(reqwest::Error),
    /// A non-2xx answer, with PostgREST's error body when it sent one.
    Status { status: StatusCode, error: Option<PostgrestError> },
    /// The body exceeded this many bytes.
    TooLarge(usize),
}

impl Failure {
    /// Whether another attempt may succeed: the request did not get through or did not get
    /// an answer, or PostgREST (or the gateway before it) is briefly unavailable. A 500 is
    /// not transient: PostgREST sends it for errors that repeat, as does any 4xx.
    fn is_transient(&self) -> bool {
        match self {
            Self::Transport(error) => {
                error.is_connect() || error.is_timeout() || error.is_request() || error.is_body()
            }
            Self::Status { status, .. } => matches!(
                *status,
                StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
            ),
            Self::TooLarge(_) => false,
        }
    }

    /// A short description for the retry log line (no message text from PostgREST).
    fn summary(&self) -> String {
        match self {
            Self::Transport(error) if error.is_timeout() => "timed out".to_owned(),
            Self::Transport(_) => "the request failed".to_owned(),
            Self::Status { status, error } => match error.as_ref().and_then(|e| e.code.as_deref()) {
                Some(code) if code.len() <= 16 && code.chars().all(|c| c.is_ascii_alphanumeric()) => {
                    format!("{status} ({code})")
                }
                _ => status.to_string(),
            },
            Self::TooLarge(limit) => format!("the answer is larger than {limit} bytes"),
        }
    }
}
