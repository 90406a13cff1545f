//! The floor: a minimal WebSocket broadcast server in the tool itself (tokio-tungstenite, one
//! `tokio::sync::broadcast` channel per run, frames serialised once), fed in-process. The
//! same subscribers against it measure what this machine's cores allow for WebSocket
//! fan-out with no HTTP ingest, no Redis and no gateway logic: the baseline of the
//! benchmark's ratios. It speaks just enough of ARCHITECTURE.md §7 for the subscribers:
//! `subscribe` with `after_seq` (replayed from memory) answered by `ack`, event frames of
//! the gateway's shape, and 1013 when a subscriber falls a whole channel behind.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::frame::stamp;

/// Frames a subscriber may fall behind before it is closed with 1013 (the gateway's default
/// outbound queue bound, `stream.queue_max_messages`).
const CHANNEL_FRAMES: usize = 1024;
/// Frames written before one flush.
const FLUSH_EVERY: usize = 64;

/// Frames are serialised once; `Utf8Bytes` clones share the bytes.
type Frame = (u64, Utf8Bytes);

/// One run of the floor: its history (frame `i` has seq `i + 1`) and its live channel.
#[derive(Debug)]
struct RunChannel {
    id: String,
    history: Mutex<Vec<Utf8Bytes>>,
    live: broadcast::Sender<Frame>,
}

/// The floor's runs, fed by the ingest loop.
#[derive(Debug)]
pub struct Hub {
    runs: Vec<RunChannel>,
}

impl Hub {
    pub fn new(run_count: usize) -> Self {
        let runs = (0..run_count)
            .map(|_| RunChannel {
                id: uuid::Uuid::new_v4().to_string(),
                history: Mutex::new(Vec::new()),
                live: broadcast::channel(CHANNEL_FRAMES).0,
            })
            .collect();
        Self { runs }
    }

    /// The channel names of the runs, in order.
    pub fn channels(&self) -> Vec<String> {
        self.runs.iter().map(|r| format!("run:{}", r.id)).collect()
    }

    /// Appends `count` deltas stamped `sent` (then `pad`) to run `run` and broadcasts them; the last seq.
    pub fn publish(&self, run: usize, count: usize, sent: u64, pad: &str) -> u64 {
        let channel = &self.runs[run];
        let mut history = channel.history.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..count {
            let seq = history.len() as u64 + 1;
            let frame: Utf8Bytes = serde_json::json!({
                "type": "event", "channel": format!("run:{}", channel.id), "seq": seq,
                "event": {"seq": seq, "run_id": channel.id, "kind": "step.delta",
                          "data": {"step_id": "s1", "text": stamp(sent, pad)},
                          "created_at": "2026-01-01T00:00:00.000000Z"},
            })
            .to_string()
            .into();
            history.push(frame.clone());
            // No receiver yet is not an error: the history has it.
            let _ = channel.live.send((seq, frame));
        }
        history.len() as u64
    }
}

#[derive(Deserialize)]
struct Subscribe {
    id: String,
    channel: String,
    #[serde(default)]
    after_seq: u64,
}

/// Serves the hub's runs on `listener` until the process ends.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, Arc::clone(&hub)));
    }
}

async fn connection(tcp: TcpStream, hub: Arc<Hub>) {
    let Ok(socket) = tokio_tungstenite::accept_async(tcp).await else { return };
    let (mut sink, mut incoming) = socket.split();
    let subscribe = loop {
        match incoming.next().await {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<Subscribe>(text.as_str()) {
                Ok(op) => break op,
                Err(_) => return,
            },
            Some(Ok(_)) => {}
            _ => return,
        }
    };
    let Some(run) = hub.runs.iter().find(|r| format!("run:{}", r.id) == subscribe.channel) else { return };
    // Subscribed to the live channel under the history's lock: no frame falls between.
    let (mut live, replay) = {
        let history = run.history.lock().unwrap_or_else(PoisonError::into_inner);
        let from = usize::try_from(subscribe.after_seq).unwrap_or(usize::MAX).min(history.len());
        (run.live.subscribe(), history[from..].to_vec())
    };
    let ack = format!(r#"{{"type":"ack","id":"{}"}}"#, subscribe.id);
    if sink.send(Message::text(ack)).await.is_err() {
        return;
    }
    let mut sent = subscribe.after_seq + replay.len() as u64;
    for frame in replay {
        if sink.feed(Message::Text(frame)).await.is_err() {
            return;
        }
    }
    if sink.flush().await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            received = live.recv() => {
                let mut batch = Vec::new();
                let mut next = received;
                loop {
                    match next {
                        Ok((seq, frame)) if seq > sent => {
                            sent = seq;
                            batch.push(frame);
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => {
                            let close = CloseFrame { code: CloseCode::Again, reason: "slow consumer".into() };
                            let _ = sink.send(Message::Close(Some(close))).await;
                            return;
                        }
                        Err(RecvError::Closed) => return,
                    }
                    if batch.len() >= FLUSH_EVERY {
                        break;
                    }
                    next = match live.try_recv() {
                        Ok(frame) => Ok(frame),
                        Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Closed) => Err(RecvError::Closed),
                    };
                }
                for frame in batch {
                    if sink.feed(Message::Text(frame)).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
