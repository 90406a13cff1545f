//! The WebSocket gateway `GET /v1/stream` end to end, with a real WebSocket client
//! (tokio-tungstenite): the handshake and its transports ([`handshake`]), the ops and their
//! refusals ([`ops`]), delivery of events (replay then live, slow clients, throttling,
//! across nodes: [`delivery`]) and the connection's lifetime (token refresh and expiry,
//! heartbeat, shutdown: [`lifetime`]).

mod delivery;
mod handshake;
mod lifetime;
mod ops;

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use sba_domain::{Role, TenantId};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, Request};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::helpers::{TestApp, json_of, new_tenant};

/// How long a test waits for a frame before it fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// A client of the stream.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
}

/// How a handshake presents its token.
#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Header,
    Subprotocol,
    Query,
}

impl Transport {
    pub const ALL: [Self; 3] = [Self::Header, Self::Subprotocol, Self::Query];
}

/// The handshake request of `app` presenting `token` by `transport` (and offering
/// `sba.v1` in every case).
fn handshake(app: &TestApp, token: &str, transport: Transport) -> Request<()> {
    let base = app.address.replace("http://", "ws://");
    let url = match transport {
        Transport::Query => format!("{base}/v1/stream?access_token={token}"),
        Transport::Header | Transport::Subprotocol => format!("{base}/v1/stream"),
    };
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    match transport {
        Transport::Header => {
            headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
            headers.insert("sec-websocket-protocol", HeaderValue::from_static("sba.v1"));
        }
        Transport::Subprotocol => {
            let protocols = format!("sba.v1, bearer.{token}");
            headers.insert("sec-websocket-protocol", HeaderValue::from_str(&protocols).unwrap());
        }
        Transport::Query => {
            headers.insert("sec-websocket-protocol", HeaderValue::from_static("sba.v1"));
        }
    }
    request
}

/// Opens a TCP connection to `app`; with `receive_buffer`, a small kernel receive buffer
/// (a client that stops reading then backs frames up in the server quickly).
async fn tcp(app: &TestApp, receive_buffer: Option<u32>) -> TcpStream {
    let address = app.address.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.connect(address).await.unwrap()
}

/// A refused handshake: its status, headers and problem body.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

/// The outcome of a handshake: the client and the upgrade's subprotocol, or the refusal.
pub async fn try_connect(
    app: &TestApp,
    token: &str,
    transport: Transport,
) -> Result<(Client, Option<String>), Refusal> {
    upgrade(handshake(app, token, transport), tcp(app, None).await).await
}

/// The outcome of the handshake `request` on `tcp`; owns what it needs, so it can be
/// spawned while the test goes on (and stops the app).
async fn upgrade(request: Request<()>, tcp: TcpStream) -> Result<(Client, Option<String>), Refusal> {
    match client_async(request, tcp).await {
        Ok((ws, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|value| value.to_str().unwrap().to_owned());
            Ok((Client { ws }, protocol))
        }
        Err(tungstenite::Error::Http(response)) => Err(Refusal {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                .unwrap_or(Value::Null),
        }),
        Err(error) => panic!("the handshake failed: {error}"),
    }
}

/// A connected client of `token` (header transport).
pub async fn connect(app: &TestApp, token: &str) -> Client {
    try_connect(app, token, Transport::Header).await.map(|(client, _)| client).expect("an upgrade")
}

/// A connected client of `token` whose kernel receive buffer is small.
pub async fn connect_slow(app: &TestApp, token: &str) -> Client {
    let (ws, _) = client_async(handshake(app, token, Transport::Header), tcp(app, Some(4096)).await)
        .await
        .expect("an upgrade");
    Client { ws }
}

/// What the server sent next.
#[derive(Debug)]
pub enum Received {
    Frame(Value),
    Closed(Option<u16>),
}

impl Client {
    pub async fn send(&mut self, frame: &Value) {
        self.ws.send(Message::text(frame.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// Sends `text` as one message of `parts` WebSocket frames: a text frame without FIN,
    /// then continuation frames, the last with FIN (split on bytes: keep `text` ASCII).
    pub async fn send_fragmented(&mut self, text: &str, parts: usize) {
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(text.len().div_ceil(parts)).collect();
        assert_eq!(chunks.len(), parts, "{} bytes do not split into {parts} frames", text.len());
        for (index, chunk) in chunks.iter().enumerate() {
            let opcode = OpCode::Data(if index == 0 { Data::Text } else { Data::Continue });
            let frame = Frame::message(chunk.to_vec(), opcode, index + 1 == parts);
            self.ws.send(Message::Frame(frame)).await.unwrap();
        }
    }

    /// The next text frame or the close, skipping pings (answered by the client library).
    pub async fn receive(&mut self) -> Received {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next()).await.expect("a frame in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Received::Frame(serde_json::from_str(&text).unwrap());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Received::Closed(frame.map(|CloseFrame { code, .. }| u16::from(code)));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    eprintln!("the stream ended with {error}");
                    return Received::Closed(None);
                }
                None => return Received::Closed(None),
            }
        }
    }

    /// The next text frame (panics on a close).
    pub async fn frame(&mut self) -> Value {
        match self.receive().await {
            Received::Frame(frame) => frame,
            Received::Closed(code) => panic!("closed ({code:?}) while a frame was expected"),
        }
    }

    /// The close code, after any frames still in flight (returned).
    pub async fn closed(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut frames = Vec::new();
        loop {
            match self.receive().await {
                Received::Frame(frame) => frames.push(frame),
                Received::Closed(code) => return (frames, code),
            }
        }
    }

    /// Sends `frame` and answers the next frame.
    pub async fn ask(&mut self, frame: Value) -> Value {
        self.send(&frame).await;
        self.frame().await
    }

    /// Subscribes and checks the ack.
    pub async fn subscribe(&mut self, channel: &str, after_seq: Option<u64>) {
        let mut op = json!({"op": "subscribe", "id": "sub", "channel": channel});
        if let Some(after_seq) = after_seq {
            op["after_seq"] = json!(after_seq);
        }
        let answer = self.ask(op).await;
        assert_eq!(answer, json!({"type": "ack", "id": "sub"}), "subscribing to {channel}");
    }

    /// The connection answers a ping.
    pub async fn assert_alive(&mut self) {
        let answer = self.ask(json!({"op": "ping", "id": "alive"})).await;
        assert_eq!(answer, json!({"type": "pong", "id": "alive"}));
    }

    /// Event frames until one of `seq` or beyond, in the order received.
    pub async fn events_through(&mut self, seq: u64) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let frame = self.frame().await;
            assert_eq!(frame["type"], "event", "{frame}");
            let at = frame["seq"].as_u64().unwrap();
            events.push(frame);
            if at >= seq {
                return events;
            }
        }
    }
}

/// The seqs of event frames.
pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|event| event["seq"].as_u64().unwrap()).collect()
}

/// A run of a new tenant, with a token of its creator and one of an agent of its tenant.
pub struct Run {
    pub id: String,
    pub tenant: TenantId,
    pub user: String,
    pub agent: String,
}

impl Run {
    pub fn channel(&self) -> String {
        format!("run:{}", self.id)
    }
}

pub async fn new_run(app: &TestApp) -> Run {
    run_of(app, new_tenant()).await
}

pub async fn run_of(app: &TestApp, tenant: TenantId) -> Run {
    let user = app.token(tenant, "alice", Role::Authenticated);
    let created = json_of(app.post_json("/v1/runs", &user, &json!({"agent": "bot"})).await, 200 + 1).await;
    Run {
        id: created["id"].as_str().unwrap().to_owned(),
        tenant,
        user,
        agent: app.token(tenant, "agent-1", Role::Agent),
    }
}

/// Ingests `events` into `run`; answers the seq of the last one.
pub async fn ingest(app: &TestApp, run: &Run, events: &[Value]) -> u64 {
    let path = format!("/v1/runs/{}/events", run.id);
    let body = json_of(app.post_json(&path, &run.agent, &json!({"events": events})).await, 200).await;
    body["accepted"].as_array().unwrap().last().unwrap()["seq"].as_u64().unwrap()
}

/// `run.started` and the steps `s1` and `s2` that deltas write to.
pub fn opening() -> Vec<Value> {
    vec![
        json!({"id": "start", "kind": "run.started"}),
        json!({"id": "s1", "kind": "step.created", "data": {"step_id": "s1", "type": "message_creation"}}),
        json!({"id": "s2", "kind": "step.created", "data": {"step_id": "s2", "type": "message_creation"}}),
    ]
}

/// A delta of `step` whose text is `text`, with producer id `id`.
pub fn delta(id: &str, step: &str, text: &str) -> Value {
    json!({"id": id, "kind": "step.delta", "data": {"step_id": step, "text": text}})
}
