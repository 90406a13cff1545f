//! One WebSocket subscriber: connects, subscribes to its run with `after_seq`, accounts
//! every event frame, and resumes after a 1013 close or a `resume_required` error, until
//! it has every ingested seq or the drain time is over. A slow subscriber stops reading
//! once subscribed and reads again only when the ingest is over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

use crate::accounting::{Histogram, Tracker};
use crate::frame::{Frame, now_micros, stamps};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Attempts at a connection before the subscriber gives up.
const CONNECT_ATTEMPTS: u32 = 5;

/// What every subscriber shares with the driver.
#[derive(Debug)]
pub struct Shared {
    /// Latencies of the normal (not slow) subscribers' events, send to receipt.
    pub histogram: Histogram,
    /// The last ingested seq of each run (known once the ingest is over).
    pub last_seq: Vec<AtomicU64>,
    /// Microseconds since the epoch of the latest event receipt at a normal subscriber.
    pub last_receipt: AtomicU64,
}

/// Where and how one subscriber connects.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `ws://host:port/v1/stream`.
    pub url: String,
    /// `Bearer <jwt>`, if the server needs one.
    pub authorization: Option<String>,
    pub run: usize,
    pub channel: String,
    pub after_seq: u64,
    pub slow: bool,
}

/// What one subscriber saw.
#[derive(Debug)]
pub struct Outcome {
    pub slow: bool,
    pub run: usize,
    pub tracker: Tracker,
    pub closes_1013: u64,
    pub resume_required: u64,
    /// Closes other than 1013 and broken connections, each followed by a resume.
    pub other_closes: u64,
    /// Error frames other than `resume_required`.
    pub errors: u64,
    pub connect_failed: bool,
}

/// Runs one subscriber. `ready` gets one message once the first subscription is acknowledged
/// (true) or the connection failed (false); `drain` turns into the drain deadline when the
/// ingest is over.
pub async fn run(
    plan: Plan,
    shared: Arc<Shared>,
    ready: mpsc::Sender<bool>,
    mut drain: watch::Receiver<Option<Instant>>,
) -> Outcome {
    let mut outcome = Outcome {
        slow: plan.slow,
        run: plan.run,
        tracker: Tracker::new(plan.after_seq),
        closes_1013: 0,
        resume_required: 0,
        other_closes: 0,
        errors: 0,
        connect_failed: false,
    };
    let mut ready = Some(ready);
    let mut op_id = 0_u64;
    loop {
        let Some(mut socket) = connect(&plan).await else {
            outcome.connect_failed = true;
            if let Some(ready) = ready.take() {
                let _ = ready.send(false).await;
            }
            return outcome;
        };
        op_id += 1;
        if let Err(e) = subscribe(&mut socket, &plan, op_id, outcome.tracker.contiguous()).await {
            outcome.other_closes += 1;
            if let Some(ready) = ready.take() {
                eprintln!("sba-load: subscribing to {} at {}: {e}", plan.channel, plan.url);
                outcome.connect_failed = true;
                let _ = ready.send(false).await;
                return outcome;
            }
            if drain.borrow().is_some_and(|deadline| Instant::now() >= deadline) {
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if let Some(ready) = ready.take() {
            let _ = ready.send(true).await;
            if plan.slow {
                // Stops reading: the server's queue for this connection fills up.
                let _ = drain.wait_for(Option::is_some).await;
            }
        }
        match read(&mut socket, &plan, &shared, &mut outcome, &mut op_id, &mut drain).await {
            Ended::Done => {
                let _ = socket.close(None).await;
                return outcome;
            }
            Ended::Closed1013 => outcome.closes_1013 += 1,
            Ended::Broken => outcome.other_closes += 1,
        }
        if drain.borrow().is_some_and(|deadline| Instant::now() >= deadline) {
            return outcome;
        }
        // The server replays what came after the last contiguous seq.
        let resume = outcome.tracker.contiguous();
        outcome.tracker.rewind(resume);
    }
}

/// How much a subscriber's socket reads at a time. tungstenite zeroes its read buffer up to
/// this size before every read (128 KiB by default): with thousands of subscribers that was
/// a tenth of the machine's CPU in the client (`perf`, docs/benchmarks.md "Sixth run"), taken
/// from the servers measured beside it. A burst of frames is a few KiB; a larger frame
/// (a merged delta) is read in several reads.
const READ_BUFFER_BYTES: usize = 16 * 1024;

fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES)
}

async fn connect(plan: &Plan) -> Option<Socket> {
    for attempt in 0..CONNECT_ATTEMPTS {
        let Ok(mut request) = plan.url.as_str().into_client_request() else { return None };
        if let Some(authorization) = &plan.authorization {
            request.headers_mut().insert("authorization", HeaderValue::from_str(authorization).ok()?);
        }
        match connect_async_with_config(request, Some(socket_config()), false).await {
            Ok((socket, _)) => return Some(socket),
            Err(e) if attempt + 1 == CONNECT_ATTEMPTS => {
                eprintln!("sba-load: connecting to {}: {e}", plan.url);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200 << attempt)).await,
        }
    }
    None
}

async fn subscribe(
    socket: &mut Socket,
    plan: &Plan,
    id: u64,
    after_seq: u64,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let op = serde_json::json!({"op": "subscribe", "id": id.to_string(), "channel": plan.channel, "after_seq": after_seq});
    socket.send(Message::text(op.to_string())).await?;
    // Events can follow the ack at once; the read loop takes them. Only the ack is awaited.
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("\"ack\"") => return Ok(()),
            Some(Ok(Message::Text(text))) => {
                return Err(tokio_tungstenite::tungstenite::Error::Io(std::io::Error::other(format!(
                    "subscribe answered {text}"
                ))));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed),
        }
    }
}

enum Ended {
    /// Every ingested seq arrived after the ingest ended, or the drain time is over.
    Done,
    Closed1013,
    Broken,
}

async fn read(
    socket: &mut Socket,
    plan: &Plan,
    shared: &Shared,
    outcome: &mut Outcome,
    op_id: &mut u64,
    drain: &mut watch::Receiver<Option<Instant>>,
) -> Ended {
    let far = Instant::now() + Duration::from_hours(24);
    let deadline = tokio::time::sleep_until(drain.borrow().unwrap_or(far));
    tokio::pin!(deadline);
    loop {
        let draining = drain.borrow().is_some();
        if draining && outcome.tracker.complete(shared.last_seq[plan.run].load(Ordering::Acquire)) {
            return Ended::Done;
        }
        tokio::select! {
            biased;
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(after_seq) = on_text(&text, plan, shared, outcome) {
                        outcome.resume_required += 1;
                        outcome.tracker.rewind(after_seq);
                        *op_id += 1;
                        let op = serde_json::json!({"op": "subscribe", "id": op_id.to_string(),
                            "channel": plan.channel, "after_seq": after_seq});
                        if socket.send(Message::text(op.to_string())).await.is_err() {
                            return Ended::Broken;
                        }
                    }
                }
                Some(Ok(Message::Close(Some(close)))) if close.code == CloseCode::Again => return Ended::Closed1013,
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Ended::Broken,
                Some(Ok(_)) => {}
            },
            changed = drain.changed(), if !draining => {
                if changed.is_err() {
                    return Ended::Done;
                }
                deadline.as_mut().reset(drain.borrow().unwrap_or(far));
            },
            () = &mut deadline, if draining => return Ended::Done,
        }
    }
}

/// Accounts one text frame; `Some(after_seq)` when the server asks for a resume.
fn on_text(text: &Utf8Bytes, plan: &Plan, shared: &Shared, outcome: &mut Outcome) -> Option<u64> {
    let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
        outcome.errors += 1;
        return None;
    };
    match frame.kind.as_ref() {
        "event" => {
            let data = frame.event.and_then(|e| e.data);
            let coalesced = data.as_ref().and_then(|d| d.coalesced).map(|r| (r.from_seq, r.to_seq));
            outcome.tracker.on_event(frame.seq.unwrap_or(0), coalesced);
            if !plan.slow
                && let Some(text) = data.as_ref().and_then(|d| d.text.as_deref())
            {
                let now = now_micros();
                for sent in stamps(text) {
                    shared.histogram.record(now.saturating_sub(sent));
                }
                shared.last_receipt.fetch_max(now, Ordering::Relaxed);
            }
            None
        }
        "error" if frame.code.as_deref() == Some("resume_required") => {
            Some(frame.after_seq.unwrap_or(0).min(outcome.tracker.contiguous()))
        }
        "error" => {
            outcome.errors += 1;
            None
        }
        _ => None,
    }
}
