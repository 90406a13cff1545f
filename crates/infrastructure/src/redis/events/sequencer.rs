//! `FredEventSequencer`: the [`EventSequencer`] of ADR 0017 on Redis, one `EVALSHA` of
//! `ingest.lua` per call, so a batch is recorded in the run's history, its producer ids and
//! its partition's queue all at once or not at all, whatever node sends it.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::clients::Client;
use fred::types::{Key, Value};
use sba_application::ports::{
    AppendOutcome, AppendRequest, AppendedEvent, EventSequencer, SeedOutcome, SequencerError,
    ServerAppendOutcome, ServerEvent, StatusChange,
};
use sba_domain::events::{EventData, RunEvent};
use sba_domain::{RunId, RunStatus, TenantId};
use secrecy::SecretString;

use super::keys::RunKeys;
use super::script::{self, EventScript, ScriptError, integer};
use super::stored::{self, body};
use crate::observe;
use crate::redis::connection::{self, ConnectionOptions};
use crate::trace_context;

const INGEST_LUA: &str = include_str!("ingest.lua");

/// How many times a batch is sent again after the script found some of its ids recorded
/// (each time only the ids it did not know): one is enough unless other nodes keep retrying
/// the same ids at the same moment.
const PARTIAL_ROUNDS: usize = 4;

/// Producer ids restored per script call.
const RESTORE_CHUNK: usize = 1_000;

/// The `kind` of the script's `server` operation that ends a run as expired: no event.
const EXPIRED: &str = "expired";

/// How the sequencer keys and keeps run events, and how long it waits for Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FredEventSequencerSettings {
    /// P, the number of partitions runs are spread over; fixed for a deployment (changing
    /// it moves every run's keys). Default: 16.
    pub partitions: u16,
    /// N, the events a run's history keeps at least (an entry goes, `MINID ~`, once its last
    /// event is more than N behind the run's last). Default: 10 000.
    pub history_max_len: u64,
    /// How long an ended run's keys are kept. Default: 24 h.
    pub history_ttl: Duration,
    /// The bound on one call, reloading the script included. Default: 1 s.
    pub timeout: Duration,
    /// How long [`FredEventSequencer::connect`] waits for the first connection. Default: 1 s.
    pub connect_timeout: Duration,
}

impl Default for FredEventSequencerSettings {
    fn default() -> Self {
        Self {
            partitions: 16,
            history_max_len: 10_000,
            history_ttl: Duration::from_hours(24),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// The [`EventSequencer`] on Redis.
pub struct FredEventSequencer {
    client: Client,
    script: EventScript,
    settings: FredEventSequencerSettings,
}

impl fmt::Debug for FredEventSequencer {
    // The client's configuration holds the password of the URL: it is not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FredEventSequencer").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl FredEventSequencer {
    /// Connects to the Redis at `url` (never logged). A Redis that is down at startup is not
    /// an error: calls answer [`SequencerError::Unavailable`] until it connects.
    ///
    /// # Errors
    /// When `url` is not a usable Redis URL.
    pub async fn connect(url: &SecretString, settings: FredEventSequencerSettings) -> anyhow::Result<Self> {
        let options = ConnectionOptions {
            command_timeout: settings.timeout,
            connect_timeout: settings.connect_timeout,
            ..ConnectionOptions::default()
        };
        let client = connection::connected_client(url, &options, "event ingest is unavailable").await?;
        let sequencer = Self::from_client(client, settings);
        if let Err(e) = sequencer.script.load(&sequencer.client).await {
            tracing::warn!(error = %e, "cannot load the event sequencer script yet: it is loaded on first use");
        }
        Ok(sequencer)
    }

    /// A sequencer on a fred client that the caller connects and configures.
    pub fn from_client(client: Client, settings: FredEventSequencerSettings) -> Self {
        Self { client, script: EventScript::new(INGEST_LUA), settings }
    }

    fn keys(&self, run: RunId) -> RunKeys {
        RunKeys::new(run, self.settings.partitions)
    }

    /// One call of the script, whose reply is an array.
    async fn evaluate(&self, keys: &RunKeys, args: Vec<Value>) -> Result<Vec<Value>, SequencerError> {
        let keys = keys.all().map(Key::from).to_vec();
        match self.script.run(&self.client, keys, args, self.settings.timeout).await? {
            Value::Array(values) => Ok(values),
            other => Err(SequencerError::Unexpected(anyhow!(
                "the sequencer script returned a {} instead of an array",
                other.kind()
            ))),
        }
    }

    /// One `append` call for the events of `request` at `indices` (distinct ids, in order).
    async fn append_call(
        &self,
        request: &AppendRequest,
        indices: &[usize],
    ) -> Result<Vec<Value>, SequencerError> {
        let (expected, new, terminal) = match request.status_change {
            Some(StatusChange { expected, new }) => (expected.as_str(), new.as_str(), new.is_terminal()),
            None => ("", "", false),
        };
        let mut args = Vec::with_capacity(10 + indices.len());
        args.extend([
            Value::from("append"),
            Value::from(request.tenant.to_string()),
            Value::from(request.run.to_string()),
            Value::from(expected),
            Value::from(new),
            Value::from(flag(terminal)),
            integer(self.settings.history_max_len),
            self.ttl_seconds(),
            integer(indices.len() as u64),
        ]);
        let mut events = String::with_capacity(2 + indices.len() * 320);
        events.push('[');
        for &i in indices {
            let event = &request.events[i];
            if events.len() > 1 {
                events.push(',');
            }
            events.push_str(&body(
                request.tenant,
                request.run,
                Some(event.producer_id.as_str()),
                &event.data,
                request.created_at,
            )?);
            args.push(Value::from(event.producer_id.as_str()));
        }
        events.push(']');
        args.push(Value::from(events));
        // Called within the ingest's span: the worker's span links to it.
        if let Some(traceparent) = trace_context::current_traceparent() {
            args.push(Value::from(traceparent));
        }
        self.evaluate(&self.keys(request.run), args).await
    }

    fn ttl_seconds(&self) -> Value {
        integer(self.settings.history_ttl.as_secs().max(1))
    }
}

#[async_trait]
impl EventSequencer for FredEventSequencer {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, SequencerError> {
        observe::redis!("sequencer.append", async {
            let (first_of, mut pending) = first_occurrences(&request);
            // Per event of the request: its seq and whether it is a duplicate, once known.
            let mut answers: Vec<Option<(u64, bool)>> = vec![None; request.events.len()];
            let mut run_status = None;
            for _ in 0..PARTIAL_ROUNDS {
                let reply = self.append_call(&request, &pending).await?;
                match tag(&reply)? {
                    "NEEDS_SEED" => return Ok(AppendOutcome::NeedsSeed),
                    "TERMINAL" => return Ok(AppendOutcome::Terminal(status_at(&reply, 1)?)),
                    "CONFLICT" => return Ok(AppendOutcome::Conflict(status_at(&reply, 1)?)),
                    "KNOWN" => {
                        let seqs = seqs_at(&reply, 2, pending.len())?;
                        for (&i, seq) in pending.iter().zip(seqs) {
                            answers[i] = Some((seq, true));
                        }
                        run_status = Some(status_at(&reply, 1)?);
                        break;
                    }
                    // Some ids were recorded before (a retry mixed with new events): those are
                    // duplicates, and the others are sent again on their own.
                    "PARTIAL" => {
                        let seqs = seqs_at(&reply, 1, pending.len())?;
                        let mut unknown = Vec::with_capacity(pending.len());
                        for (&i, seq) in pending.iter().zip(seqs) {
                            if seq == 0 { unknown.push(i) } else { answers[i] = Some((seq, true)) }
                        }
                        pending = unknown;
                    }
                    "OK" => {
                        let first = reply.get(2).and_then(seq_of).ok_or_else(|| unexpected_reply(&reply))?;
                        for (&i, seq) in pending.iter().zip(first..) {
                            answers[i] = Some((seq, false));
                        }
                        run_status = Some(status_at(&reply, 1)?);
                        break;
                    }
                    _ => return Err(unexpected_reply(&reply)),
                }
            }
            let run_status = run_status.ok_or_else(|| {
                SequencerError::Unexpected(anyhow!("a batch kept meeting concurrent retries of its ids"))
            })?;
            let events = request
                .events
                .into_iter()
                .zip(first_of)
                .enumerate()
                .map(|(i, (event, first))| {
                    let (seq, duplicate) = answers[first].ok_or_else(|| {
                        SequencerError::Unexpected(anyhow!("the sequencer left an event without a seq"))
                    })?;
                    // A later occurrence of an id in the same batch is a duplicate of the first.
                    Ok(AppendedEvent {
                        producer_id: event.producer_id,
                        seq,
                        duplicate: duplicate || first != i,
                    })
                })
                .collect::<Result<_, SequencerError>>()?;
            Ok(AppendOutcome::Appended { events, run_status })
        })
        .await
    }

    async fn append_server_event(
        &self,
        tenant: TenantId,
        run: RunId,
        event: ServerEvent,
        created_at: DateTime<Utc>,
    ) -> Result<ServerAppendOutcome, SequencerError> {
        observe::redis!("sequencer.append_server_event", async {
            let data = match event {
                ServerEvent::Created => Some(EventData::RunCreated),
                ServerEvent::Cancelled => Some(EventData::RunCancelled),
                ServerEvent::Expired => None,
            };
            let (kind, body) = match &data {
                Some(data) => {
                    (data.kind().as_str(), format!("[{}]", body(tenant, run, None, data, created_at)?))
                }
                None => (EXPIRED, String::new()),
            };
            let mut args = vec![
                Value::from("server"),
                Value::from(tenant.to_string()),
                Value::from(run.to_string()),
                Value::from(kind),
                Value::from(body),
                integer(self.settings.history_max_len),
                self.ttl_seconds(),
            ];
            if let Some(traceparent) = trace_context::current_traceparent() {
                args.push(Value::from(traceparent));
            }
            let reply = self.evaluate(&self.keys(run), args).await?;
            match tag(&reply)? {
                "NEEDS_SEED" => Ok(ServerAppendOutcome::NeedsSeed),
                "TERMINAL" => Ok(ServerAppendOutcome::Terminal(status_at(&reply, 1)?)),
                "CONFLICT" => Ok(ServerAppendOutcome::Conflict(status_at(&reply, 1)?)),
                "OK" => Ok(ServerAppendOutcome::Appended {
                    seq: reply.get(2).and_then(seq_of).ok_or_else(|| unexpected_reply(&reply))?,
                    run_status: status_at(&reply, 1)?,
                }),
                _ => Err(unexpected_reply(&reply)),
            }
        })
        .await
    }

    async fn seed(
        &self,
        run: RunId,
        stored_max_seq: u64,
        stored_status: RunStatus,
    ) -> Result<SeedOutcome, SequencerError> {
        observe::redis!("sequencer.seed", async {
            let args = vec![
                Value::from("seed"),
                integer(stored_max_seq),
                Value::from(stored_status.as_str()),
                Value::from(flag(stored_status.is_terminal())),
                self.ttl_seconds(),
            ];
            let reply = self.evaluate(&self.keys(run), args).await?;
            let seq = reply.get(1).and_then(seq_of).ok_or_else(|| unexpected_reply(&reply))?;
            match tag(&reply)? {
                "SEEDED" => Ok(SeedOutcome::Seeded { seq }),
                "KEPT" => Ok(SeedOutcome::Kept { seq }),
                _ => Err(unexpected_reply(&reply)),
            }
        })
        .await
    }

    async fn restore_ids(
        &self,
        run: RunId,
        ids: Vec<(sba_domain::events::ProducerId, u64)>,
    ) -> Result<(), SequencerError> {
        observe::redis!("sequencer.restore_ids", async {
            let keys = self.keys(run);
            // Bounded calls: one script call holds Redis for its whole run.
            for chunk in ids.chunks(RESTORE_CHUNK) {
                let mut args = Vec::with_capacity(1 + 2 * chunk.len());
                args.push(Value::from("ids"));
                for (id, seq) in chunk {
                    args.extend([Value::from(id.as_str()), integer(*seq)]);
                }
                self.evaluate(&keys, args).await?;
            }
            Ok(())
        })
        .await
    }

    async fn run_status(&self, run: RunId) -> Result<Option<RunStatus>, SequencerError> {
        observe::redis!("sequencer.run_status", async {
            let reply = self.evaluate(&self.keys(run), vec![Value::from("status")]).await?;
            if reply.is_empty() { Ok(None) } else { status_at(&reply, 0).map(Some) }
        })
        .await
    }

    async fn history_after(
        &self,
        tenant: TenantId,
        run: RunId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RunEvent>, SequencerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        observe::redis!("sequencer.history_after", async {
            let args = vec![Value::from("read"), integer(after_seq), integer(limit as u64)];
            let reply = self.evaluate(&self.keys(run), args).await?;
            let mut events = Vec::with_capacity(limit.min(1_024));
            for entry in reply.chunks(2) {
                let [first, text] = entry else { return Err(unexpected_reply(&reply)) };
                let first = seq_of(first).ok_or_else(|| unexpected_reply(&reply))?;
                let text = text.as_str().ok_or_else(|| unexpected_reply(&reply))?;
                let entry_events =
                    stored::decode_events(&text, first).context("an unreadable history entry")?;
                let wanted = entry_events
                    .into_iter()
                    .filter(|e| e.seq > after_seq && e.tenant_id == tenant && e.run_id == run);
                events.extend(wanted.take(limit - events.len()));
                if events.len() == limit {
                    break;
                }
            }
            Ok(events)
        })
        .await
    }
}

/// Per event of `request`, the index of the first event with its producer id; and the
/// indices of those first occurrences, in order (the events the script is sent).
fn first_occurrences(request: &AppendRequest) -> (Vec<usize>, Vec<usize>) {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(request.events.len());
    let mut first_of = Vec::with_capacity(request.events.len());
    let mut unique = Vec::with_capacity(request.events.len());
    for (i, event) in request.events.iter().enumerate() {
        let first = *seen.entry(event.producer_id.as_str()).or_insert(i);
        if first == i {
            unique.push(i);
        }
        first_of.push(first);
    }
    (first_of, unique)
}

/// `n` seqs from `reply[from..]`.
fn seqs_at(reply: &[Value], from: usize, n: usize) -> Result<Vec<u64>, SequencerError> {
    let values =
        reply.get(from..).filter(|values| values.len() == n).ok_or_else(|| unexpected_reply(reply))?;
    values.iter().map(|value| seq_of(value).ok_or_else(|| unexpected_reply(reply))).collect()
}

const fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

fn tag(reply: &[Value]) -> Result<&str, SequencerError> {
    match reply.first() {
        Some(Value::String(s)) => Ok(s),
        _ => Err(unexpected_reply(reply)),
    }
}

fn status_at(reply: &[Value], index: usize) -> Result<RunStatus, SequencerError> {
    reply
        .get(index)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| unexpected_reply(reply))
}

fn seq_of(value: &Value) -> Option<u64> {
    match value {
        Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

fn unexpected_reply(reply: &[Value]) -> SequencerError {
    SequencerError::Unexpected(script::unexpected_reply("sequencer", reply))
}

impl From<ScriptError> for SequencerError {
    fn from(error: ScriptError) -> Self {
        match error {
            ScriptError::Unavailable(e) => Self::Unavailable(e),
            ScriptError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use fred::types::Builder;
    use fred::types::config::Config;

    use super::*;

    #[test]
    fn debug_output_hides_the_connection() {
        let client = Builder::from_config(Config::from_url("redis://user:hunter2@127.0.0.1:6379").unwrap())
            .build()
            .unwrap();
        let shown =
            format!("{:?}", FredEventSequencer::from_client(client, FredEventSequencerSettings::default()));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
