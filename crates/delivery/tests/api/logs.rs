//! What `sba` writes holds no secret (issue 16). The real binary runs as a child process, with
//! every log line on (`RUST_LOG=trace`, JSON) and a distinct secret planted in every setting
//! that takes one: the JWT secrets, the database, Redis and OTLP passwords, the Supabase keys.
//! A whole scenario runs against it (REST calls with bearer tokens, a WebSocket handshake with
//! the token in `access_token` and one in the subprotocol list, a token refresh over the
//! socket, forged tokens, event ingest persisted by the in-process worker, failing Supabase
//! calls whose error messages echo the credentials they were sent) and the configuration
//! errors a typo makes. Neither secrets nor tokens (nor their percent-encoded forms) may
//! appear in what it wrote, which must still show the scenario, so that the test cannot pass
//! on empty logs.

use std::io::{BufRead as _, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::StatusCode;
use sba_domain::{Role, TenantId, UserId};
use sba_infrastructure::auth::{DevTokenRequest, HsJwtSigner, JwtRules};
use sba_infrastructure::internal_store::test_support::fresh_postgres_url;
use sba_infrastructure::redis::test_support::PrivateRedis;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, client_async};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{new_tenant, process_text, sba_process, serve_active_tenant};

/// How long the test waits for anything (the server to answer, a log line, an exit) before it
/// fails: generous, for a loaded two-core machine.
const PATIENCE: Duration = Duration::from_mins(1);

/// The most verbose level, every library's `trace` lines too: what an operator chasing a
/// problem may turn on. The scenario takes about as long as at `debug` (some 4 s).
const LOG_FILTER: &str = "trace";

const ISSUER: &str = "https://issuer.test/auth/v1";
const AUDIENCE: &str = "sba-logs";
const REDIS_USER: &str = "sba-logs";
const OTLP_USER: &str = "otlp-user";

/// One thing that must never be written, and what it is (for the failure message).
struct Needle {
    what: String,
    text: String,
}

/// Every planted secret and token, in each form in which it could be written.
#[derive(Default)]
struct Needles(Vec<Needle>);

impl Needles {
    /// A secret: its own text, its percent-encoded form (as in a URL) and its random part
    /// alone (a shortened echo still gives it away).
    fn secret(&mut self, what: &str, secret: &Secret) {
        self.push(what, &secret.text);
        self.push(&format!("{what} (percent-encoded)"), &secret.encoded());
        self.push(&format!("{what} (random part)"), &secret.nonce);
    }

    /// A token: whole, and its signature alone.
    fn token(&mut self, what: &str, token: &str) {
        self.push(what, token);
        let signature = token.rsplit('.').next().unwrap();
        self.push(&format!("{what} (signature)"), signature);
    }

    fn push(&mut self, what: &str, text: &str) {
        assert!(text.len() >= 12, "{what}: a needle this short could match by chance");
        if !self.0.iter().any(|needle| needle.text == text) {
            self.0.push(Needle { what: what.to_owned(), text: text.to_owned() });
        }
    }

    /// Panics naming every needle found in any of `outputs` (`(name, text)`): how many lines
    /// of which output hold it, and the first of them.
    fn assert_absent_from(&self, outputs: &[(&str, &str)]) {
        let mut leaks = Vec::new();
        for (name, text) in outputs {
            for needle in &self.0 {
                let mut lines = text.lines().filter(|line| line.contains(&needle.text));
                if let Some(first) = lines.next() {
                    let count = 1 + lines.count();
                    leaks.push(format!(
                        "{} in {count} line(s) of {name}, first:\n  {}",
                        needle.what,
                        excerpt(first, &needle.text)
                    ));
                }
            }
        }
        assert!(leaks.is_empty(), "{} leak(s):\n{}", leaks.len(), leaks.join("\n"));
    }
}

/// `line` around the first `needle`, at most a few hundred characters of it.
fn excerpt(line: &str, needle: &str) -> String {
    const BEFORE: usize = 100;
    const AFTER: usize = 200;
    let at = line.find(needle).unwrap_or_default();
    let start = line.floor_char_boundary(at.saturating_sub(BEFORE));
    let end = line.ceil_char_boundary((at + needle.len() + AFTER).min(line.len()));
    let (before, after) = (if start > 0 { "…" } else { "" }, if end < line.len() { "…" } else { "" });
    format!("{before}{}{after}", &line[start..end])
}

/// A planted secret: a random part that nothing else could contain, then characters that a
/// URL must percent-encode.
struct Secret {
    nonce: String,
    text: String,
}

impl Secret {
    fn new(label: &str) -> Self {
        let nonce = Uuid::new_v4().simple().to_string()[..20].to_owned();
        let text = format!("{nonce}-{label}/p@ss:w#rd%");
        Self { nonce, text }
    }

    /// A secret shorter than the 32 bytes an HS256 secret needs.
    fn too_short() -> Self {
        let nonce = Uuid::new_v4().simple().to_string()[..16].to_owned();
        let text = format!("{nonce}-short");
        Self { nonce, text }
    }

    /// As it goes into a URL's user info.
    fn encoded(&self) -> String {
        percent_encoded(&self.text)
    }
}

/// `text` with every byte but the unreserved characters of RFC 3986 percent-encoded.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// What a child process writes, read as it comes (a reader thread per stream), so that the
/// test can wait for a log line while the process runs.
struct Capture {
    text: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Capture {
    fn start(streams: Vec<Box<dyn Read + Send>>) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let readers = streams
            .into_iter()
            .map(|stream| {
                let text = Arc::clone(&text);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    let mut line = Vec::new();
                    while reader.read_until(b'\n', &mut line).is_ok_and(|read| read > 0) {
                        text.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
                        line.clear();
                    }
                })
            })
            .collect();
        Self { text, readers }
    }

    fn snapshot(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Everything written, once the process closed its streams.
    fn finish(self) -> String {
        for reader in self.readers {
            reader.join().unwrap();
        }
        Arc::try_unwrap(self.text).unwrap().into_inner().unwrap()
    }
}

/// `sba serve` as a child process, killed if the test ends before it stops.
struct Server {
    child: Child,
    capture: Option<Capture>,
    address: String,
}

impl Server {
    fn start(env: &[(&str, String)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (mut command, dir) = sba_process(&["serve"]);
        command
            .env("SBA_DATA_DIR", dir.join("data"))
            .env("PORT", port.to_string())
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting sba serve");
        let streams: Vec<Box<dyn Read + Send>> =
            vec![Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        Self { child, capture: Some(Capture::start(streams)), address: format!("127.0.0.1:{port}") }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn output(&self) -> String {
        self.capture.as_ref().map(Capture::snapshot).unwrap_or_default()
    }

    /// Waits until `path` answers 200, failing early (with the output) if the server exits.
    async fn wait_for(&mut self, client: &reqwest::Client, path: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(response) = client.get(self.url(path)).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sba serve exited ({status}) before {path} answered 200; {}", saved(&self.output()));
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not answer 200 in time; {}",
                saved(&self.output())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an event with `message` is logged.
    async fn wait_for_logged(&self, message: &str) {
        let deadline = Instant::now() + PATIENCE;
        // Only the lines holding the text are parsed: at `trace` there are many.
        let logged = |output: &str| {
            output.lines().filter(|line| line.contains(message)).any(|line| {
                serde_json::from_str::<Value>(line).is_ok_and(|line| is_line(&line, message, &[]))
            })
        };
        while !logged(&self.output()) {
            assert!(
                Instant::now() < deadline,
                "`{message}` was not logged in time; {}",
                saved(&self.output())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit; answers everything it wrote.
    async fn terminate(mut self) -> String {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "sba serve did not stop on SIGTERM; {}",
                saved(&self.output())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let output = self.capture.take().unwrap().finish();
        assert!(status.success(), "sba serve exited with {status} after SIGTERM; {}", saved(&output));
        output
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().is_ok_and(|status| status.is_none()) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where the failure message sends the reader: `output` is written to a file of its own (at
/// `trace` it is far too long for a failure message).
fn saved(output: &str) -> String {
    let file = std::env::temp_dir().join(format!("sba-logs-test-{}.log", Uuid::new_v4().simple()));
    match std::fs::write(&file, output) {
        Ok(()) => format!("the whole output is in {}", file.display()),
        Err(error) => format!("the output could not be saved ({error}):\n{output}"),
    }
}

/// The JSON log lines of `output` (other lines are skipped).
fn log_lines(output: &str) -> Vec<Value> {
    output.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).collect()
}

/// Whether `line` is an event with `message` whose fields or spans hold every one of `values`
/// (compared as text: `201` matches a status of 201).
fn is_line(line: &Value, message: &str, values: &[&str]) -> bool {
    fn leaves(value: &Value, into: &mut Vec<String>) {
        match value {
            Value::Object(members) => members.values().for_each(|member| leaves(member, into)),
            Value::Array(items) => items.iter().for_each(|item| leaves(item, into)),
            Value::String(text) => into.push(text.clone()),
            other => into.push(other.to_string()),
        }
    }
    if line["fields"]["message"] != message {
        return false;
    }
    let mut found = Vec::new();
    leaves(line, &mut found);
    values.iter().all(|value| found.iter().any(|leaf| leaf == value))
}

/// Panics unless some line of `lines` is an event with `message` holding `values`.
fn assert_logged(lines: &[Value], message: &str, values: &[&str], output: &str) {
    assert!(
        lines.iter().any(|line| is_line(line, message, values)),
        "no `{message}` log line with {values:?}; {}",
        saved(output)
    );
}

/// A signer of tokens for the tenant's users, with `secret`.
fn signer(secret: &str) -> HsJwtSigner {
    HsJwtSigner::new(
        &SecretString::from(secret.to_owned()),
        JwtRules { issuer: Some(ISSUER.into()), audience: Some(AUDIENCE.into()), leeway: Duration::ZERO },
    )
}

fn sign(signer: &HsJwtSigner, tenant: TenantId, user: &str, role: Role) -> String {
    signer
        .sign(&DevTokenRequest {
            tenant_id: tenant,
            user_id: UserId::parse(user).unwrap(),
            role,
            ttl: Duration::from_mins(10),
        })
        .unwrap()
}

/// `token` with one character of its signature changed.
fn tampered(token: &str) -> String {
    let at = token.len() - 10;
    let changed = if &token[at..=at] == "A" { "B" } else { "A" };
    format!("{}{changed}{}", &token[..at], &token[at + 1..])
}

/// A PostgREST that knows one active tenant and fails every session call: 500 for a write,
/// 503 (retried) for a read, with a message that echoes the credentials it was sent, as an
/// error message may.
async fn failing_postgrest(tenant: TenantId) -> MockServer {
    let server = MockServer::start().await;
    serve_active_tenant(&server, tenant).await;
    let echo = |status: u16| {
        move |request: &Request| {
            let header = |name: &str| {
                request.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned()
            };
            ResponseTemplate::new(status).set_body_json(json!({
                "code": "XX000",
                "message": format!("cannot serve {} {}", header("authorization"), header("apikey")),
                "hint": format!("check the key {}", header("apikey")),
                "details": null,
            }))
        }
    };
    Mock::given(method("POST")).and(path("/rest/v1/sessions")).respond_with(echo(500)).mount(&server).await;
    Mock::given(method("GET")).and(path("/rest/v1/sessions")).respond_with(echo(503)).mount(&server).await;
    server
}

/// A private Redis that only a user with `password` may use: its default user is off.
fn redis_with_password(password: &Secret) -> PrivateRedis {
    let redis = PrivateRedis::start();
    for args in [
        vec!["ACL", "SETUSER", REDIS_USER, "on", &format!(">{}", password.text), "~*", "&*", "+@all"],
        vec!["ACL", "SETUSER", "default", "off"],
    ] {
        let output = Command::new("redis-cli")
            .args(["-u", &redis.url()])
            .args(args)
            .output()
            .expect("redis-cli is installed with redis-server");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "OK", "{}", process_text(&output));
    }
    redis
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A WebSocket client of the stream.
type Socket = WebSocketStream<TcpStream>;

/// Connects to `/v1/stream` of `server` with `query` appended to the path and `protocols`
/// offered; a refused handshake answers its status.
async fn handshake(server: &Server, query: &str, protocols: &str) -> Result<Socket, u16> {
    let mut request = format!("ws://{}/v1/stream{query}", server.address).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(protocols).unwrap());
    let tcp = TcpStream::connect(&server.address).await.unwrap();
    match client_async(request, tcp).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(error) => panic!("the handshake failed: {error}"),
    }
}

/// The next text frame of `socket` as JSON, skipping pings.
async fn frame(socket: &mut Socket) -> Value {
    loop {
        let next = tokio::time::timeout(PATIENCE, socket.next()).await.expect("a frame in time");
        match next {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("a text frame was expected, not {other:?}"),
        }
    }
}

/// Sends `op` and answers the next frame.
async fn ask(socket: &mut Socket, op: Value) -> Value {
    socket.send(Message::text(op.to_string())).await.unwrap();
    frame(socket).await
}

/// Event frames until the one of `seq`.
async fn events_through(socket: &mut Socket, seq: u64) {
    loop {
        let frame = frame(socket).await;
        assert_eq!(frame["type"], "event", "{frame}");
        if frame["seq"].as_u64().unwrap() >= seq {
            return;
        }
    }
}

/// The seq of the last event of an accepted ingest batch.
async fn last_seq(response: reqwest::Response) -> u64 {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body["accepted"].as_array().unwrap().last().unwrap()["seq"].as_u64().unwrap()
}

/// The secrets planted in the settings of `sba serve`.
struct Planted {
    supabase_jwt_secret: Secret,
    jwt_secret: Secret,
    rotated_jwt_secret: Secret,
    database_password: Secret,
    redis_password: Secret,
    service_role_key: Secret,
    anon_key: Secret,
    otlp_password: Secret,
}

impl Planted {
    fn new() -> Self {
        Self {
            supabase_jwt_secret: Secret::new("supabase-jwt-secret"),
            jwt_secret: Secret::new("jwt-secret-one"),
            rotated_jwt_secret: Secret::new("jwt-secret-two"),
            database_password: Secret::new("database-password"),
            redis_password: Secret::new("redis-password"),
            service_role_key: Secret::new("service-role-key"),
            anon_key: Secret::new("anon-key"),
            otlp_password: Secret::new("otlp-password"),
        }
    }

    /// The environment of `sba serve` on a fresh database, `redis` and `postgrest`.
    async fn env(&self, redis: &PrivateRedis, postgrest: &MockServer) -> Vec<(&'static str, String)> {
        let mut database = url::Url::parse(&fresh_postgres_url().await).unwrap();
        // The test PostgreSQL trusts local connections: the password is sent and ignored.
        database.set_password(Some(&self.database_password.encoded())).unwrap();
        let redis_url = format!(
            "redis://{REDIS_USER}:{}@{}",
            self.redis_password.encoded(),
            redis.url().trim_start_matches("redis://")
        );
        // Nothing listens there: every export fails, and says so in the logs.
        let otlp = format!("http://{OTLP_USER}:{}@127.0.0.1:{}", self.otlp_password.encoded(), closed_port());
        vec![
            ("RUST_LOG", LOG_FILTER.to_owned()),
            ("SBA_LOG__FORMAT", "json".to_owned()),
            ("DATABASE_URL", database.to_string()),
            ("REDIS_URL", redis_url),
            ("SUPABASE_URL", postgrest.uri()),
            ("SUPABASE_SERVICE_ROLE_KEY", self.service_role_key.text.clone()),
            ("SUPABASE_ANON_KEY", self.anon_key.text.clone()),
            ("SUPABASE_JWT_SECRET", self.supabase_jwt_secret.text.clone()),
            ("SBA_AUTH__JWT_SECRETS", format!("{},{}", self.jwt_secret.text, self.rotated_jwt_secret.text)),
            ("SBA_AUTH__ISSUER", ISSUER.to_owned()),
            ("SBA_AUTH__AUDIENCE", AUDIENCE.to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
            // The default in development, stated: the worker persisting the ingested events
            // runs in the server's process, so its logs are captured too.
            ("SBA_WORKER__IN_PROCESS", "true".to_owned()),
            ("SBA_SERVER__SHUTDOWN_TIMEOUT_SECS", "5".to_owned()),
        ]
    }

    fn add_to(&self, needles: &mut Needles) {
        for (what, secret) in [
            ("SUPABASE_JWT_SECRET", &self.supabase_jwt_secret),
            ("the first SBA_AUTH__JWT_SECRETS secret", &self.jwt_secret),
            ("the second SBA_AUTH__JWT_SECRETS secret", &self.rotated_jwt_secret),
            ("the DATABASE_URL password", &self.database_password),
            ("the REDIS_URL password", &self.redis_password),
            ("SUPABASE_SERVICE_ROLE_KEY", &self.service_role_key),
            ("SUPABASE_ANON_KEY", &self.anon_key),
            ("the OTEL_EXPORTER_OTLP_ENDPOINT password", &self.otlp_password),
        ] {
            needles.secret(what, secret);
        }
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{OTLP_USER}:{}", self.otlp_password.text));
        needles.push("the OTLP Basic credentials", &basic);
    }
}

/// The tokens of the scenario: signed with each configured secret, and two that no secret
/// signed.
struct Tokens {
    user: String,
    refreshed: String,
    admin: String,
    agent: String,
    forged: String,
    tampered: String,
}

impl Tokens {
    fn new(planted: &Planted, tenant: TenantId) -> Self {
        let user = sign(&signer(&planted.supabase_jwt_secret.text), tenant, "alice", Role::Authenticated);
        Self {
            refreshed: sign(&signer(&planted.jwt_secret.text), tenant, "alice", Role::Authenticated),
            admin: sign(&signer(&planted.jwt_secret.text), tenant, "root", Role::Admin),
            agent: sign(&signer(&planted.rotated_jwt_secret.text), tenant, "agent-1", Role::Agent),
            forged: sign(&signer(&Secret::new("an-attackers-secret").text), tenant, "alice", Role::Admin),
            tampered: tampered(&user),
            user,
        }
    }

    fn add_to(&self, needles: &mut Needles) {
        for (what, token) in [
            ("the user's token", &self.user),
            ("the user's refreshed token", &self.refreshed),
            ("the admin's token", &self.admin),
            ("the agent's token", &self.agent),
            ("a forged token", &self.forged),
            ("a tampered token", &self.tampered),
        ] {
            needles.token(what, token);
        }
    }
}

/// The scenario's requests to a running server.
struct Scenario<'a> {
    server: &'a Server,
    client: reqwest::Client,
    tokens: &'a Tokens,
}

impl Scenario<'_> {
    fn get(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client.get(self.server.url(path)).bearer_auth(token)
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client.post(self.server.url(path)).bearer_auth(token).json(body)
    }

    /// Authorised REST calls; answers the id of the run created.
    async fn rest(&self) -> String {
        let tokens = self.tokens;
        let me: Value = self.get("/v1/me", &tokens.user).send().await.unwrap().json().await.unwrap();
        assert!(me["tenant_id"].is_string(), "{me}");
        let response = self.post("/v1/runs", &tokens.user, &json!({"agent": "bot"})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let run: Value = response.json().await.unwrap();
        let run_id = run["id"].as_str().unwrap().to_owned();
        let response = self.get(&format!("/v1/runs/{run_id}"), &tokens.user).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let response = self.get("/v1/runs", &tokens.admin).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        run_id
    }

    /// Forged and tampered tokens, as a header and in the handshake's query.
    async fn refused(&self) {
        for token in [&self.tokens.forged, &self.tokens.tampered] {
            let response = self.get("/v1/runs", token).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let refused = handshake(self.server, &format!("?access_token={token}"), "sba.v1").await;
            assert_eq!(refused.err(), Some(401));
        }
    }

    /// Ingest by the run's agent; answers the seq of the last event.
    async fn ingest(&self, run_id: &str, events: Value) -> u64 {
        let path = format!("/v1/runs/{run_id}/events");
        last_seq(self.post(&path, &self.tokens.agent, &json!({"events": events})).send().await.unwrap()).await
    }

    /// The stream: the token in `access_token`, a replay, then a live event, a token refresh;
    /// then the token in the subprotocol list.
    async fn stream(&self, run_id: &str, replayed: u64) {
        let tokens = self.tokens;
        let mut socket = handshake(self.server, &format!("?access_token={}", tokens.user), "sba.v1")
            .await
            .expect("an upgrade");
        let subscribe =
            json!({"op": "subscribe", "id": "sub", "channel": format!("run:{run_id}"), "after_seq": 0});
        assert_eq!(ask(&mut socket, subscribe).await, json!({"type": "ack", "id": "sub"}));
        events_through(&mut socket, replayed).await;
        let delta = json!([{"id": "e4", "kind": "step.delta", "data": {"step_id": "s1", "text": " world"}}]);
        let live = self.ingest(run_id, delta).await;
        events_through(&mut socket, live).await;
        let refresh = json!({"op": "auth", "id": "refresh", "token": tokens.refreshed});
        assert_eq!(ask(&mut socket, refresh).await, json!({"type": "ack", "id": "refresh"}));
        socket.close(None).await.unwrap();

        let protocols = format!("sba.v1, bearer.{}", tokens.admin);
        let mut socket = handshake(self.server, "", &protocols).await.expect("an upgrade");
        let pong = ask(&mut socket, json!({"op": "ping", "id": "p"})).await;
        assert_eq!(pong, json!({"type": "pong", "id": "p"}));
        socket.close(None).await.unwrap();
    }

    /// Supabase fails: a write with the user's own token, a read (retried) with the service
    /// key.
    async fn failing_supabase(&self) {
        let response =
            self.post("/v1/sessions", &self.tokens.user, &json!({"title": "t"})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let response = self.get("/v1/sessions", &self.tokens.admin).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

/// Panics unless PostgREST got the planted keys and the user's token: they were in use.
async fn assert_credentials_reached(postgrest: &MockServer, planted: &Planted, tokens: &Tokens) {
    let sent = postgrest.received_requests().await.unwrap();
    let header = |request: &Request, name: &str| {
        request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    let sessions: Vec<&Request> = sent.iter().filter(|r| r.url.path() == "/rest/v1/sessions").collect();
    let forwarded = |r: &&Request| {
        header(r, "authorization") == format!("Bearer {}", tokens.user)
            && header(r, "apikey") == planted.anon_key.text
    };
    assert!(sessions.iter().any(forwarded), "the user's token and the anon key were not sent");
    let serviced =
        |r: &&Request| header(r, "authorization") == format!("Bearer {}", planted.service_role_key.text);
    assert!(sessions.iter().any(serviced), "the service role key was not sent");
}

/// Panics unless `output` logged the scenario: so that no leak cannot mean no logs.
fn assert_scenario_logged(output: &str) {
    let lines = log_lines(output);
    assert!(lines.len() > 100, "{} JSON log lines only; {}", lines.len(), saved(output));
    for (message, values) in [
        ("sba is serving", vec![]),
        ("request", vec!["/v1/me", "200"]),
        ("request", vec!["/v1/runs", "201"]),
        ("request", vec!["/v1/runs/{run_id}", "200"]),
        ("request", vec!["/v1/runs", "401"]),
        ("request", vec!["/v1/stream", "401"]),
        ("request", vec!["/v1/stream", "101"]),
        ("request", vec!["/v1/runs/{run_id}/events", "200"]),
        ("request", vec!["/v1/sessions", "500"]),
        ("persisted queued events", vec![]),
        ("sba stopped", vec![]),
    ] {
        assert_logged(&lines, message, &values, output);
    }
    let failures: Vec<&Value> = lines.iter().filter(|line| is_line(line, "request failed", &[])).collect();
    for answered in ["PostgREST answered 500", "PostgREST answered 503"] {
        assert!(
            failures
                .iter()
                .any(|line| line["fields"]["error"].as_str().is_some_and(|e| e.contains(answered))),
            "no `request failed` line saying {answered}; {}",
            saved(output)
        );
    }
    let retried = |line: &Value| {
        line["fields"]["message"].as_str().is_some_and(|m| m.starts_with("a PostgREST read failed; retrying"))
    };
    assert!(lines.iter().any(retried), "no retry of the failed PostgREST read logged; {}", saved(output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_scenario_logs_no_planted_secret_token_or_password() {
    let planted = Planted::new();
    let tenant = new_tenant();
    let tokens = Tokens::new(&planted, tenant);
    let postgrest = failing_postgrest(tenant).await;
    let redis = redis_with_password(&planted.redis_password);
    let env = planted.env(&redis, &postgrest).await;

    let mut server = Server::start(&env);
    let client = reqwest::Client::builder().timeout(PATIENCE).build().unwrap();
    server.wait_for(&client, "/healthz").await;
    // Ready: the database, Redis (as the planted user) and PostgREST answered.
    server.wait_for(&client, "/readyz").await;
    let scenario = Scenario { server: &server, client, tokens: &tokens };
    let run_id = scenario.rest().await;
    scenario.refused().await;
    let opening = json!([
        {"id": "e1", "kind": "run.started"},
        {"id": "e2", "kind": "step.created", "data": {"step_id": "s1", "type": "message_creation"}},
        {"id": "e3", "kind": "step.delta", "data": {"step_id": "s1", "text": "Hello"}},
    ]);
    let opened = scenario.ingest(&run_id, opening).await;
    scenario.stream(&run_id, opened).await;
    scenario.failing_supabase().await;
    let metrics = scenario.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    // The worker persisted what was ingested.
    server.wait_for_logged("persisted queued events").await;
    let output = server.terminate().await;

    assert_credentials_reached(&postgrest, &planted, &tokens).await;
    let mut needles = Needles::default();
    planted.add_to(&mut needles);
    tokens.add_to(&mut needles);
    needles.assert_absent_from(&[("the output of sba serve", &output), ("/metrics", &metrics)]);
    assert_scenario_logged(&output);
}

/// One run of `sba` in the configuration test, and what it must show.
struct Run {
    name: &'static str,
    args: &'static [&'static str],
    env: Vec<(&'static str, String)>,
    exit_code: i32,
    shown: &'static [&'static str],
}

impl Run {
    /// `sba` run to its end (with a data directory of its own); answers what it wrote.
    fn output(&self) -> String {
        let (mut command, dir) = sba_process(self.args);
        let output = command
            .env("SBA_DATA_DIR", dir.join("data"))
            .envs(self.env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = process_text(&output);
        assert_eq!(output.status.code(), Some(self.exit_code), "{}; {}", self.name, saved(&text));
        for expected in self.shown {
            assert!(text.contains(expected), "{} does not mention {expected}; {}", self.name, saved(&text));
        }
        text
    }
}

/// The secrets planted in the configurations of [`configuration_errors_print_no_planted_secret`].
struct ConfigSecrets {
    database_password: Secret,
    redis_password: Secret,
    supabase_password: Secret,
    supabase_db_password: Secret,
    service_role_key: Secret,
    anon_key: Secret,
    short_jwt_secret: Secret,
    jwt_secret: Secret,
    jwks_key: Secret,
    otlp_password: Secret,
    file_password: Secret,
}

impl ConfigSecrets {
    fn new() -> Self {
        Self {
            database_password: Secret::new("database-password"),
            redis_password: Secret::new("redis-password"),
            supabase_password: Secret::new("supabase-url-password"),
            supabase_db_password: Secret::new("supabase-db-password"),
            service_role_key: Secret::new("service-role-key"),
            anon_key: Secret::new("anon-key"),
            short_jwt_secret: Secret::too_short(),
            jwt_secret: Secret::new("jwt-secret-long-enough-for-hs256"),
            jwks_key: Secret::new("jwks-api-key"),
            otlp_password: Secret::new("otlp-password"),
            file_password: Secret::new("config-file-password"),
        }
    }

    fn needles(&self) -> Needles {
        let mut needles = Needles::default();
        for (what, secret) in [
            ("the DATABASE_URL password", &self.database_password),
            ("the REDIS_URL password", &self.redis_password),
            ("the SUPABASE_URL password", &self.supabase_password),
            ("the SUPABASE_DB_URL password", &self.supabase_db_password),
            ("SUPABASE_SERVICE_ROLE_KEY", &self.service_role_key),
            ("SUPABASE_ANON_KEY", &self.anon_key),
            ("the too short JWT secret", &self.short_jwt_secret),
            ("the JWT secret", &self.jwt_secret),
            ("the SBA_AUTH__JWKS_URL key", &self.jwks_key),
            ("the OTEL_EXPORTER_OTLP_ENDPOINT password", &self.otlp_password),
            ("the password in the configuration file", &self.file_password),
        ] {
            needles.secret(what, secret);
        }
        needles
    }

    /// What every configuration sets.
    fn common(&self, production: bool) -> Vec<(&'static str, String)> {
        vec![
            ("SBA_ENV", if production { "production" } else { "development" }.to_owned()),
            ("RUST_LOG", LOG_FILTER.to_owned()),
            ("SBA_LOG__FORMAT", "json".to_owned()),
            ("SUPABASE_SERVICE_ROLE_KEY", self.service_role_key.text.clone()),
            ("SUPABASE_ANON_KEY", self.anon_key.text.clone()),
            ("SBA_AUTH__ISSUER", ISSUER.to_owned()),
            ("SBA_AUTH__AUDIENCE", AUDIENCE.to_owned()),
            ("SBA_CORS__ALLOWED_ORIGINS", "https://app.example.com".to_owned()),
        ]
    }

    /// Typos: a URL that does not parse, wrong schemes, a secret too short; every one of
    /// them holding a secret.
    fn invalid(&self) -> Vec<(&'static str, String)> {
        let mut env = self.common(false);
        env.extend([
            ("DATABASE_URL", format!("postgres://app:{}@db:54x32/sba", self.database_password.encoded())),
            ("REDIS_URL", format!("http://cache:{}@cache:6379", self.redis_password.encoded())),
            ("SUPABASE_URL", format!("ftp://supabase:{}@abc.supabase.co", self.supabase_password.encoded())),
            (
                "SUPABASE_DB_URL",
                format!(
                    "mysql://postgres:{}@db.abc.supabase.co/postgres",
                    self.supabase_db_password.encoded()
                ),
            ),
            ("SBA_AUTH__JWT_SECRETS", format!("{},{}", self.short_jwt_secret.text, self.jwt_secret.text)),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("ftp://{OTLP_USER}:{}@collector:4318", self.otlp_password.encoded()),
            ),
        ]);
        env
    }

    /// `http://` URLs holding secrets, and a short secret, in production.
    fn insecure(&self) -> Vec<(&'static str, String)> {
        let mut env = self.common(true);
        env.extend([
            ("DATABASE_URL", format!("postgres://app:{}@db:5432/sba", self.database_password.encoded())),
            ("REDIS_URL", format!("redis://cache:{}@cache:6379", self.redis_password.encoded())),
            ("SUPABASE_URL", format!("http://supabase:{}@abc.supabase.co", self.supabase_password.encoded())),
            ("SUPABASE_JWT_SECRET", self.short_jwt_secret.text.clone()),
            (
                "SBA_AUTH__JWKS_URL",
                format!("http://keys.example/jwks.json?apikey={}", self.jwks_key.encoded()),
            ),
        ]);
        env
    }

    /// Valid, with every secret: `config check` prints the effective configuration.
    fn valid(&self) -> Vec<(&'static str, String)> {
        let mut env = self.common(false);
        env.extend([
            ("DATABASE_URL", format!("postgres://app:{}@db:5432/sba", self.database_password.encoded())),
            ("REDIS_URL", format!("redis://cache:{}@cache:6379", self.redis_password.encoded())),
            ("SUPABASE_URL", "http://abc.supabase.test".to_owned()),
            (
                "SUPABASE_DB_URL",
                format!(
                    "postgres://postgres:{}@db.abc.supabase.co/postgres",
                    self.supabase_db_password.encoded()
                ),
            ),
            ("SBA_AUTH__JWT_SECRETS", self.jwt_secret.text.clone()),
            (
                "SBA_AUTH__JWKS_URL",
                format!("http://keys.example/jwks.json?apikey={}", self.jwks_key.encoded()),
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{OTLP_USER}:{}@127.0.0.1:{}", self.otlp_password.encoded(), closed_port()),
            ),
        ]);
        env
    }

    /// Valid, but the database is not there: `serve` fails connecting to it.
    fn unreachable_database(&self) -> Vec<(&'static str, String)> {
        let url =
            format!("postgres://app:{}@127.0.0.1:{}/sba", self.database_password.encoded(), closed_port());
        let otlp = format!("http://{OTLP_USER}:{}@127.0.0.1:{}", self.otlp_password.encoded(), closed_port());
        vec![
            ("RUST_LOG", LOG_FILTER.to_owned()),
            ("SBA_LOG__FORMAT", "json".to_owned()),
            ("DATABASE_URL", url),
            ("SBA_DATABASE__CONNECT_TIMEOUT_SECS", "1".to_owned()),
            ("SBA_AUTH__JWT_SECRETS", self.jwt_secret.text.clone()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp),
        ]
    }

    /// A configuration file in `dir` whose line with a secret has a syntax error (an
    /// unclosed string).
    fn broken_file(&self, dir: &std::path::Path) -> Vec<(&'static str, String)> {
        let file = dir.join("sba.toml");
        let url = format!("postgres://app:{}@db:5432/sba", self.file_password.encoded());
        let text = format!("[database]\nurl = \"{url}\n[auth]\njwt_secrets = \"{}\"\n", self.jwt_secret.text);
        std::fs::write(&file, text).unwrap();
        let mut env = self.common(false);
        env.push(("SBA_CONFIG_FILE", file.display().to_string()));
        env
    }
}

#[test]
fn configuration_errors_print_no_planted_secret() {
    let secrets = ConfigSecrets::new();
    let dir = std::env::temp_dir().join(format!("sba-logs-config-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let check: &[&str] = &["config", "check"];
    let runs = [
        Run {
            name: "config check with invalid settings",
            args: check,
            env: secrets.invalid(),
            exit_code: 2,
            shown: &[
                "DATABASE_URL",
                "REDIS_URL",
                "SUPABASE_URL",
                "SUPABASE_DB_URL",
                "SBA_AUTH__JWT_SECRETS",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ],
        },
        Run {
            name: "serve with invalid settings",
            args: &["serve"],
            env: secrets.invalid(),
            exit_code: 2,
            shown: &["invalid configuration", "DATABASE_URL"],
        },
        Run {
            name: "config check with http:// in production",
            args: check,
            env: secrets.insecure(),
            exit_code: 2,
            shown: &["SUPABASE_URL", "SBA_AUTH__JWKS_URL", "SUPABASE_JWT_SECRET"],
        },
        Run {
            name: "config check with valid settings",
            args: check,
            env: secrets.valid(),
            exit_code: 0,
            shown: &["configuration is valid", "REDACTED@"],
        },
        Run {
            name: "serve with an unreachable database",
            args: &["serve"],
            env: secrets.unreachable_database(),
            exit_code: 1,
            shown: &["sba failed", "127.0.0.1"],
        },
        Run {
            name: "config check with a broken configuration file",
            args: check,
            env: secrets.broken_file(&dir),
            exit_code: 2,
            shown: &["TOML parse error"],
        },
        Run {
            name: "serve with a broken configuration file",
            args: &["serve"],
            env: secrets.broken_file(&dir),
            exit_code: 2,
            shown: &["invalid configuration"],
        },
    ];
    let outputs: Vec<(&str, String)> = runs.iter().map(|run| (run.name, run.output())).collect();
    let _ = std::fs::remove_dir_all(&dir);
    let outputs: Vec<(&str, &str)> = outputs.iter().map(|(name, text)| (*name, text.as_str())).collect();
    secrets.needles().assert_absent_from(&outputs);
}
