//! Traces over OTLP: the `sba` binary, with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a local
//! receiver that answers OTLP/HTTP (`POST /v1/traces`, protobuf), exports its spans; what
//! arrives is decoded and checked: the caller's trace continued, parent links, attributes.

use std::process::{Child, Stdio};
use std::time::Duration;

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use sba_domain::{Role, UserId};
use sba_infrastructure::auth::{DevTokenRequest, HsJwtSigner, JwtRules};
use sba_infrastructure::internal_store::test_support::fresh_postgres_url;
use sba_infrastructure::redis::test_support::redis_url;
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{AUDIENCE, ISSUER, SECRET, new_tenant, sba_process, serve_active_tenant};

/// The Redis database (of the test Redis) this file's node uses; no other test uses it.
const TRACES_REDIS_DB: u8 = 3;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A running `sba serve` and its address; killed if the test fails before stopping it.
struct Served {
    child: Child,
    address: String,
    /// Where it writes: a file, as a pipe nobody reads would stall it once full.
    output: std::path::PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// SIGTERM, then everything it wrote (it must stop by itself within the timeout).
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "sba did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}

/// A client whose requests cannot hang the test.
fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn serve(env: &[(&str, String)]) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (mut command, dir) = sba_process(&["serve"]);
    command
        .env("PORT", port.to_string())
        .env("SBA_DATA_DIR", dir.display().to_string())
        .env("SBA_AUTH__JWT_SECRETS", SECRET)
        .env("SBA_AUTH__ISSUER", ISSUER)
        .env("SBA_AUTH__AUDIENCE", AUDIENCE)
        .env("SBA_SERVER__SHUTDOWN_TIMEOUT_SECS", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let output = dir.join("output.log");
    let file = std::fs::File::create(&output).unwrap();
    command.stdout(Stdio::from(file.try_clone().unwrap())).stderr(Stdio::from(file));
    let child = command.spawn().unwrap();
    let served = Served { child, address: format!("http://127.0.0.1:{port}"), output };
    let client = client();
    for _ in 0..600 {
        if let Ok(response) = client.get(format!("{}/healthz", served.address)).send().await
            && response.status().is_success()
        {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sba serve did not answer /healthz within 30 s:\n{}", served.stop());
}

fn token(tenant: sba_domain::TenantId, user: &str, role: Role) -> String {
    HsJwtSigner::new(
        &SecretString::from(SECRET.to_owned()),
        JwtRules { issuer: Some(ISSUER.into()), audience: Some(AUDIENCE.into()), leeway: Duration::ZERO },
    )
    .sign(&DevTokenRequest {
        tenant_id: tenant,
        user_id: UserId::parse(user).unwrap(),
        role,
        ttl: Duration::from_mins(5),
    })
    .unwrap()
}

/// A local OTLP/HTTP receiver: it accepts every trace export and keeps the requests.
async fn otlp_receiver() -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    receiver
}

/// Every span the receiver got, and the `Authorization` headers it was sent with.
async fn received(receiver: &MockServer) -> (Vec<Span>, Vec<String>) {
    let mut spans = Vec::new();
    let mut authorizations = Vec::new();
    for request in receiver.received_requests().await.unwrap_or_default() {
        assert_eq!(request.headers["content-type"], "application/x-protobuf");
        authorizations.extend(request.headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()));
        let export =
            ExportTraceServiceRequest::decode(request.body.as_slice()).expect("an OTLP trace export");
        for resource in export.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .and_then(|v| v.value.clone());
            assert_eq!(service, Some(AnyValue::StringValue("sba".into())));
            spans.extend(resource.scope_spans.into_iter().flat_map(|scope| scope.spans));
        }
    }
    (spans, authorizations)
}

fn attribute(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()).and_then(|v| v.value.clone())
}

fn string(span: &Span, key: &str) -> Option<String> {
    match attribute(span, key) {
        Some(AnyValue::StringValue(text)) => Some(text),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, b| {
        let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{b:02x}"));
        text
    })
}

#[tokio::test]
async fn request_spans_continue_the_callers_trace_and_reach_the_otlp_receiver() {
    let receiver = otlp_receiver().await;
    let endpoint = receiver.uri().replace("http://", "http://otel:p%40ss@");
    let served = serve(&[
        ("DATABASE_URL", fresh_postgres_url().await),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("RUST_LOG", "info".into()),
    ])
    .await;
    let tenant = new_tenant();
    let token = token(tenant, "user-1", Role::Admin);
    let client = client();
    let created = client
        .post(format!("{}/v1/runs", served.address))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({"agent": "support-bot", "input": {"question": "hi"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let request_id = created.headers()["x-request-id"].to_str().unwrap().to_owned();
    // Without a traceparent: a trace of its own.
    let listed = client.get(format!("{}/v1/runs", served.address)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let unknown = client.get(format!("{}/nowhere", served.address)).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let output = served.stop();

    let (spans, authorizations) = received(&receiver).await;
    let basic = base64::engine::general_purpose::STANDARD.encode("otel:p@ss");
    assert!(
        !authorizations.is_empty() && authorizations.iter().all(|a| *a == format!("Basic {basic}")),
        "{authorizations:?}"
    );
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();

    let create =
        spans.iter().find(|s| s.name == "POST /v1/runs").unwrap_or_else(|| panic!("{names:?}\n{output}"));
    assert_eq!(hex(&create.trace_id), CALLER_TRACE, "the caller's trace goes on");
    assert_eq!(hex(&create.parent_span_id), CALLER_SPAN, "the caller's span is the parent");
    assert_eq!(create.kind, SpanKind::Server as i32);
    assert_eq!(string(create, "http.route").as_deref(), Some("/v1/runs"));
    assert_eq!(string(create, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(attribute(create, "http.response.status_code"), Some(AnyValue::IntValue(201)));
    assert_eq!(string(create, "tenant"), Some(tenant.to_string()));
    assert_eq!(string(create, "request_id"), Some(request_id));

    let list = spans.iter().find(|s| s.name == "GET /v1/runs").unwrap_or_else(|| panic!("{names:?}"));
    assert_ne!(hex(&list.trace_id), CALLER_TRACE, "a request without traceparent starts a trace");
    assert!(list.parent_span_id.is_empty(), "and is its root");
    let unmatched = spans.iter().find(|s| s.name == "GET unmatched").unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(string(unmatched, "tenant"), None, "no token, no tenant");
    assert_eq!(attribute(unmatched, "http.response.status_code"), Some(AnyValue::IntValue(404)));

    // The store calls made for the create are its children, in the same trace.
    let children: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id == create.span_id).collect();
    assert!(
        children.iter().any(|s| s.name.starts_with("postgresql ") && s.kind == SpanKind::Client as i32),
        "{:?}",
        children.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert!(children.iter().all(|s| s.trace_id == create.trace_id));
}

#[tokio::test]
async fn the_workers_span_links_to_the_ingest_that_queued_its_events() {
    let receiver = otlp_receiver().await;
    // A Redis database of its own: the node's worker consumes the production group
    // (`persisters`), which no other test's worker may share.
    let redis = format!("{}/{}", redis_url(), TRACES_REDIS_DB);
    // What an earlier run of this test left behind there would only slow the worker down.
    let admin = fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&redis).unwrap())
        .build()
        .unwrap();
    fred::prelude::ClientLike::init(&admin).await.unwrap();
    let () =
        fred::prelude::ClientLike::custom(&admin, fred::cmd!("FLUSHDB"), Vec::<String>::new()).await.unwrap();
    let served = serve(&[
        ("DATABASE_URL", fresh_postgres_url().await),
        ("REDIS_URL", redis),
        ("SBA_WORKER__IN_PROCESS", "true".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.uri()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("RUST_LOG", "info".into()),
    ])
    .await;
    let tenant = new_tenant();
    let client = client();
    let run: serde_json::Value = client
        .post(format!("{}/v1/runs", served.address))
        .bearer_auth(token(tenant, "user-1", Role::Authenticated))
        .json(&json!({"agent": "support-bot", "input": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();
    let ingest_trace = "0af7651916cd43dd8448eb211c80319c";
    let ingested = client
        .post(format!("{}/v1/runs/{run_id}/events", served.address))
        .bearer_auth(token(tenant, "agent-1", Role::Agent))
        .header("traceparent", format!("00-{ingest_trace}-b7ad6b7169203331-01"))
        .json(&json!({"events": [
            {"id": "e1", "kind": "run.started"},
            {"id": "e2", "kind": "step.created", "data": {"step_id": "s1", "type": "message_creation"}},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ingested.status(), 200, "{}", ingested.text().await.unwrap());
    // The node's worker has stored them once its counter says so (the run's events are
    // listed from the Redis history before that).
    let mut persisted = 0.0;
    for _ in 0..300 {
        let page =
            client.get(format!("{}/metrics", served.address)).send().await.unwrap().text().await.unwrap();
        persisted = page
            .lines()
            .find_map(|line| line.strip_prefix("sba_worker_events_persisted_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if persisted >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(persisted >= 2.0, "the worker did not store the two events: {persisted} persisted");
    let output = served.stop();

    let (spans, _) = received(&receiver).await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let ingest = spans
        .iter()
        .find(|s| s.name == "ingest events" && hex(&s.trace_id) == ingest_trace)
        .unwrap_or_else(|| panic!("{names:?}\n{output}"));
    assert_eq!(string(ingest, "run").as_deref(), Some(run_id.as_str()));
    assert_eq!(attribute(ingest, "events"), Some(AnyValue::IntValue(2)));
    let persist = spans
        .iter()
        .find(|s| s.name == "persist events" && s.links.iter().any(|l| hex(&l.trace_id) == ingest_trace))
        .unwrap_or_else(|| panic!("no worker span links to the ingest's trace: {names:?}"));
    assert_ne!(
        hex(&persist.trace_id),
        ingest_trace,
        "a link, not a parent: the worker's batch is a trace of its own"
    );
    assert_eq!(string(persist, "run").as_deref(), Some(run_id.as_str()));
    assert_eq!(attribute(persist, "last_seq"), Some(AnyValue::IntValue(3)));
}

#[tokio::test]
async fn websocket_and_postgrest_calls_are_spans_of_the_trace_and_postgrest_gets_its_traceparent() {
    let receiver = otlp_receiver().await;
    let tenant = new_tenant();
    let postgrest = MockServer::start().await;
    serve_active_tenant(&postgrest, tenant).await;
    Mock::given(method("GET"))
        .and(path("/rest/v1/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&postgrest)
        .await;
    let served = serve(&[
        ("DATABASE_URL", fresh_postgres_url().await),
        ("SUPABASE_URL", postgrest.uri()),
        ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key-for-the-trace-test".into()),
        ("SUPABASE_ANON_KEY", "anon-key-for-the-trace-test".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.uri()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("RUST_LOG", "info".into()),
    ])
    .await;
    let admin = token(tenant, "boss", Role::Admin);
    let listed =
        client().get(format!("{}/v1/sessions", served.address)).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(listed.status(), 200, "{}", listed.text().await.unwrap());

    let stream = format!("{}/v1/stream?access_token={admin}", served.address.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(stream).await.unwrap();
    let subscribe = json!({"op": "subscribe", "id": "s1", "channel": "tenant"}).to_string();
    futures_util::SinkExt::send(&mut socket, tokio_tungstenite::tungstenite::Message::text(subscribe))
        .await
        .unwrap();
    let ack = futures_util::StreamExt::next(&mut socket).await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("\"ack\""), "{ack:?}");
    socket.close(None).await.unwrap();
    // The server ends the connection (and its span) once the close handshake is done.
    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut socket).await {}
    let output = served.stop();

    let (spans, _) = received(&receiver).await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let by_name = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no `{name}` span: {names:?}\n{output}"))
    };

    let list = by_name("GET /v1/sessions");
    let call = spans
        .iter()
        .find(|s| s.name == "supabase GET sessions" && s.parent_span_id == list.span_id)
        .unwrap_or_else(|| panic!("no PostgREST client span under the request: {names:?}"));
    assert_eq!(call.kind, SpanKind::Client as i32);
    let sent: Vec<String> = postgrest
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/rest/v1/sessions")
        .filter_map(|r| r.headers.get("traceparent").map(|v| v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        sent,
        [format!("00-{}-{}-01", hex(&call.trace_id), hex(&call.span_id))],
        "PostgREST gets the client span's context"
    );

    let handshake = by_name("GET /v1/stream");
    assert_eq!(attribute(handshake, "http.response.status_code"), Some(AnyValue::IntValue(101)));
    let connection = by_name("websocket connection");
    assert_eq!(connection.parent_span_id, handshake.span_id, "the connection is a child of its handshake");
    assert_eq!(string(connection, "tenant"), Some(tenant.to_string()));
    assert_eq!(string(connection, "close.reason").as_deref(), Some("client"));
    let op = by_name("websocket subscribe");
    assert_eq!(op.parent_span_id, connection.span_id);
    assert_eq!(string(op, "ws.channel").as_deref(), Some("tenant"));
}
