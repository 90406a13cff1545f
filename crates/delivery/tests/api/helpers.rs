//! `spawn_app()`: a real server on a random port, with a fresh database, and a client; the
//! request helpers on [`TestApp`] send the usual requests to it.

use std::net::TcpListener;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use sba_delivery::startup::Application;
use sba_domain::{Role, TenantId, UserId};
use sba_infrastructure::auth::{DevTokenRequest, HsJwtSigner, JwtRules};
use sba_infrastructure::config::{EnvSnapshot, LoadOptions, Settings, load};
use sba_infrastructure::internal_store::test_support::fresh_postgres_url;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

pub const SECRET: &str = "test-secret-test-secret-test-secret-0001";
pub const ISSUER: &str = "https://issuer.test/auth/v1";
pub const AUDIENCE: &str = "sba-tests";

/// Which internal store the app under test uses.
#[derive(Debug, Clone, Copy)]
pub enum Store {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub address: String,
    /// The admin listener's address, when the app has one.
    pub admin_address: Option<String>,
    /// The settings the app was built with (for building a worker beside it).
    pub settings: Settings,
    client: reqwest::Client,
    signer: HsJwtSigner,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `path` on the admin listener (panics when the app has none).
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin_address.as_deref().expect("an app with an admin port"))
    }

    /// A request to `path` to finish by hand: for tests that send their own headers or bodies.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// `GET path` with no `Authorization` header.
    pub async fn get_anonymous(&self, path: &str) -> Response {
        send(self.request(Method::GET, path)).await
    }

    /// `GET path` as the bearer of `token`.
    pub async fn get(&self, path: &str, token: &str) -> Response {
        send(self.request(Method::GET, path).bearer_auth(token)).await
    }

    /// `POST path` without a body, as the bearer of `token`.
    pub async fn post(&self, path: &str, token: &str) -> Response {
        send(self.request(Method::POST, path).bearer_auth(token)).await
    }

    /// `POST path` with `body` as JSON, as the bearer of `token`.
    pub async fn post_json(&self, path: &str, token: &str, body: &impl Serialize) -> Response {
        send(self.request(Method::POST, path).bearer_auth(token).json(body)).await
    }

    /// `PATCH path` with `body` as JSON, as the bearer of `token`.
    pub async fn patch_json(&self, path: &str, token: &str, body: &impl Serialize) -> Response {
        send(self.request(Method::PATCH, path).bearer_auth(token).json(body)).await
    }

    /// A valid token for `user` of `tenant` with `role`.
    pub fn token(&self, tenant: TenantId, user: &str, role: Role) -> String {
        self.token_for(tenant, user, role, Duration::from_mins(5))
    }

    /// A token for `user` of `tenant` with `role`, valid for `ttl`.
    pub fn token_for(&self, tenant: TenantId, user: &str, role: Role, ttl: Duration) -> String {
        self.signer
            .sign(&DevTokenRequest { tenant_id: tenant, user_id: UserId::parse(user).unwrap(), role, ttl })
            .unwrap()
    }

    /// Stops the server gracefully, as SIGTERM does.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn send(request: RequestBuilder) -> Response {
    request.send().await.expect("sending the request")
}

/// The JSON body of `response`, after checking its status (the body is shown when it differs).
pub async fn json_of(response: Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(actual, status, "{body}");
    body
}

/// The problem+json body of `response`, after checking its status, content type, `code`,
/// `status` member and that its `request_id` is the `X-Request-Id` header's.
pub async fn problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = json_of(response, status).await;
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], request_id.as_str());
    body
}

pub fn new_tenant() -> TenantId {
    TenantId::from_uuid(Uuid::now_v7())
}

/// Starts the application as production would wire it, on port 0.
pub async fn spawn_app(store: Store) -> TestApp {
    spawn_app_with(store, &[]).await
}

/// Like [`spawn_app`], with extra environment variables.
pub async fn spawn_app_with(store: Store, extra_env: &[(&str, &str)]) -> TestApp {
    spawn(store, extra_env, false).await
}

/// Like [`spawn_app_with`], with an admin listener on another port 0
/// ([`TestApp::admin_url`]): the operator routes move there.
pub async fn spawn_app_with_admin_port(store: Store, extra_env: &[(&str, &str)]) -> TestApp {
    spawn(store, extra_env, true).await
}

/// Like [`spawn_app_with`] on the PostgreSQL database at `database_url` (one
/// [`fresh_postgres_url`] made): two apps on one database are two nodes of one deployment.
pub async fn spawn_app_on(database_url: &str, extra_env: &[(&str, &str)]) -> TestApp {
    let dir = std::env::temp_dir().join(format!("sba-api-test-{}", Uuid::new_v4().simple()));
    spawn_in(dir, database_url.to_owned(), extra_env, false).await
}

async fn spawn(store: Store, extra_env: &[(&str, &str)], admin_port: bool) -> TestApp {
    let dir = std::env::temp_dir().join(format!("sba-api-test-{}", Uuid::new_v4().simple()));
    let database_url = match store {
        Store::Sqlite => format!("sqlite://{}", dir.join("sba.db").display()),
        Store::Postgres => fresh_postgres_url().await,
    };
    spawn_in(dir, database_url, extra_env, admin_port).await
}

async fn spawn_in(
    dir: std::path::PathBuf,
    database_url: String,
    extra_env: &[(&str, &str)],
    admin_port: bool,
) -> TestApp {
    let mut env = vec![
        ("SBA_DATA_DIR", dir.display().to_string()),
        ("DATABASE_URL", database_url),
        ("SBA_AUTH__JWT_SECRETS", SECRET.to_owned()),
        ("SBA_AUTH__ISSUER", ISSUER.to_owned()),
        ("SBA_AUTH__AUDIENCE", AUDIENCE.to_owned()),
        ("SBA_AUTH__LEEWAY_SECS", "0".to_owned()),
        ("SBA_SERVER__SHUTDOWN_TIMEOUT_SECS", "1".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        // A test runs a worker itself when it needs one: an in-process worker would sweep and
        // record health behind its back, and with Redis consume the shared `persisters` group.
        ("SBA_WORKER__IN_PROCESS", "false".to_owned()),
    ];
    env.extend(extra_env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let env = EnvSnapshot::from_pairs(env);
    let settings = load(&env, &LoadOptions { config_dir: dir.join("config"), create_dev_secret: false })
        .unwrap_or_else(|problems| panic!("test settings are invalid: {problems}"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let admin_listener = admin_port.then(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let app = Application::build_with_listeners(settings.clone(), listener, admin_listener, async move {
        let _ = stopped.await;
    })
    .await
    .expect("building the application");
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin_address = app.admin_port().map(|port| format!("http://127.0.0.1:{port}"));
    tokio::spawn(app.run_until_stopped());
    let signer = HsJwtSigner::new(
        &SecretString::from(SECRET.to_owned()),
        JwtRules { issuer: Some(ISSUER.into()), audience: Some(AUDIENCE.into()), leeway: Duration::ZERO },
    );
    TestApp {
        address,
        admin_address,
        settings,
        client: reqwest::Client::new(),
        signer,
        shutdown: Some(shutdown),
    }
}

/// Generates one `#[tokio::test]` per store for each listed async test body taking `Store`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Store::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Store::Postgres).await;
                }
            )*
        }
    };
}

/// Adds `tenant` to the `tenants` table of a Supabase database, as the platform would.
pub async fn register_tenant(database_url: &str, tenant: TenantId, status: &str) {
    sba_infrastructure::internal_store::test_support::execute_sql(
        database_url,
        &format!(
            "insert into public.tenants (id, name, status) values ('{tenant}', 'tenant {tenant}', '{status}')"
        ),
    )
    .await;
}

/// `(id, seq)` of every entry of an accepted ingest batch's answer, in batch order.
pub fn accepted_seqs(body: &serde_json::Value) -> Vec<(String, u64)> {
    body["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e["seq"].as_u64().unwrap()))
        .collect()
}

/// The `sba` binary as a child process, run from a fresh empty directory (returned: a
/// data directory can go below it) with nothing of the test's environment.
pub fn sba_process(args: &[&str]) -> (std::process::Command, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sba-cli-test-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sba"));
    command.args(args).current_dir(&dir).env_clear();
    (command, dir)
}

/// What a finished process wrote: its stdout, then its stderr.
pub fn process_text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Makes the PostgREST double `server` answer the tenant lookup of `tenant` with an active
/// tenant without CORS origins, plan or rate limits of its own.
pub async fn serve_active_tenant(server: &wiremock::MockServer, tenant: TenantId) {
    let row = serde_json::json!([{
        "id": tenant.to_string(), "status": "active", "cors_origins": [], "plan": null,
        "rate_limit_requests": null, "rate_limit_window_secs": null,
    }]);
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/rest/v1/tenants"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(row))
        .mount(server)
        .await;
}
