//! A connection's lifetime: `op: auth` moves its expiry, its token's expiry closes it with
//! `token_expired` and 1008, a client that stops answering pings is closed, and a graceful
//! stop flushes and closes with 1001 while upgrade requests already in the server get 503.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sba_domain::{Role, TenantId};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::client_async;

use super::{PATIENCE, Transport, connect, delta, handshake, ingest, new_run, opening, tcp, upgrade};
use crate::helpers::{Store, new_tenant, spawn_app, spawn_app_with};

#[tokio::test]
async fn when_its_token_expires_the_connection_gets_token_expired_and_a_1008_close() {
    let app = spawn_app(Store::Sqlite).await;
    let token = app.token_for(new_tenant(), "alice", Role::Authenticated, Duration::from_secs(2));
    let mut client = connect(&app, &token).await;
    client.assert_alive().await;
    let (frames, code) = client.closed().await;
    assert_eq!(code, Some(1008));
    let last = frames.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("error"), Some("token_expired")),
        "{frames:?}"
    );
    assert!(last.get("id").is_none(), "no op is answered: {last}");
}

#[tokio::test]
async fn a_fresh_token_of_the_same_principal_extends_the_connection_and_others_are_refused() {
    let app = spawn_app(Store::Sqlite).await;
    let tenant = new_tenant();
    let short = app.token_for(tenant, "alice", Role::Authenticated, Duration::from_secs(3));
    let connected = std::time::Instant::now();
    let mut client = connect(&app, &short).await;
    let fresh = app.token(tenant, "alice", Role::Authenticated);
    assert_eq!(
        client.ask(json!({"op": "auth", "id": "1", "token": fresh})).await,
        json!({"type": "ack", "id": "1"})
    );

    let someone_else = app.token(tenant, "bob", Role::Authenticated);
    let admin = app.token(tenant, "alice", Role::Admin);
    let other_tenant = app.token(new_tenant(), "alice", Role::Authenticated);
    let forged = app.token(tenant, "alice", Role::Authenticated).replace('.', "x.");
    for (id, token) in [("2", someone_else), ("3", admin), ("4", other_tenant), ("5", forged)] {
        let refused = client.ask(json!({"op": "auth", "id": id, "token": token})).await;
        assert_eq!(
            (refused["code"].as_str(), refused["id"].as_str()),
            (Some("forbidden"), Some(id)),
            "{refused}"
        );
    }
    let expired = app.token_for(tenant, "alice", Role::Authenticated, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused = client.ask(json!({"op": "auth", "id": "6", "token": expired})).await;
    assert_eq!((refused["code"].as_str(), refused["id"].as_str()), (Some("token_expired"), Some("6")));

    tokio::time::sleep(
        (connected + Duration::from_secs(4)).saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    client.assert_alive().await;
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed() {
    let app = spawn_app_with(
        Store::Sqlite,
        &[("SBA_STREAM__HEARTBEAT_INTERVAL", "200ms"), ("SBA_STREAM__HEARTBEAT_TIMEOUT", "700ms")],
    )
    .await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let mut answering = connect(&app, &token).await;
    let silent = silent_connection(&app, &token).await;
    for _ in 0..6 {
        answering.assert_alive().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(close_code_of(silent).await, Some(1008));
    answering.assert_alive().await;
}

/// A WebSocket connection made by hand that never answers anything (a client library
/// answers pings as it reads, and fails writing a pong once the server has closed).
async fn silent_connection(app: &crate::helpers::TestApp, token: &str) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET /v1/stream HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// The code of the close frame among what the server sent until it closed the connection
/// (server frames are unmasked; pings and the close are short).
async fn close_code_of(mut tcp: TcpStream) -> Option<u16> {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut bytes)).await.unwrap().unwrap();
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let (opcode, len) = (bytes[at] & 0x0f, usize::from(bytes[at + 1] & 0x7f));
        if opcode == 0x8 && len >= 2 {
            return Some(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        }
        at += 2 + len;
    }
    None
}

#[tokio::test]
async fn a_graceful_stop_flushes_what_is_queued_and_closes_with_1001() {
    let mut app = spawn_app(Store::Sqlite).await;
    let run = new_run(&app).await;
    let mut client = connect(&app, &run.user).await;
    client.subscribe(&run.channel(), Some(0)).await;
    let last = ingest(&app, &run, &opening()).await;
    let more = ingest(&app, &run, &[delta("d", "s1", "before the stop")]).await;
    assert!(more > last);
    app.stop();
    let (frames, code) = client.closed().await;
    assert_eq!(code, Some(1001));
    let delivered: Vec<u64> = frames.iter().filter_map(|frame| frame["seq"].as_u64()).collect();
    assert_eq!(delivered, (1..=more).collect::<Vec<_>>(), "everything queued was sent first");
}

#[tokio::test]
async fn during_a_graceful_stop_an_upgrade_request_gets_503_server_busy_and_open_streams_close_with_1001() {
    let late = new_tenant();
    let directory = HeldDirectory::start(late).await;
    let mut app = spawn_app_with(
        Store::Sqlite,
        &[
            ("SUPABASE_URL", &directory.url),
            ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key"),
            // The held lookup must not time out, nor the stop give up on its request.
            ("SBA_SUPABASE__TIMEOUT_MS", "60000"),
            ("SBA_SERVER__SHUTDOWN_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    let mut open = connect(&app, &app.token(new_tenant(), "alice", Role::Authenticated)).await;
    open.assert_alive().await;

    // The stop closes the listening socket at once, so only a request already inside the
    // server can meet the gateway's refusal: this one waits in its tenant's lookup.
    let request = handshake(&app, &app.token(late, "bob", Role::Authenticated), Transport::Header);
    let attempt = tokio::spawn(upgrade(request, tcp(&app, None).await));
    tokio::time::timeout(PATIENCE, directory.arrived).await.expect("the lookup in time").unwrap();
    app.stop();
    assert_eq!(open.closed().await, (Vec::new(), Some(1001)), "an open stream is closed");

    // Meanwhile a new connection gets no upgrade either: it waits in the listen backlog and
    // is refused when the listener closes, or gets 503 if the server took it in before its
    // pause (another tenant than the held one, whose lookup would wait for the release).
    let address = app.address.trim_start_matches("http://").to_owned();
    let fresh = tokio::time::timeout(PATIENCE, async {
        match TcpStream::connect(&address).await {
            Ok(tcp) => client_async(
                handshake(&app, &app.token(new_tenant(), "carol", Role::Authenticated), Transport::Header),
                tcp,
            )
            .await
            .is_ok(),
            Err(_) => false,
        }
    });
    assert!(!fresh.await.expect("the new connection ends in time"), "a new connection was upgraded");

    directory.release.send(()).unwrap();
    let Err(refusal) = attempt.await.unwrap() else { panic!("upgraded during the stop") };
    assert_eq!((refusal.status, refusal.body["code"].as_str()), (503, Some("server_busy")), "{refusal:?}");
    assert_eq!(refusal.headers["content-type"], "application/problem+json");
    assert_eq!(refusal.headers["retry-after"], "1");
    assert_eq!(refusal.body["retry_after_ms"], 1000);
}

/// A stand-in for Supabase's PostgREST that knows every tenant as active and answers at
/// once, except the lookup of one tenant: that one is reported (`arrived`) and answered
/// once `release` is sent, so that a request of that tenant is known to be inside the
/// server (its authentication middleware) for as long as the test needs.
struct HeldDirectory {
    /// For `SUPABASE_URL`.
    url: String,
    arrived: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

/// What the held lookup reports to and waits for (taken by the first one).
type Hold = Arc<Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>>;

impl HeldDirectory {
    async fn start(late: TenantId) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (reported, arrived) = oneshot::channel();
        let (release, released) = oneshot::channel();
        let hold: Hold = Arc::new(Mutex::new(Some((reported, released))));
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(answer(tcp, late, Arc::clone(&hold)));
            }
        });
        Self { url, arrived, release }
    }
}

/// Answers one PostgREST read: `[<active tenant>]` for `tenants?id=eq.<id>`, `[]` for
/// anything else.
async fn answer(mut tcp: TcpStream, late: TenantId, hold: Hold) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let target = head.split_whitespace().nth(1).unwrap();
    let url = reqwest::Url::parse(&format!("http://directory{target}")).unwrap();
    let tenant = url
        .query_pairs()
        .find(|(name, _)| name == "id")
        .and_then(|(_, value)| value.strip_prefix("eq.").map(str::to_owned));
    let body = match &tenant {
        Some(id) if url.path().ends_with("/tenants") => json!([{
            "id": id, "status": "active", "cors_origins": [], "plan": null,
            "rate_limit_requests": null, "rate_limit_window_secs": null,
        }]),
        _ => json!([]),
    };
    if tenant == Some(late.to_string()) {
        let taken = hold.lock().unwrap().take();
        if let Some((reported, released)) = taken {
            let _ = reported.send(());
            let _ = released.await;
        }
    }
    let body = body.to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(response.as_bytes()).await.unwrap();
}
