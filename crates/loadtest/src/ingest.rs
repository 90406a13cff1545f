//! The producer side: runs created and fed through the public API (`POST /v1/runs`, then
//! `POST /v1/runs/{id}/events` as an agent), or the floor's in-process hub; and the loop that
//! sends batches of timestamped `step.delta` events at a set rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};

use crate::floor::Hub;
use crate::frame::{now_micros, stamp};

/// Batches in flight at once: beyond it the loop waits (the achieved rate shows it).
const IN_FLIGHT: usize = 64;

/// Why a call of the public API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{what} answered {status}: {body}")]
    Refused { what: &'static str, status: u16, body: String },
    #[error("{what}: {source}")]
    Transport {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what} answered without {field}")]
    Malformed { what: &'static str, field: &'static str },
}

/// The public API of the nodes, as a user (creates runs) and an agent (ingests).
#[derive(Debug, Clone)]
pub struct Api {
    pub http: reqwest::Client,
    /// `http://host:port` of each node.
    pub nodes: Vec<String>,
    pub user: String,
    pub agent: String,
}

impl Api {
    /// Creates a run on `node` and starts it with an open step `s1` (what an agent does
    /// first); returns its id and its last seq, after which the load's events come.
    pub async fn start_run(&self, node: usize) -> Result<(String, u64), ApiError> {
        let what = "POST /v1/runs";
        let body = json!({"agent": "sba-load", "input": {"prompt": "load test"}});
        let created =
            self.call(what, &format!("{}/v1/runs", self.nodes[node]), &self.user, &body, 201).await?;
        let run = created["id"].as_str().ok_or(ApiError::Malformed { what, field: "id" })?.to_owned();
        let start = json!({"events": [
            {"id": "start", "kind": "run.started"},
            {"id": "open", "kind": "step.created", "data": {"step_id": "s1", "type": "message_creation"}},
        ]});
        let last = self.ingest(node, &run, &start).await?;
        Ok((run, last))
    }

    /// `POST /v1/runs/{run}/events`; the highest seq the server assigned.
    pub async fn ingest(&self, node: usize, run: &str, body: &Value) -> Result<u64, ApiError> {
        let what = "POST /v1/runs/{id}/events";
        let url = format!("{}/v1/runs/{run}/events", self.nodes[node % self.nodes.len()]);
        let answer = self.call(what, &url, &self.agent, body, 200).await?;
        answer["accepted"]
            .as_array()
            .and_then(|accepted| accepted.iter().filter_map(|a| a["seq"].as_u64()).max())
            .ok_or(ApiError::Malformed { what, field: "accepted[].seq" })
    }

    async fn call(
        &self,
        what: &'static str,
        url: &str,
        token: &str,
        body: &Value,
        expected: u16,
    ) -> Result<Value, ApiError> {
        let transport = |source| ApiError::Transport { what, source };
        let response =
            self.http.post(url).header("authorization", token).json(body).send().await.map_err(transport)?;
        let status = response.status().as_u16();
        if status != expected {
            let body = response.text().await.unwrap_or_default();
            return Err(ApiError::Refused { what, status, body });
        }
        response.json().await.map_err(transport)
    }
}

/// Where the load's events go.
#[derive(Debug, Clone)]
pub enum Producer {
    /// The nodes' public API; batches go to the nodes in turn.
    Api { api: Api, runs: Vec<String> },
    /// The floor's in-process broadcast hub.
    Floor(Arc<Hub>),
}

/// What the ingest loop did.
#[derive(Debug, Default)]
pub struct Ingested {
    pub events: u64,
    pub batches: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

/// Sends `rate` events per second in batches of `batch` for `duration`, the runs and nodes
/// in turn; each batch's events carry the call's start time, then `pad`. Raises `last_seq[run]` to the
/// highest seq assigned.
pub async fn load(
    producer: Producer,
    run_count: usize,
    rate: f64,
    batch: usize,
    duration: Duration,
    pad: Arc<str>,
    last_seq: Arc<Vec<AtomicU64>>,
) -> Ingested {
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let events = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    #[allow(clippy::cast_precision_loss)]
    let period = Duration::from_secs_f64(batch as f64 / rate.max(0.001));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let started = Instant::now();
    let end = started + duration;
    let mut n: usize = 0;
    while Instant::now() < end {
        ticker.tick().await;
        let Ok(permit) = Arc::clone(&gate).acquire_owned().await else { break };
        let (producer, events, errors, last_seq, pad) = (
            producer.clone(),
            Arc::clone(&events),
            Arc::clone(&errors),
            Arc::clone(&last_seq),
            Arc::clone(&pad),
        );
        let run = n % run_count;
        let index = n;
        tokio::spawn(async move {
            let sent = now_micros();
            let result = match &producer {
                Producer::Api { api, runs } => {
                    let body = json!({"events": (0..batch).map(|i| json!({
                        "id": format!("e{index}-{i}"), "kind": "step.delta",
                        "data": {"step_id": "s1", "text": stamp(sent, &pad)},
                    })).collect::<Vec<_>>()});
                    api.ingest(index, &runs[run], &body).await.map_err(|e| e.to_string())
                }
                Producer::Floor(hub) => Ok(hub.publish(run, batch, sent, &pad)),
            };
            match result {
                Ok(seq) => {
                    last_seq[run].fetch_max(seq, Ordering::AcqRel);
                    events.fetch_add(batch as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("sba-load: ingest failed (first error shown): {e}");
                    }
                }
            }
            drop(permit);
        });
        n += 1;
    }
    let _ = gate.acquire_many(u32::try_from(IN_FLIGHT).unwrap_or(u32::MAX)).await;
    Ingested {
        events: events.load(Ordering::Relaxed),
        batches: n as u64,
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}
