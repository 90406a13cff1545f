#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! The PostgREST adapters against a PostgREST stand-in served by wiremock: whose
//! credentials each request carries, its headers, query string and body, how answers map to
//! domain types, and how errors, retries and timeouts behave. No database is needed.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sba_application::context::{AccessToken, Caller};
use sba_application::pagination::{Cursor, PageRequest};
use sba_application::ports::{
    ConflictKind, KnowledgeStore as _, RepositoryError, SessionStore as _, TenantDirectory as _,
};
use sba_domain::knowledge::{EMBEDDING_DIMENSION, Embedding, KnowledgeQuery, NewChunk, NewDocument};
use sba_domain::ratelimit::Quota;
use sba_domain::{
    DocumentId, Metadata, Role, Session, SessionId, SessionTitle, SessionUpdate, TenantId, TenantStatus,
    UserId,
};
use sba_infrastructure::supabase::postgrest::{PostgrestClient, PostgrestSettings};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;
use uuid::Uuid;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TENANT: &str = "0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e";
const SESSION: &str = "01937a2e-0000-7000-8000-000000000001";
const DOCUMENT: &str = "01937a2e-0000-7000-8000-00000000d0c0";
const SERVICE_KEY: &str = "service-role-key-SECRET-0001";
const ANON_KEY: &str = "anon-key-SECRET-0002";
/// A plain user's token: its payload is `{"sub":"alice","role":"authenticated","tenant_id":TENANT}`.
const USER_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.\
    eyJzdWIiOiJhbGljZSIsInJvbGUiOiJhdXRoZW50aWNhdGVkIiwidGVuYW50X2lkIjoiMGI3ZThmM2MtMmYwYS00YzU1LTlkMmUtM2YxYTViNmM3ZDhlIn0.\
    signature-SECRET-0003";
const SESSION_COLUMNS: &str = "id,tenant_id,user_id,title,metadata,created_at,updated_at";

// ---------------------------------------------------------------------------------------
// A PostgREST stand-in on wiremock: every request recorded, answered from a script in order.

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

/// PostgREST's error body.
fn error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"code": code, "message": message, "details": null, "hint": null}))
}

/// `status` with this body as it is (not necessarily JSON), labelled as JSON.
fn raw(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body, "application/json")
}

/// `status` with an empty body.
fn empty(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status)
}

/// Reads the request and answers an hour later: for the test, a server that never answers.
fn stall() -> ResponseTemplate {
    empty(200).set_delay(Duration::from_hours(1))
}

/// A request as the stand-in received it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    /// The request target: path and URL-encoded query, as wiremock's `Url` gives it back
    /// (which would show a raw space or `"` percent-encoded; reqwest's `Url` never sends
    /// them raw in the first place).
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl From<Request> for Recorded {
    fn from(request: Request) -> Self {
        let url = &request.url;
        let target =
            url.query().map_or_else(|| url.path().to_owned(), |query| format!("{}?{query}", url.path()));
        let headers = request
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        Self { method: request.method.to_string(), target, headers, body: request.body }
    }
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target.as_str(), |(path, _)| path)
    }

    /// The query string decoded as PostgREST decodes it (`+` is a space).
    fn query(&self) -> Vec<(String, String)> {
        let query = self.target.split_once('?').map_or("", |(_, query)| query);
        url::form_urlencoded::parse(query.as_bytes()).into_owned().collect()
    }

    fn param(&self, key: &str) -> Option<String> {
        let values: Vec<String> =
            self.query().into_iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect();
        assert!(values.len() <= 1, "{key} given {} times", values.len());
        values.into_iter().next()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Whether `secret` appears anywhere in the request: target, any header, body.
    fn carries(&self, secret: &str) -> bool {
        self.target.contains(secret)
            || self.headers.iter().any(|(n, v)| n.contains(secret) || v.contains(secret))
            || String::from_utf8_lossy(&self.body).contains(secret)
    }
}

struct Stand {
    server: MockServer,
    url: Url,
}

impl Stand {
    async fn start(replies: impl IntoIterator<Item = ResponseTemplate>) -> Self {
        Self::start_under("", replies).await
    }

    /// A stand-in whose project URL has the path `prefix` (the REST API is under it).
    async fn start_under(prefix: &str, replies: impl IntoIterator<Item = ResponseTemplate>) -> Self {
        let server = MockServer::start().await;
        // Each reply answers one request. Of the mocks that match, the first mounted wins, so
        // the replies are given in the order of the script.
        for reply in replies {
            Mock::given(any()).respond_with(reply).up_to_n_times(1).mount(&server).await;
        }
        let past_the_script = error(500, "TEST", "no scripted reply left");
        Mock::given(any()).respond_with(past_the_script).with_priority(u8::MAX).mount(&server).await;
        let url = Url::parse(&format!("{}{prefix}", server.uri())).unwrap();
        Self { server, url }
    }

    fn settings(&self) -> PostgrestSettings {
        PostgrestSettings::new(self.url.clone(), SecretString::from(SERVICE_KEY.to_owned()))
    }

    fn client(&self) -> PostgrestClient {
        PostgrestClient::new(self.settings()).unwrap()
    }

    async fn requests(&self) -> Vec<Recorded> {
        self.server.received_requests().await.unwrap().into_iter().map(Recorded::from).collect()
    }

    async fn only_request(&self) -> Recorded {
        let requests = self.requests().await;
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests.into_iter().next().unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures.

fn tenant() -> TenantId {
    TENANT.parse().unwrap()
}

fn session_id() -> SessionId {
    SESSION.parse().unwrap()
}

fn document_id() -> DocumentId {
    DOCUMENT.parse().unwrap()
}

fn caller() -> Caller {
    Caller {
        tenant: tenant(),
        user: UserId::parse("alice").unwrap(),
        role: Role::Authenticated,
        token: Some(AccessToken::new(USER_TOKEN)),
    }
}

fn tokenless() -> Caller {
    Caller { token: None, ..caller() }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn metadata(value: &Value) -> Metadata {
    Metadata::parse(value.as_object().unwrap().clone()).unwrap()
}

fn session() -> Session {
    Session {
        id: session_id(),
        tenant_id: tenant(),
        user_id: UserId::parse("alice").unwrap(),
        title: Some(SessionTitle::parse("Refund for order 42").unwrap()),
        metadata: metadata(&json!({"channel": "web"})),
        created_at: at("2026-12-01T10:00:00.123456Z"),
        updated_at: at("2026-12-01T10:00:00.123456Z"),
    }
}

/// A `sessions` row as PostgREST serialises it (a `timestamptz` carries its offset).
fn session_row(id: &str, created_at: &str) -> Value {
    json!({"id": id, "tenant_id": TENANT, "user_id": "alice", "title": null,
           "metadata": {"channel": "web"}, "created_at": created_at, "updated_at": created_at})
}

fn unit(axis: usize) -> Embedding {
    let mut values = vec![0.0; EMBEDDING_DIMENSION];
    values[axis] = 1.0;
    Embedding::parse("embedding", &values).unwrap()
}

fn new_document() -> NewDocument {
    NewDocument::new(
        "Manual",
        Some("https://docs.example.com/manual"),
        metadata(&json!({"lang": "en"})),
        vec![
            NewChunk::new("first", metadata(&json!({"page": 1})), unit(0)).unwrap(),
            NewChunk::new("second", metadata(&json!({"page": 2})), unit(1)).unwrap(),
        ],
    )
    .unwrap()
}

fn query() -> KnowledgeQuery {
    KnowledgeQuery::new(unit(0), Some(5), Some(0.25), metadata(&json!({"lang": "en"}))).unwrap()
}

/// The error's full text, as a log line would show it.
fn text(error: &RepositoryError) -> String {
    match error {
        RepositoryError::Unexpected(source) => format!("{source:#}"),
        other => other.to_string(),
    }
}

fn assert_unexpected(error: &RepositoryError, needles: &[&str]) {
    assert!(matches!(error, RepositoryError::Unexpected(_)), "{error:?}");
    let text = text(error);
    for needle in needles {
        assert!(text.contains(needle), "`{needle}` not in `{text}`");
    }
    for secret in [SERVICE_KEY, ANON_KEY, USER_TOKEN] {
        assert!(!text.contains(secret), "a secret in `{text}`");
    }
}

// ---------------------------------------------------------------------------------------
// Credentials.

#[tokio::test]
async fn user_requests_forward_the_callers_jwt_and_never_the_service_key() {
    let added =
        json!([{"chunk_id": Uuid::now_v7(), "ordinal": 0}, {"chunk_id": Uuid::now_v7(), "ordinal": 1}]);
    let stand = Stand::start([
        empty(201),
        ok(json!([])),
        ok(json!([])),
        ok(json!([])),
        ok(added),
        ok(json!([])),
        ok(json!([])),
    ])
    .await;
    let client = stand.client();
    let (sessions, knowledge) = (client.session_store(), client.knowledge_store());
    let now = Utc::now();
    sessions.create(&caller(), &session()).await.unwrap();
    sessions.get(&caller(), session_id()).await.unwrap();
    sessions.list(&caller(), PageRequest::first(10)).await.unwrap();
    sessions.update(&caller(), session_id(), &SessionUpdate::default(), now).await.unwrap();
    knowledge.add_document(&caller(), document_id(), &new_document(), now).await.unwrap();
    knowledge.get_document(&caller(), document_id()).await.unwrap();
    knowledge.search(&caller(), &query()).await.unwrap();

    let requests = stand.requests().await;
    assert_eq!(requests.len(), 7);
    for request in requests {
        let bearer = format!("Bearer {USER_TOKEN}");
        assert_eq!(request.header("authorization"), Some(bearer.as_str()), "{}", request.target);
        assert_eq!(request.header("apikey"), None, "no anon key configured: {}", request.target);
        assert!(!request.carries(SERVICE_KEY), "the service key on a user request: {request:#?}");
    }
}

#[tokio::test]
async fn user_requests_send_the_anon_key_as_apikey_when_one_is_configured() {
    let stand = Stand::start([ok(json!([]))]).await;
    let mut settings = stand.settings();
    settings.anon_key = Some(SecretString::from(ANON_KEY.to_owned()));
    let sessions = PostgrestClient::new(settings).unwrap().session_store();
    sessions.get(&caller(), session_id()).await.unwrap();
    let request = stand.only_request().await;
    assert_eq!(request.header("apikey"), Some(ANON_KEY));
    assert_eq!(request.header("authorization"), Some(format!("Bearer {USER_TOKEN}").as_str()));
}

#[tokio::test]
async fn tenant_directory_requests_carry_the_service_role_key() {
    let stand = Stand::start([ok(json!([])), ok(json!([]))]).await;
    let mut settings = stand.settings();
    settings.anon_key = Some(SecretString::from(ANON_KEY.to_owned()));
    let directory = PostgrestClient::new(settings).unwrap().tenant_directory();
    directory.find(tenant()).await.unwrap();
    directory.registered_origins().await.unwrap();
    let requests = stand.requests().await;
    assert_eq!(requests.len(), 2);
    for request in requests {
        assert_eq!(request.header("apikey"), Some(SERVICE_KEY));
        assert_eq!(request.header("authorization"), Some(format!("Bearer {SERVICE_KEY}").as_str()));
        assert!(!request.carries(ANON_KEY));
    }
}

#[tokio::test]
async fn the_readiness_check_reads_one_tenant_id_as_the_platform_and_reports_failures() {
    let stand = Stand::start([ok(json!([])), error(503, "PGRST001", "database unavailable")]).await;
    let mut settings = stand.settings();
    settings.read_retries = 0;
    let check = PostgrestClient::new(settings).unwrap().dependency_check();
    assert_eq!(check.component(), "supabase");
    check.check().await.unwrap();
    let failed = check.check().await.unwrap_err();
    assert!(format!("{failed:#}").contains("PGRST001"), "{failed:#}");
    let request = &stand.requests().await[0];
    assert_eq!(request.path(), "/rest/v1/tenants");
    assert_eq!(request.param("limit").as_deref(), Some("1"));
    assert_eq!(request.header("authorization"), Some(format!("Bearer {SERVICE_KEY}").as_str()));
}

/// A caller of the fixture tenant with `role` (and alice's token, which only a plain
/// user's requests may carry).
fn caller_as(role: Role) -> Caller {
    Caller { role, ..caller() }
}

/// A token like [`USER_TOKEN`] with another payload (base64url JSON).
fn token_with(payload: &str) -> AccessToken {
    AccessToken::new(&format!("eyJhbGciOiJIUzI1NiJ9.{payload}.signature-SECRET-0004"))
}

#[tokio::test]
async fn admins_agents_and_services_go_through_the_service_naming_their_tenant_never_with_their_token() {
    for role in [Role::Admin, Role::Agent, Role::Service] {
        let stand =
            Stand::start([ok(json!([])), ok(json!([])), ok(json!([])), ok(json!([])), ok(json!([]))]).await;
        let mut settings = stand.settings();
        settings.anon_key = Some(SecretString::from(ANON_KEY.to_owned()));
        let client = PostgrestClient::new(settings).unwrap();
        let (sessions, knowledge) = (client.session_store(), client.knowledge_store());
        let who = caller_as(role);
        sessions.get(&who, session_id()).await.unwrap();
        sessions.list(&who, PageRequest::first(10)).await.unwrap();
        sessions.update(&who, session_id(), &SessionUpdate::default(), Utc::now()).await.unwrap();
        knowledge.get_document(&who, document_id()).await.unwrap();
        knowledge.search(&who, &query()).await.unwrap();
        let requests = stand.requests().await;
        assert_eq!(requests.len(), 5);
        for request in requests {
            assert_eq!(request.header("authorization"), Some(format!("Bearer {SERVICE_KEY}").as_str()));
            assert_eq!(request.header("apikey"), Some(SERVICE_KEY));
            assert_eq!(request.header("x-sba-tenant"), Some(TENANT), "{role}: {}", request.target);
            assert!(!request.carries(USER_TOKEN) && !request.carries(ANON_KEY), "{role}: {request:#?}");
        }
    }
}

#[tokio::test]
async fn a_plain_users_requests_name_no_tenant_header() {
    let stand = Stand::start([ok(json!([]))]).await;
    stand.client().session_store().get(&caller(), session_id()).await.unwrap();
    assert_eq!(stand.only_request().await.header("x-sba-tenant"), None);
}

#[tokio::test]
async fn a_token_whose_role_claim_is_not_authenticated_is_never_forwarded() {
    // {"sub":"alice","role":"service_role",...}, {"sub":"alice",...} (no role), not JSON.
    let payloads = [
        "eyJzdWIiOiJhbGljZSIsInJvbGUiOiJzZXJ2aWNlX3JvbGUiLCJ0ZW5hbnRfaWQiOiIwYjdlOGYzYy0yZjBhLTRjNTUtOWQyZS0zZjFhNWI2YzdkOGUifQ",
        "eyJzdWIiOiJhbGljZSIsInRlbmFudF9pZCI6IjBiN2U4ZjNjLTJmMGEtNGM1NS05ZDJlLTNmMWE1YjZjN2Q4ZSJ9",
        "not-base64-json",
    ];
    let stand = Stand::start([]).await;
    let client = stand.client();
    for payload in payloads {
        let who = Caller { token: Some(token_with(payload)), ..caller() };
        let error = client.session_store().get(&who, session_id()).await.unwrap_err();
        assert_unexpected(&error, &["role claim is not `authenticated`"]);
        assert!(!text(&error).contains(payload), "{error:?}");
        let error = client.knowledge_store().search(&who, &query()).await.unwrap_err();
        assert_unexpected(&error, &["role claim is not `authenticated`"]);
    }
    assert!(stand.requests().await.is_empty(), "nothing was sent");
}

#[tokio::test]
async fn session_requests_name_the_user_unless_the_caller_sees_the_whole_tenant() {
    for (role, user) in [
        (Role::Authenticated, Some("eq.alice")),
        (Role::Agent, Some("eq.alice")),
        (Role::Admin, None),
        (Role::Service, None),
    ] {
        let stand = Stand::start([ok(json!([])), ok(json!([])), ok(json!([]))]).await;
        let sessions = stand.client().session_store();
        let who = caller_as(role);
        sessions.get(&who, session_id()).await.unwrap();
        sessions.list(&who, PageRequest::first(10)).await.unwrap();
        sessions.update(&who, session_id(), &SessionUpdate::default(), Utc::now()).await.unwrap();
        for request in stand.requests().await {
            assert_eq!(request.param("user_id").as_deref(), user, "{role}: {}", request.target);
            assert_eq!(request.param("tenant_id"), Some(format!("eq.{TENANT}")), "{role}");
        }
    }
}

#[tokio::test]
async fn no_caller_creates_a_session_for_another_user_and_no_agent_writes_knowledge() {
    let stand = Stand::start([]).await;
    let client = stand.client();
    let mut theirs = session();
    theirs.user_id = UserId::parse("carol").unwrap();
    for role in [Role::Authenticated, Role::Agent, Role::Admin, Role::Service] {
        let error = client.session_store().create(&caller_as(role), &theirs).await.unwrap_err();
        assert_unexpected(&error, &["another user"]);
    }
    let error = client
        .knowledge_store()
        .add_document(&caller_as(Role::Agent), document_id(), &new_document(), Utc::now())
        .await
        .unwrap_err();
    assert_unexpected(&error, &["does not write knowledge"]);
    assert!(stand.requests().await.is_empty(), "nothing was sent");
}

#[tokio::test]
async fn admins_and_services_add_documents_through_the_service_for_their_tenant() {
    for role in [Role::Admin, Role::Service] {
        let added =
            json!([{"chunk_id": Uuid::now_v7(), "ordinal": 0}, {"chunk_id": Uuid::now_v7(), "ordinal": 1}]);
        let stand = Stand::start([ok(added)]).await;
        let knowledge = stand.client().knowledge_store();
        knowledge.add_document(&caller_as(role), document_id(), &new_document(), Utc::now()).await.unwrap();
        let request = stand.only_request().await;
        assert_eq!(request.path(), "/rest/v1/rpc/add_knowledge_document");
        assert_eq!(request.header("authorization"), Some(format!("Bearer {SERVICE_KEY}").as_str()));
        assert_eq!(request.header("x-sba-tenant"), Some(TENANT));
        assert!(!request.carries(USER_TOKEN));
    }
}

#[tokio::test]
async fn a_caller_without_a_token_fails_without_sending_a_request() {
    let stand = Stand::start([]).await;
    let client = stand.client();
    let (sessions, knowledge) = (client.session_store(), client.knowledge_store());
    let now = Utc::now();
    let errors = [
        sessions.create(&tokenless(), &session()).await.unwrap_err(),
        sessions.get(&tokenless(), session_id()).await.unwrap_err(),
        sessions.list(&tokenless(), PageRequest::first(10)).await.unwrap_err(),
        sessions.update(&tokenless(), session_id(), &SessionUpdate::default(), now).await.unwrap_err(),
        knowledge.add_document(&tokenless(), document_id(), &new_document(), now).await.unwrap_err(),
        knowledge.get_document(&tokenless(), document_id()).await.unwrap_err(),
        knowledge.search(&tokenless(), &query()).await.unwrap_err(),
    ];
    for error in &errors {
        assert_unexpected(error, &["no user token to forward"]);
    }
    assert!(stand.requests().await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Headers.

#[tokio::test]
async fn requests_name_the_schema_and_what_they_want_back() {
    let stand = Stand::start([
        ok(json!([])),
        empty(201),
        ok(json!([])),
        ok(json!([{"chunk_id": Uuid::now_v7(), "ordinal": 0}, {"chunk_id": Uuid::now_v7(), "ordinal": 1}])),
    ])
    .await;
    let mut settings = stand.settings();
    settings.schema = "tenant_data".into();
    let client = PostgrestClient::new(settings).unwrap();
    let sessions = client.session_store();
    sessions.get(&caller(), session_id()).await.unwrap();
    sessions.create(&caller(), &session()).await.unwrap();
    sessions.update(&caller(), session_id(), &SessionUpdate::default(), Utc::now()).await.unwrap();
    client
        .knowledge_store()
        .add_document(&caller(), document_id(), &new_document(), Utc::now())
        .await
        .unwrap();

    let [get, post, patch, rpc] = <[Recorded; 4]>::try_from(stand.requests().await).unwrap();
    for request in [&get, &post, &patch, &rpc] {
        assert_eq!(request.header("accept"), Some("application/json"));
    }
    assert_eq!(get.method, "GET");
    assert_eq!(get.header("accept-profile"), Some("tenant_data"));
    assert_eq!(get.header("content-profile"), None);
    assert_eq!(get.header("prefer"), None);
    assert_eq!(get.header("content-type"), None);

    assert_eq!(post.method, "POST");
    assert_eq!(post.header("content-profile"), Some("tenant_data"));
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert_eq!(post.header("prefer"), Some("return=minimal"));

    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.header("content-profile"), Some("tenant_data"));
    assert_eq!(patch.header("content-type"), Some("application/json"));
    assert_eq!(patch.header("prefer"), Some("return=representation"));

    assert_eq!(rpc.method, "POST");
    assert_eq!(rpc.header("content-profile"), Some("tenant_data"));
    assert_eq!(rpc.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn the_rest_api_is_under_the_project_urls_path() {
    let stand = Stand::start_under("/supabase/", [ok(json!([]))]).await;
    stand.client().session_store().get(&caller(), session_id()).await.unwrap();
    assert_eq!(stand.only_request().await.path(), "/supabase/rest/v1/sessions");
}

// ---------------------------------------------------------------------------------------
// Sessions.

#[tokio::test]
async fn creating_a_session_posts_its_row() {
    let stand = Stand::start([empty(201)]).await;
    stand.client().session_store().create(&caller(), &session()).await.unwrap();
    let request = stand.only_request().await;
    assert_eq!((request.method.as_str(), request.target.as_str()), ("POST", "/rest/v1/sessions"));
    let body = request.json();
    assert_eq!(
        body,
        json!({"id": SESSION, "tenant_id": TENANT, "user_id": "alice", "title": "Refund for order 42",
               "metadata": {"channel": "web"}, "created_at": body["created_at"], "updated_at": body["updated_at"]})
    );
    assert_eq!(at(body["created_at"].as_str().unwrap()), session().created_at);
    assert_eq!(at(body["updated_at"].as_str().unwrap()), session().updated_at);
}

#[tokio::test]
async fn a_session_of_another_tenant_is_refused_without_a_request() {
    let stand = Stand::start([]).await;
    let foreign = Session { tenant_id: TenantId::from_uuid(Uuid::now_v7()), ..session() };
    let error = stand.client().session_store().create(&caller(), &foreign).await.unwrap_err();
    assert_unexpected(&error, &["cannot be created for tenant"]);
    assert!(stand.requests().await.is_empty());
}

#[tokio::test]
async fn reading_a_session_filters_by_id_and_tenant_and_maps_the_row() {
    let mut row = session_row(SESSION, "2026-12-01T12:00:00.123456+02:00");
    row["title"] = json!("Refund");
    let stand = Stand::start([ok(json!([row]))]).await;
    let found = stand.client().session_store().get(&caller(), session_id()).await.unwrap().unwrap();

    let request = stand.only_request().await;
    assert_eq!((request.method.as_str(), request.path()), ("GET", "/rest/v1/sessions"));
    assert_eq!(request.param("select").as_deref(), Some(SESSION_COLUMNS));
    assert_eq!(request.param("id"), Some(format!("eq.{SESSION}")));
    assert_eq!(request.param("tenant_id"), Some(format!("eq.{TENANT}")));

    assert_eq!(found.id, session_id());
    assert_eq!(found.tenant_id, tenant());
    assert_eq!(found.user_id.as_str(), "alice");
    assert_eq!(found.title.as_ref().map(SessionTitle::as_str), Some("Refund"));
    assert_eq!(found.metadata, metadata(&json!({"channel": "web"})));
    assert_eq!(found.created_at, at("2026-12-01T10:00:00.123456Z"));
    assert_eq!(found.updated_at, found.created_at);
}

#[tokio::test]
async fn an_unknown_session_reads_and_updates_as_none() {
    let stand = Stand::start([ok(json!([])), ok(json!([]))]).await;
    let sessions = stand.client().session_store();
    assert_eq!(sessions.get(&caller(), session_id()).await.unwrap(), None);
    let update = SessionUpdate { title: Some(None), metadata: None };
    assert_eq!(sessions.update(&caller(), session_id(), &update, Utc::now()).await.unwrap(), None);
}

#[tokio::test]
async fn a_corrupt_session_row_is_unexpected() {
    let mut row = session_row(SESSION, "2026-12-01T10:00:00Z");
    row["user_id"] = json!("");
    let stand = Stand::start([ok(json!([row]))]).await;
    let error = stand.client().session_store().get(&caller(), session_id()).await.unwrap_err();
    assert_unexpected(&error, &["corrupt row in sessions"]);
}

#[tokio::test]
async fn listing_sessions_asks_for_one_row_more_newest_first_and_returns_a_cursor() {
    let ids = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    let rows = json!([
        session_row(&ids[2].to_string(), "2026-12-01T10:00:03+00:00"),
        session_row(&ids[1].to_string(), "2026-12-01T10:00:02.5+00:00"),
        session_row(&ids[0].to_string(), "2026-12-01T10:00:01+00:00"),
    ]);
    let stand = Stand::start([ok(rows)]).await;
    let page = stand.client().session_store().list(&caller(), PageRequest::first(2)).await.unwrap();

    let request = stand.only_request().await;
    assert_eq!(request.path(), "/rest/v1/sessions");
    assert_eq!(request.param("tenant_id"), Some(format!("eq.{TENANT}")));
    assert_eq!(request.param("order").as_deref(), Some("created_at.desc,id.desc"));
    assert_eq!(request.param("limit").as_deref(), Some("3"));
    assert_eq!(request.param("select").as_deref(), Some(SESSION_COLUMNS));
    assert_eq!(request.param("or"), None, "the first page has no cursor filter");

    let listed: Vec<Uuid> = page.items.iter().map(|s| s.id.as_uuid()).collect();
    assert_eq!(listed, [ids[2], ids[1]]);
    assert_eq!(page.next, Some(Cursor::Time { at: at("2026-12-01T10:00:02.5Z"), id: ids[1] }));
}

#[tokio::test]
async fn listing_after_a_cursor_filters_by_creation_time_then_id() {
    let last = Uuid::now_v7();
    let cursor = Cursor::Time { at: at("2026-12-01T12:00:00.123456+02:00"), id: last };
    let stand = Stand::start([ok(json!([session_row(SESSION, "2026-12-01T09:00:00+00:00")]))]).await;
    let page = PageRequest::new(Some(20), Some(cursor)).unwrap();
    let listed = stand.client().session_store().list(&caller(), page).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.next, None, "no extra row: the last page");

    let request = stand.only_request().await;
    let ts = "2026-12-01T10:00:00.123456Z";
    assert_eq!(
        request.param("or"),
        Some(format!("(created_at.lt.\"{ts}\",and(created_at.eq.\"{ts}\",id.lt.{last}))"))
    );
    assert_eq!(request.param("tenant_id"), Some(format!("eq.{TENANT}")));
    assert_eq!(request.param("limit").as_deref(), Some("21"));
    // What PostgREST would decode as a space, a quote or a separator is percent-encoded.
    let query = request.target.split_once('?').unwrap().1;
    for raw in ['+', ' ', '"', '(', ',', ':'] {
        assert!(!query.contains(raw), "`{raw}` unencoded in {query}");
    }
}

#[tokio::test]
async fn a_seq_cursor_is_refused_without_a_request() {
    let stand = Stand::start([]).await;
    let page = PageRequest::new(Some(5), Some(Cursor::Seq(7))).unwrap();
    let error = stand.client().session_store().list(&caller(), page).await.unwrap_err();
    assert_unexpected(&error, &["seq cursor"]);
    assert!(stand.requests().await.is_empty());
}

#[tokio::test]
async fn updating_a_session_patches_only_the_named_fields_and_returns_the_stored_row() {
    let mut stored = session_row(SESSION, "2026-12-01T10:00:00+00:00");
    stored["updated_at"] = json!("2026-12-02T08:30:00+00:00");
    stored["metadata"] = json!({"channel": "api"});
    let stand = Stand::start([ok(json!([stored.clone()])), ok(json!([stored]))]).await;
    let sessions = stand.client().session_store();
    let now = at("2026-12-02T08:30:00Z");

    let clear_title = SessionUpdate { title: Some(None), metadata: None };
    let updated = sessions.update(&caller(), session_id(), &clear_title, now).await.unwrap().unwrap();
    assert_eq!(updated.title, None);
    assert_eq!(updated.metadata, metadata(&json!({"channel": "api"})));
    assert_eq!(updated.updated_at, now);

    let new_metadata = SessionUpdate { title: None, metadata: Some(metadata(&json!({"channel": "api"}))) };
    sessions.update(&caller(), session_id(), &new_metadata, now).await.unwrap().unwrap();

    let [first, second] = <[Recorded; 2]>::try_from(stand.requests().await).unwrap();
    for request in [&first, &second] {
        assert_eq!((request.method.as_str(), request.path()), ("PATCH", "/rest/v1/sessions"));
        assert_eq!(request.param("id"), Some(format!("eq.{SESSION}")));
        assert_eq!(request.param("tenant_id"), Some(format!("eq.{TENANT}")));
        assert_eq!(request.param("select").as_deref(), Some(SESSION_COLUMNS));
    }
    let (first, second) = (first.json(), second.json());
    assert_eq!(first, json!({"title": null, "updated_at": first["updated_at"]}));
    assert_eq!(at(first["updated_at"].as_str().unwrap()), now);
    assert_eq!(second, json!({"metadata": {"channel": "api"}, "updated_at": second["updated_at"]}));
}

// ---------------------------------------------------------------------------------------
// Tenants.

#[tokio::test]
async fn finding_a_tenant_maps_status_origins_plan_and_quota() {
    let other = Uuid::now_v7();
    let stand = Stand::start([
        ok(json!([{"id": TENANT, "status": "suspended", "cors_origins": ["https://app.example.com"],
                   "plan": "pro", "rate_limit_requests": 100, "rate_limit_window_secs": 60}])),
        ok(json!([{"id": other, "status": "active", "cors_origins": [], "plan": null,
                   "rate_limit_requests": null, "rate_limit_window_secs": null}])),
        ok(json!([])),
    ])
    .await;
    let directory = stand.client().tenant_directory();

    let tenant_a = directory.find(tenant()).await.unwrap().unwrap();
    assert_eq!(tenant_a.id, tenant());
    assert_eq!(tenant_a.status, TenantStatus::Suspended);
    assert_eq!(tenant_a.allowed_origins, ["https://app.example.com"]);
    assert_eq!(tenant_a.plan.as_deref(), Some("pro"));
    assert_eq!(tenant_a.rate_limit, Some(Quota::new(100, 60).unwrap()));

    let tenant_b = directory.find(TenantId::from_uuid(other)).await.unwrap().unwrap();
    assert_eq!(tenant_b.status, TenantStatus::Active);
    assert!(tenant_b.allowed_origins.is_empty());
    assert_eq!((tenant_b.plan, tenant_b.rate_limit), (None, None));

    assert_eq!(directory.find(TenantId::from_uuid(Uuid::now_v7())).await.unwrap(), None);

    let request = &stand.requests().await[0];
    assert_eq!((request.method.as_str(), request.path()), ("GET", "/rest/v1/tenants"));
    assert_eq!(request.param("id"), Some(format!("eq.{TENANT}")));
    assert_eq!(
        request.param("select").as_deref(),
        Some("id,status,cors_origins,plan,rate_limit_requests,rate_limit_window_secs")
    );
}

#[tokio::test]
async fn a_corrupt_tenant_row_is_unexpected() {
    let stand = Stand::start([
        ok(json!([{"id": TENANT, "status": "deleted", "cors_origins": [], "plan": null,
                   "rate_limit_requests": null, "rate_limit_window_secs": null}])),
        ok(json!([{"id": TENANT, "status": "active", "cors_origins": [], "plan": null,
                   "rate_limit_requests": 0, "rate_limit_window_secs": 60}])),
    ])
    .await;
    let directory = stand.client().tenant_directory();
    assert_unexpected(&directory.find(tenant()).await.unwrap_err(), &["corrupt row in tenants", "deleted"]);
    assert_unexpected(&directory.find(tenant()).await.unwrap_err(), &["corrupt row in tenants", "0/60"]);
}

#[tokio::test]
async fn registered_origins_are_read_from_active_tenants_page_by_page() {
    let page: Vec<_> =
        (0..1000).map(|i| json!({"cors_origins": [format!("https://t{i}.example.com")]})).collect();
    let stand = Stand::start([
        ok(serde_json::Value::Array(page)),
        ok(json!([{"cors_origins": ["HTTPS://App.Example.com", "https://admin.example.com"]}])),
    ])
    .await;
    let origins = stand.client().tenant_directory().registered_origins().await.unwrap();
    assert_eq!(origins.len(), 1002);
    assert!(origins.contains(&"https://app.example.com".to_owned()), "lower case");

    let [first, second] = <[Recorded; 2]>::try_from(stand.requests().await).unwrap();
    assert_eq!((first.method.as_str(), first.path()), ("GET", "/rest/v1/tenants"));
    assert_eq!(first.param("select").as_deref(), Some("cors_origins"));
    assert_eq!(first.param("status").as_deref(), Some("eq.active"));
    assert_eq!(first.param("limit").as_deref(), Some("1000"));
    assert_eq!(first.param("offset").as_deref(), Some("0"));
    assert_eq!(second.param("offset").as_deref(), Some("1000"), "a full page asks for the next");
}

// ---------------------------------------------------------------------------------------
// Knowledge.

#[tokio::test]
async fn adding_a_document_calls_the_rpc_with_pgvector_text_and_returns_the_chunk_ids() {
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    // Out of order on purpose: ids are matched to chunks by ordinal.
    let stand =
        Stand::start([ok(json!([{"chunk_id": second, "ordinal": 1}, {"chunk_id": first, "ordinal": 0}]))])
            .await;
    let now = at("2026-12-01T10:00:00.123456789Z");
    let stored = stand
        .client()
        .knowledge_store()
        .add_document(&caller(), document_id(), &new_document(), now)
        .await
        .unwrap();

    let request = stand.only_request().await;
    assert_eq!(
        (request.method.as_str(), request.target.as_str()),
        ("POST", "/rest/v1/rpc/add_knowledge_document")
    );
    let body = request.json();
    let [e0, e1] = [unit(0).to_pgvector_text(), unit(1).to_pgvector_text()];
    assert!(e0.starts_with("[1,0,0,") && e0.ends_with(",0]"), "{e0}");
    assert_eq!(
        body,
        json!({
            "document_id": DOCUMENT, "title": "Manual", "source": "https://docs.example.com/manual",
            "metadata": {"lang": "en"}, "created_at": body["created_at"],
            "chunks": [
                {"content": "first", "metadata": {"page": 1}, "embedding": e0},
                {"content": "second", "metadata": {"page": 2}, "embedding": e1},
            ],
        })
    );
    assert_eq!(at(body["created_at"].as_str().unwrap()), at("2026-12-01T10:00:00.123456Z"), "microseconds");

    assert_eq!(stored.id, document_id());
    assert_eq!(stored.tenant_id, tenant());
    assert_eq!(
        (stored.title.as_str(), stored.source.as_deref()),
        ("Manual", Some("https://docs.example.com/manual"))
    );
    assert_eq!(stored.created_at, at("2026-12-01T10:00:00.123456Z"));
    let chunks: Vec<(Uuid, u32, &str)> =
        stored.chunks.iter().map(|c| (c.id.as_uuid(), c.ordinal, c.content.as_str())).collect();
    assert_eq!(chunks, [(first, 0, "first"), (second, 1, "second")]);
    assert_eq!(stored.chunks[1].metadata, metadata(&json!({"page": 2})));
}

#[tokio::test]
async fn chunk_ids_that_do_not_match_the_chunks_sent_are_unexpected() {
    let id = Uuid::now_v7;
    let stand = Stand::start([
        ok(json!([{"chunk_id": id(), "ordinal": 0}])),
        ok(json!([{"chunk_id": id(), "ordinal": 0}, {"chunk_id": id(), "ordinal": 0}])),
        ok(json!([{"chunk_id": id(), "ordinal": 0}, {"chunk_id": id(), "ordinal": 2}])),
    ])
    .await;
    let knowledge = stand.client().knowledge_store();
    for _ in 0..3 {
        let error =
            knowledge.add_document(&caller(), document_id(), &new_document(), Utc::now()).await.unwrap_err();
        assert_unexpected(&error, &["do not match"]);
    }
}

#[tokio::test]
async fn reading_a_document_embeds_its_chunks_in_ordinal_order() {
    let (c0, c1) = (Uuid::now_v7(), Uuid::now_v7());
    let stand = Stand::start([
        ok(json!([{"id": DOCUMENT, "tenant_id": TENANT, "title": "Manual", "source": null,
        "metadata": {"lang": "en"}, "created_at": "2026-12-01T10:00:00.5+00:00",
        "knowledge_chunks": [
            {"id": c0, "ordinal": 0, "content": "first", "metadata": {}},
            {"id": c1, "ordinal": 1, "content": "second", "metadata": {"page": 2}},
        ]}])),
        ok(json!([])),
    ])
    .await;
    let knowledge = stand.client().knowledge_store();
    let document = knowledge.get_document(&caller(), document_id()).await.unwrap().unwrap();
    assert_eq!(knowledge.get_document(&caller(), document_id()).await.unwrap(), None);

    let request = &stand.requests().await[0];
    assert_eq!((request.method.as_str(), request.path()), ("GET", "/rest/v1/knowledge_documents"));
    assert_eq!(
        request.param("select").as_deref(),
        Some("id,tenant_id,title,source,metadata,created_at,knowledge_chunks(id,ordinal,content,metadata)")
    );
    assert_eq!(request.param("knowledge_chunks.order").as_deref(), Some("ordinal.asc"));
    assert_eq!(request.param("id"), Some(format!("eq.{DOCUMENT}")));
    assert_eq!(request.param("tenant_id"), Some(format!("eq.{TENANT}")));

    assert_eq!(document.id, document_id());
    assert_eq!(document.tenant_id, tenant());
    assert_eq!((document.title.as_str(), document.source.as_deref()), ("Manual", None));
    assert_eq!(document.metadata, metadata(&json!({"lang": "en"})));
    assert_eq!(document.created_at, at("2026-12-01T10:00:00.5Z"));
    let chunks: Vec<(Uuid, u32, &str)> =
        document.chunks.iter().map(|c| (c.id.as_uuid(), c.ordinal, c.content.as_str())).collect();
    assert_eq!(chunks, [(c0, 0, "first"), (c1, 1, "second")]);
    assert_eq!(document.chunks[1].metadata, metadata(&json!({"page": 2})));
}

#[tokio::test]
async fn searching_posts_the_query_embedding_and_maps_the_matches() {
    let (chunk, document) = (Uuid::now_v7(), Uuid::now_v7());
    let stand = Stand::start([ok(json!([{"id": chunk, "document_id": document, "ordinal": 3,
                                          "content": "refunds take 5 days", "metadata": {"lang": "en"},
                                          "similarity": 0.875}]))])
    .await;
    let matches = stand.client().knowledge_store().search(&caller(), &query()).await.unwrap();

    let request = stand.only_request().await;
    assert_eq!((request.method.as_str(), request.target.as_str()), ("POST", "/rest/v1/rpc/match_knowledge"));
    assert_eq!(
        request.json(),
        json!({"query_embedding": unit(0).to_pgvector_text(), "match_count": 5, "min_similarity": 0.25,
               "filter": {"lang": "en"}})
    );

    assert_eq!(matches.len(), 1);
    let found = &matches[0];
    assert_eq!((found.chunk_id.as_uuid(), found.document_id.as_uuid()), (chunk, document));
    assert_eq!((found.ordinal, found.content.as_str()), (3, "refunds take 5 days"));
    assert_eq!(found.metadata, metadata(&json!({"lang": "en"})));
    assert!((found.similarity - 0.875).abs() < f64::EPSILON);
}

// ---------------------------------------------------------------------------------------
// Errors.

#[tokio::test]
async fn a_duplicate_id_is_a_conflict() {
    let duplicate =
        || error(409, "23505", "duplicate key value violates unique constraint \"sessions_pkey\"");
    let stand = Stand::start([duplicate(), duplicate()]).await;
    let client = stand.client();
    let error = client.session_store().create(&caller(), &session()).await.unwrap_err();
    assert!(matches!(&error, RepositoryError::Conflict(ConflictKind::DuplicateId)), "{error:?}");
    let error = client
        .knowledge_store()
        .add_document(&caller(), document_id(), &new_document(), Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(error, RepositoryError::Conflict(_)), "{error:?}");
}

#[tokio::test]
async fn a_rejected_jwt_is_unexpected_and_names_postgrests_code() {
    let stand = Stand::start([error(401, "PGRST301", "JWT expired")]).await;
    let error = stand.client().session_store().get(&caller(), session_id()).await.unwrap_err();
    assert_unexpected(&error, &["reading a session", "401", "PGRST301", "JWT expired"]);
}

#[tokio::test]
async fn keys_and_tokens_echoed_by_postgrest_are_scrubbed_from_errors() {
    let stand = Stand::start([
        error(401, "PGRST301", &format!("cannot decode {USER_TOKEN}")),
        error(403, "42501", &format!("key {SERVICE_KEY} may not")),
    ])
    .await;
    let client = stand.client();
    let error = client.session_store().get(&caller(), session_id()).await.unwrap_err();
    assert_unexpected(&error, &["PGRST301", "cannot decode <redacted>"]);
    let error = client.tenant_directory().find(tenant()).await.unwrap_err();
    assert_unexpected(&error, &["reading a tenant", "403", "42501", "key <redacted> may not"]);
}

#[tokio::test]
async fn a_server_error_is_unexpected_and_not_retried() {
    let stand = Stand::start([error(500, "XX000", "internal error"), ok(json!([]))]).await;
    let error = stand.client().session_store().get(&caller(), session_id()).await.unwrap_err();
    assert_unexpected(&error, &["reading a session", "500", "XX000"]);
    assert_eq!(stand.requests().await.len(), 1);
}

#[tokio::test]
async fn a_malformed_answer_is_unexpected() {
    let stand = Stand::start([
        raw(200, "<html>gateway</html>"),
        ok(json!({"not": "an array"})),
        ok(json!([{"id": "not-a-uuid"}])),
    ])
    .await;
    let sessions = stand.client().session_store();
    for _ in 0..3 {
        let error = sessions.get(&caller(), session_id()).await.unwrap_err();
        assert_unexpected(&error, &["reading a session", "malformed"]);
    }
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let rows: Vec<Value> = (0..50).map(|_| session_row(SESSION, "2026-12-01T10:00:00Z")).collect();
    let stand = Stand::start([ok(json!(rows))]).await;
    let mut settings = stand.settings();
    settings.max_response_bytes = 1024;
    let sessions = PostgrestClient::new(settings).unwrap().session_store();
    let error = sessions.list(&caller(), PageRequest::first(100)).await.unwrap_err();
    assert_unexpected(&error, &["listing sessions", "larger than 1024 bytes"]);
}

// ---------------------------------------------------------------------------------------
// Retries.

#[tokio::test]
async fn a_read_that_gets_503_then_200_succeeds_after_exactly_two_requests() {
    let row = session_row(SESSION, "2026-12-01T10:00:00Z");
    let stand = Stand::start([error(503, "PGRST001", "could not connect"), ok(json!([row]))]).await;
    let found = stand.client().session_store().get(&caller(), session_id()).await.unwrap();
    assert_eq!(found.map(|s| s.id), Some(session_id()));
    let requests = stand.requests().await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].target, requests[1].target);
}

#[tokio::test]
async fn a_search_is_retried_like_a_read() {
    let stand = Stand::start([empty(503), ok(json!([]))]).await;
    let matches = stand.client().knowledge_store().search(&caller(), &query()).await.unwrap();
    assert!(matches.is_empty());
    let requests = stand.requests().await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);
}

#[tokio::test]
async fn a_directory_read_is_retried_on_a_gateway_error() {
    let stand = Stand::start([empty(502), empty(504), ok(json!([]))]).await;
    assert!(stand.client().tenant_directory().registered_origins().await.unwrap().is_empty());
    assert_eq!(stand.requests().await.len(), 3);
}

#[tokio::test]
async fn a_write_that_gets_503_is_not_retried() {
    let unavailable = || error(503, "PGRST001", "could not connect");
    let stand = Stand::start([unavailable(), unavailable(), unavailable(), ok(json!([]))]).await;
    let client = stand.client();
    let (sessions, knowledge) = (client.session_store(), client.knowledge_store());
    let update = SessionUpdate { title: Some(None), metadata: None };
    let errors = [
        sessions.create(&caller(), &session()).await.unwrap_err(),
        sessions.update(&caller(), session_id(), &update, Utc::now()).await.unwrap_err(),
        knowledge.add_document(&caller(), document_id(), &new_document(), Utc::now()).await.unwrap_err(),
    ];
    for error in &errors {
        assert_unexpected(error, &["503", "PGRST001"]);
    }
    let methods: Vec<String> = stand.requests().await.into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["POST", "PATCH", "POST"], "exactly one request per write");
}

#[tokio::test]
async fn a_read_refused_with_a_4xx_is_not_retried() {
    let stand = Stand::start([
        error(401, "PGRST303", "JWT claims validation or parsing failed"),
        error(404, "PGRST205", "Could not find the table 'public.sessions' in the schema cache"),
        ok(json!([])),
    ])
    .await;
    let sessions = stand.client().session_store();
    assert_unexpected(&sessions.get(&caller(), session_id()).await.unwrap_err(), &["401", "PGRST303"]);
    assert_unexpected(&sessions.get(&caller(), session_id()).await.unwrap_err(), &["404", "PGRST205"]);
    assert_eq!(stand.requests().await.len(), 2);
}

#[tokio::test]
async fn a_read_gives_up_after_the_configured_retries() {
    let stand = Stand::start(std::iter::repeat_n(empty(503), 4)).await;
    let mut settings = stand.settings();
    settings.read_retries = 2;
    let sessions = PostgrestClient::new(settings).unwrap().session_store();
    let error = sessions.get(&caller(), session_id()).await.unwrap_err();
    assert_unexpected(&error, &["reading a session", "503"]);
    assert_eq!(stand.requests().await.len(), 3, "one attempt and two retries");
}

// ---------------------------------------------------------------------------------------
// Timeouts.

fn impatient(stand: &Stand, read_retries: u32) -> PostgrestClient {
    let mut settings = stand.settings();
    settings.timeout = Duration::from_millis(200);
    settings.read_retries = read_retries;
    PostgrestClient::new(settings).unwrap()
}

#[tokio::test]
async fn a_stalled_write_fails_within_the_timeout_without_a_retry() {
    let stand = Stand::start([stall(), ok(json!([]))]).await;
    let started = Instant::now();
    let error = impatient(&stand, 2).session_store().create(&caller(), &session()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_unexpected(&error, &["creating a session", "did not answer within 200ms"]);
    assert_eq!(stand.requests().await.len(), 1);
}

#[tokio::test]
async fn a_stalled_read_is_retried_then_fails_within_bounds() {
    let stand = Stand::start([stall(), stall(), ok(json!([]))]).await;
    let started = Instant::now();
    let error = impatient(&stand, 1).session_store().get(&caller(), session_id()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_unexpected(&error, &["reading a session", "did not answer within 200ms"]);
    assert_eq!(stand.requests().await.len(), 2);
}

#[tokio::test]
async fn an_unreachable_postgrest_fails_a_read_after_its_retries() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let mut settings = PostgrestSettings::new(url, SecretString::from(SERVICE_KEY.to_owned()));
    settings.timeout = Duration::from_millis(200);
    let started = Instant::now();
    let error = PostgrestClient::new(settings).unwrap().tenant_directory().find(tenant()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_unexpected(&error, &["reading a tenant", "PostgREST"]);
}

// ---------------------------------------------------------------------------------------
// Secrets and settings.

#[tokio::test]
async fn settings_clients_and_stores_never_show_keys_in_debug() {
    let stand = Stand::start([]).await;
    let mut settings = stand.settings();
    settings.anon_key = Some(SecretString::from(ANON_KEY.to_owned()));
    let client = PostgrestClient::new(settings.clone()).unwrap();
    let shown = [
        format!("{settings:?}"),
        format!("{client:?}"),
        format!("{:?}", client.tenant_directory()),
        format!("{:?}", client.session_store()),
        format!("{:?}", client.knowledge_store()),
    ];
    for text in shown {
        assert!(!text.contains(SERVICE_KEY) && !text.contains(ANON_KEY), "{text}");
    }
}

#[test]
fn settings_default_to_five_seconds_two_read_retries_and_the_public_schema() {
    let settings = PostgrestSettings::new(
        Url::parse("https://abc.supabase.co").unwrap(),
        SecretString::from(SERVICE_KEY.to_owned()),
    );
    assert_eq!(settings.timeout, Duration::from_secs(5));
    assert_eq!(settings.read_retries, 2);
    assert_eq!(settings.schema, "public");
    assert!(settings.anon_key.is_none());
    assert_eq!(settings.max_response_bytes, 16 * 1024 * 1024);
}

#[test]
fn a_client_is_refused_for_unusable_settings_without_showing_the_key() {
    let url = Url::parse("https://abc.supabase.co").unwrap();
    let key = |text: &str| SecretString::from(text.to_owned());
    let mut refused = vec![
        PostgrestSettings::new(Url::parse("ftp://abc.supabase.co").unwrap(), key(SERVICE_KEY)),
        PostgrestSettings::new(url.clone(), key("")),
        PostgrestSettings::new(url.clone(), key("line\nbreak-SECRET")),
    ];
    let mut empty_schema = PostgrestSettings::new(url.clone(), key(SERVICE_KEY));
    empty_schema.schema = String::new();
    refused.push(empty_schema);
    let mut bad_anon = PostgrestSettings::new(url, key(SERVICE_KEY));
    bad_anon.anon_key = Some(key("anon\r\n-SECRET"));
    refused.push(bad_anon);
    for settings in refused {
        let error = PostgrestClient::new(settings).unwrap_err();
        assert!(!format!("{error:#}").contains("SECRET"), "{error:#}");
    }
}
