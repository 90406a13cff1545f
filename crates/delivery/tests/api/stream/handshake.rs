//! The handshake: a token on any of the three transports, verified before the upgrade.

use jsonwebtoken::{EncodingKey, Header, encode};
use sba_domain::Role;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{Transport, try_connect};
use crate::helpers::{
    AUDIENCE, ISSUER, SECRET, Store, TestApp, new_tenant, problem, spawn_app, spawn_app_with,
};

fn sign(claims: &serde_json::Value) -> String {
    encode(&Header::default(), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn expired() -> String {
    let exp = jsonwebtoken::get_current_timestamp() - 60;
    sign(
        &json!({"sub": "alice", "tenant_id": new_tenant().to_string(), "exp": exp, "iss": ISSUER, "aud": AUDIENCE}),
    )
}

fn tenantless() -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    sign(&json!({"sub": "alice", "exp": exp, "iss": ISSUER, "aud": AUDIENCE}))
}

async fn app() -> TestApp {
    spawn_app(Store::Sqlite).await
}

#[tokio::test]
async fn bad_expired_and_tenantless_tokens_are_refused_with_401_on_every_transport_without_an_upgrade() {
    let app = app().await;
    let forged = app.token(new_tenant(), "alice", Role::Authenticated).replace('.', "x.");
    for transport in Transport::ALL {
        for (token, code) in [
            (forged.as_str(), "token_invalid"),
            (&expired(), "token_expired"),
            (&tenantless(), "tenant_missing"),
        ] {
            let Err(refusal) = try_connect(&app, token, transport).await else {
                panic!("{transport:?} with a {code} token was upgraded");
            };
            assert_eq!(refusal.status, 401, "{transport:?} {code}: {}", refusal.body);
            assert_eq!(refusal.body["code"], code, "{transport:?}: {}", refusal.body);
        }
    }
}

#[tokio::test]
async fn a_valid_token_on_every_transport_upgrades_and_sba_v1_is_selected() {
    let app = app().await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    for transport in Transport::ALL {
        let (mut client, protocol) = try_connect(&app, &token, transport)
            .await
            .unwrap_or_else(|refusal| panic!("{transport:?}: {refusal:?}"));
        assert_eq!(protocol.as_deref(), Some("sba.v1"), "{transport:?}");
        client.assert_alive().await;
    }
}

#[tokio::test]
async fn a_request_that_is_not_an_upgrade_is_a_bad_request_problem() {
    let app = app().await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    problem(app.get("/v1/stream", &token).await, 400, "invalid_request").await;
    problem(app.get_anonymous("/v1/stream").await, 401, "token_missing").await;
}

#[tokio::test]
async fn the_access_token_never_reaches_a_metric() {
    let app = app().await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let (mut client, _) = try_connect(&app, &token, Transport::Query).await.unwrap();
    client.assert_alive().await;
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("sba_ws_connections"), "the gateway's metrics are there");
    assert!(metrics.contains(r#"route="/v1/stream""#), "the handshake is labelled by its route template");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!metrics.contains(signature), "the token leaked into /metrics");
}

#[tokio::test]
async fn handshakes_are_rate_limited_like_every_v1_route() {
    let app = spawn_app_with(Store::Sqlite, &[("SBA_RATE_LIMIT__DEFAULT", "2/60")]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    for transport in [Transport::Header, Transport::Query] {
        assert!(try_connect(&app, &token, transport).await.is_ok(), "{transport:?}");
    }
    let Err(refusal) = try_connect(&app, &token, Transport::Subprotocol).await else {
        panic!("a third handshake within the quota's window was upgraded");
    };
    assert_eq!(
        (refusal.status, refusal.body["code"].as_str()),
        (429, Some("rate_limited")),
        "{}",
        refusal.body
    );
}

/// Writes `bytes` on a new TCP connection to the app and reads the response head.
async fn raw_exchange(app: &TestApp, bytes: &[u8]) -> (TcpStream, String) {
    let address = app.address.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(address).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    (tcp, String::from_utf8(head).unwrap())
}

fn upgrade_request(path: &str, address: &str, token: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_frame_sent_in_the_same_write_as_the_upgrade_request_is_answered() {
    let app = app().await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let mut bytes =
        upgrade_request("/v1/stream", app.address.trim_start_matches("http://"), &token).into_bytes();
    let op = br#"{"op":"ping","id":"early"}"#;
    let mask = [1_u8, 2, 3, 4];
    bytes.extend_from_slice(&[0x81, 0x80 | u8::try_from(op.len()).unwrap()]);
    bytes.extend_from_slice(&mask);
    bytes.extend(op.iter().zip(mask.iter().cycle()).map(|(byte, key)| byte ^ key));
    let (mut tcp, head) = raw_exchange(&app, &bytes).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut header = [0_u8; 2];
    tcp.read_exact(&mut header).await.unwrap();
    assert_eq!(header[0], 0x81, "a text frame");
    let mut text = vec![0_u8; usize::from(header[1])];
    tcp.read_exact(&mut text).await.unwrap();
    let frame: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(frame, json!({"type": "pong", "id": "early"}));
}

#[tokio::test]
async fn an_upgrade_request_to_another_route_or_refused_gets_its_answer_and_the_connection_closes() {
    let app = app().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    for (path, token, status) in [
        ("/healthz", "x", "HTTP/1.1 200"),
        ("/v1/stream", "forged", "HTTP/1.1 401"),
        ("/nowhere", "x", "HTTP/1.1 404"),
    ] {
        let (mut tcp, head) = raw_exchange(&app, upgrade_request(path, &address, token).as_bytes()).await;
        assert!(head.starts_with(status), "{path}: {head}");
        assert!(head.to_ascii_lowercase().contains("connection: close"), "{path}: {head}");
        let mut rest = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut rest))
            .await
            .expect("the server closes the connection after its answer")
            .unwrap();
    }
}
