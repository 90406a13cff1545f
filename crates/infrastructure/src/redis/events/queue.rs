//! `FredEventQueue`: the [`EventQueue`] of ADR 0017 on Redis. Every step on a partition is
//! one `EVALSHA` of `queue.lua` on the partition's keys (one hash tag, one cluster slot):
//! the lease is checked and renewed in the same step that claims and reads entries.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::clients::Client;
use fred::types::{Key, Value};
use sba_application::ports::{DeadLetter, EventQueue, QueueError, QueuedEntry};
use sba_domain::{RunId, TenantId};
use secrecy::SecretString;
use uuid::Uuid;

use super::keys::{PERSISTERS, dead_letter_key, lease_key, queue_key};
use super::script::{self, EventScript, ScriptError, integer};
use super::stored::decode_events;
use crate::observe;
use crate::redis::connection::{self, ConnectionOptions};
use crate::trace_context::TRACEPARENT;

const QUEUE_LUA: &str = include_str!("queue.lua");

/// The dead-letter reason of an entry that cannot be decoded.
pub const UNDECODABLE: &str = "the queue entry cannot be decoded";

/// How one consumer leases partitions and takes entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FredEventQueueSettings {
    /// P: must be the sequencer's. Default: 16.
    pub partitions: u16,
    /// The most partitions this consumer leases at once; with several workers, P divided
    /// by their number (rounded up) spreads the partitions. Default: 16 (all it can get).
    pub max_partitions: u16,
    /// This consumer's name, unique among live consumers. Default: `worker-<UUIDv7>`.
    pub consumer: String,
    /// The consumer group. Default: `persisters`; another group keeps its own leases and
    /// dead letters (`…:lease:<group>`, `…:dl:<group>`).
    pub group: String,
    /// A lease not renewed for this long lapses and another consumer takes the partition.
    /// Default: 10 s.
    pub lease_ttl: Duration,
    /// An entry delivered and not acknowledged for this long is claimed again (by whoever
    /// leases its partition then). Default: 30 s.
    pub claim_idle: Duration,
    /// The bound on one step on one partition. Default: 1 s.
    pub timeout: Duration,
    /// How long [`FredEventQueue::connect`] waits for the first connection. Default: 1 s.
    pub connect_timeout: Duration,
}

impl Default for FredEventQueueSettings {
    fn default() -> Self {
        Self {
            partitions: 16,
            max_partitions: 16,
            consumer: format!("worker-{}", Uuid::now_v7()),
            group: PERSISTERS.to_owned(),
            lease_ttl: Duration::from_secs(10),
            claim_idle: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// The [`EventQueue`] on Redis, for one consumer.
pub struct FredEventQueue {
    client: Client,
    script: EventScript,
    settings: FredEventQueueSettings,
    /// The partitions whose lease this consumer held at its last step on them.
    held: Mutex<BTreeSet<u16>>,
    /// Where the next `next_batch` starts, so no partition always comes last.
    start: AtomicUsize,
}

impl fmt::Debug for FredEventQueue {
    // The client's configuration holds the password of the URL: it is not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FredEventQueue").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl FredEventQueue {
    /// Connects to the Redis at `url` (never logged). A Redis that is down at startup is not
    /// an error: calls answer [`QueueError::Unavailable`] until it connects.
    ///
    /// # Errors
    /// When `url` is not a usable Redis URL.
    pub async fn connect(url: &SecretString, settings: FredEventQueueSettings) -> anyhow::Result<Self> {
        let options = ConnectionOptions {
            command_timeout: settings.timeout,
            connect_timeout: settings.connect_timeout,
            ..ConnectionOptions::default()
        };
        let client = connection::connected_client(url, &options, "the event queue is unavailable").await?;
        Ok(Self::from_client(client, settings))
    }

    /// A queue consumer on a fred client that the caller connects and configures.
    pub fn from_client(client: Client, settings: FredEventQueueSettings) -> Self {
        Self {
            client,
            script: EventScript::new(QUEUE_LUA),
            settings,
            held: Mutex::new(BTreeSet::new()),
            start: AtomicUsize::new(0),
        }
    }

    /// The partitions this consumer held a lease on at its last step on each.
    pub fn leased_partitions(&self) -> Vec<u16> {
        self.held_set().iter().copied().collect()
    }

    fn held_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<u16>> {
        // A panic elsewhere cannot leave the set half-changed: take it as it is.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn keys(&self, p: u16) -> Vec<Key> {
        vec![
            Key::from(queue_key(p)),
            Key::from(lease_key(p, &self.settings.group)),
            Key::from(dead_letter_key(p, &self.settings.group)),
        ]
    }

    /// Moves an entry that cannot be decoded to the dead letters at once: no retry decodes
    /// it, and left pending it would fail every later read. The reason names no event data.
    async fn set_aside(
        &self,
        p: u16,
        entry_id: &str,
        deliveries: u64,
        error: &anyhow::Error,
    ) -> Result<(), QueueError> {
        tracing::error!(
            partition = p,
            entry_id,
            error = %error,
            "an event queue entry cannot be decoded: it goes to the dead letters"
        );
        let args = vec![
            Value::from("dead"),
            Value::from(self.settings.group.as_str()),
            Value::from(entry_id),
            Value::from(UNDECODABLE),
            integer(deliveries),
        ];
        let reply = array(self.evaluate(p, args).await?)?;
        match reply.first().and_then(Value::as_str).as_deref() {
            Some("OK" | "GONE") => Ok(()),
            _ => Err(unexpected_reply(&reply)),
        }
    }

    /// One call of the script on partition `p`'s keys.
    async fn evaluate(&self, p: u16, args: Vec<Value>) -> Result<Value, QueueError> {
        Ok(self.script.run(&self.client, self.keys(p), args, self.settings.timeout).await?)
    }

    /// A reply that is an array starting with `OK`: the values after it.
    async fn evaluate_ok(&self, p: u16, args: Vec<Value>) -> Result<Vec<Value>, QueueError> {
        let reply = array(self.evaluate(p, args).await?)?;
        match reply.first().and_then(Value::as_str).as_deref() {
            Some("OK") => Ok(reply.into_iter().skip(1).collect()),
            _ => Err(unexpected_reply(&reply)),
        }
    }

    fn millis(duration: Duration) -> Value {
        integer(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1))
    }
}

#[async_trait]
impl EventQueue for FredEventQueue {
    async fn next_batch(&self, max_entries: usize) -> Result<Vec<QueuedEntry>, QueueError> {
        observe::redis!("queue.next_batch", async {
            let partitions = self.settings.partitions.max(1);
            let start = self.start.fetch_add(1, Ordering::Relaxed) % usize::from(partitions);
            let mut entries = Vec::new();
            for i in 0..partitions {
                let p = u16::try_from((start + usize::from(i)) % usize::from(partitions)).unwrap_or(0);
                let (held, full) = {
                    let set = self.held_set();
                    (set.contains(&p), set.len() >= usize::from(self.settings.max_partitions))
                };
                if !held && full {
                    continue;
                }
                let count = max_entries.saturating_sub(entries.len());
                let args = vec![
                    Value::from("fetch"),
                    Value::from(self.settings.group.as_str()),
                    Value::from(self.settings.consumer.as_str()),
                    Self::millis(self.settings.lease_ttl),
                    Self::millis(self.settings.claim_idle),
                    integer(count as u64),
                ];
                let reply = array(self.evaluate(p, args).await?)?;
                match reply.first().and_then(Value::as_str).as_deref() {
                    Some("LEASED") => {
                        if held {
                            tracing::warn!(partition = p, "lost the lease of an event partition");
                        }
                        self.held_set().remove(&p);
                    }
                    Some("OK") => {
                        self.held_set().insert(p);
                        for value in reply.into_iter().skip(1) {
                            let (entry_id, deliveries, fields) = raw_entry(value)?;
                            match decode(p, &entry_id, deliveries, &fields) {
                                Ok(entry) => entries.push(entry),
                                Err(error) => self.set_aside(p, &entry_id, deliveries, &error).await?,
                            }
                        }
                    }
                    _ => return Err(unexpected_reply(&reply)),
                }
            }
            Ok(entries)
        })
        .await
    }

    async fn ack(&self, entries: &[QueuedEntry]) -> Result<(), QueueError> {
        observe::redis!("queue.ack", async {
            let partitions: BTreeSet<u16> = entries.iter().map(|e| e.partition).collect();
            for p in partitions {
                let mut args = vec![Value::from("ack"), Value::from(self.settings.group.as_str())];
                args.extend(
                    entries.iter().filter(|e| e.partition == p).map(|e| Value::from(e.entry_id.as_str())),
                );
                self.evaluate_ok(p, args).await?;
            }
            Ok(())
        })
        .await
    }

    async fn dead_letter(&self, entry: &QueuedEntry, reason: &str) -> Result<(), QueueError> {
        observe::redis!("queue.dead_letter", async {
            let args = vec![
                Value::from("dead"),
                Value::from(self.settings.group.as_str()),
                Value::from(entry.entry_id.as_str()),
                Value::from(reason),
                integer(entry.deliveries),
            ];
            let reply = array(self.evaluate(entry.partition, args).await?)?;
            match reply.first().and_then(Value::as_str).as_deref() {
                Some("OK") => {
                    tracing::warn!(
                        partition = entry.partition,
                        run_id = %entry.run,
                        first_seq = entry.events.first().map(|e| e.seq),
                        last_seq = entry.events.last().map(|e| e.seq),
                        attempts = entry.deliveries,
                        reason,
                        "an event queue entry went to the dead letters"
                    );
                    Ok(())
                }
                Some("GONE") => Err(QueueError::Unexpected(anyhow!(
                    "queue entry {} of partition {} is no longer in its queue",
                    entry.entry_id,
                    entry.partition
                ))),
                _ => Err(unexpected_reply(&reply)),
            }
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        observe::redis!("queue.dead_letters", async {
            let mut letters = Vec::new();
            for p in 0..self.settings.partitions {
                let count = limit.saturating_sub(letters.len());
                if count == 0 {
                    break;
                }
                let reply = array(self.evaluate(p, vec![Value::from("list"), integer(count as u64)]).await?)?;
                for value in reply {
                    letters.push(dead_letter(p, value)?);
                }
            }
            Ok(letters)
        })
        .await
    }

    async fn replay_dead_letters(&self, run: Option<RunId>) -> Result<u64, QueueError> {
        observe::redis!("queue.replay_dead_letters", async {
            let run = run.map(|r| r.to_string()).unwrap_or_default();
            let mut replayed = 0;
            for p in 0..self.settings.partitions {
                let reply =
                    self.evaluate_ok(p, vec![Value::from("replay"), Value::from(run.as_str())]).await?;
                replayed += reply.first().and_then(Value::as_u64).ok_or_else(|| unexpected_reply(&reply))?;
            }
            Ok(replayed)
        })
        .await
    }

    async fn release(&self) -> Result<(), QueueError> {
        observe::redis!("queue.release", async {
            let held: Vec<u16> = self.leased_partitions();
            for p in held {
                self.evaluate_ok(
                    p,
                    vec![Value::from("release"), Value::from(self.settings.consumer.as_str())],
                )
                .await?;
                self.held_set().remove(&p);
            }
            Ok(())
        })
        .await
    }
}

/// `{id, deliveries, {field, value, …}}` of `fetch`.
fn raw_entry(value: Value) -> Result<(String, u64, Fields), QueueError> {
    let parts = array(value)?;
    let [id, deliveries, fields] = <[Value; 3]>::try_from(parts)
        .map_err(|parts| QueueError::Unexpected(anyhow!("a queue entry of {} values", parts.len())))?;
    let entry_id =
        id.as_str().ok_or_else(|| QueueError::Unexpected(anyhow!("a queue entry without an id")))?;
    Ok((entry_id.into_owned(), deliveries.as_u64().unwrap_or(1), Fields::new(fields)?))
}

/// The entry its fields describe, its events decoded and checked.
fn decode(partition: u16, entry_id: &str, deliveries: u64, fields: &Fields) -> anyhow::Result<QueuedEntry> {
    let context = || format!("queue entry {entry_id} of partition {partition}");
    let tenant: TenantId = fields.parse("tenant").with_context(context)?;
    let run: RunId = fields.parse("run").with_context(context)?;
    let (first, last): (u64, u64) =
        (fields.parse("first_seq").with_context(context)?, fields.parse("last_seq").with_context(context)?);
    let events = decode_events(fields.get("events").with_context(context)?, first).with_context(context)?;
    if events.last().map(|e| e.seq) != Some(last) {
        return Err(anyhow!("{}: seqs {first}..={last} do not match its {} events", context(), events.len()));
    }
    if events.iter().any(|e| e.run_id != run || e.tenant_id != tenant) {
        return Err(anyhow!("{}: an event of another run or tenant", context()));
    }
    let queued_at = entry_time(entry_id).with_context(context)?;
    // Written by the ingest that queued the batch when it was traced (`ingest.lua`).
    let traceparent = fields.get(TRACEPARENT).ok().map(str::to_owned);
    Ok(QueuedEntry {
        partition,
        entry_id: entry_id.to_owned(),
        queued_at,
        tenant,
        run,
        events,
        deliveries,
        traceparent,
    })
}

/// The time a stream entry was added: its id is `<unix milliseconds>-<sequence>`.
fn entry_time(entry_id: &str) -> anyhow::Result<DateTime<Utc>> {
    entry_id
        .split_once('-')
        .and_then(|(millis, _)| millis.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| anyhow!("the entry id `{entry_id}` is not `<unix ms>-<n>`"))
}

/// `{id, {field, value, …}}` of `list`.
fn dead_letter(partition: u16, value: Value) -> Result<DeadLetter, QueueError> {
    let parts = array(value)?;
    let [id, fields] = <[Value; 2]>::try_from(parts)
        .map_err(|parts| QueueError::Unexpected(anyhow!("a dead letter of {} values", parts.len())))?;
    let dead_letter_id = id
        .as_str()
        .ok_or_else(|| QueueError::Unexpected(anyhow!("a dead letter without an id")))?
        .into_owned();
    let fields = Fields::new(fields)?;
    let context = || format!("dead letter {dead_letter_id} of partition {partition}");
    Ok(DeadLetter {
        partition,
        entry_id: fields.get("queue_id").with_context(context)?.to_owned(),
        tenant: fields.parse("tenant").with_context(context)?,
        run: fields.parse("run").with_context(context)?,
        first_seq: fields.parse("first_seq").with_context(context)?,
        last_seq: fields.parse("last_seq").with_context(context)?,
        reason: fields.get("reason").with_context(context)?.to_owned(),
        attempts: fields.parse("attempts").with_context(context)?,
        dead_letter_id,
    })
}

/// The field/value pairs of a stream entry.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn new(value: Value) -> Result<Self, QueueError> {
        let values = array(value)?;
        let mut pairs = Vec::with_capacity(values.len() / 2);
        for pair in values.chunks_exact(2) {
            match (pair[0].as_str(), pair[1].as_str()) {
                (Some(name), Some(value)) => pairs.push((name.into_owned(), value.into_owned())),
                _ => {
                    return Err(QueueError::Unexpected(anyhow!(
                        "a stream entry with a field that is not text"
                    )));
                }
            }
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> anyhow::Result<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| anyhow!("no field `{name}`"))
    }

    fn parse<T: std::str::FromStr>(&self, name: &str) -> anyhow::Result<T> {
        self.get(name)?.parse().map_err(|_| anyhow!("field `{name}` does not parse"))
    }
}

fn array(value: Value) -> Result<Vec<Value>, QueueError> {
    match value {
        Value::Array(values) => Ok(values),
        Value::Null => Ok(Vec::new()),
        other => Err(QueueError::Unexpected(anyhow!(
            "the queue script returned a {} instead of an array",
            other.kind()
        ))),
    }
}

fn unexpected_reply(reply: &[Value]) -> QueueError {
    QueueError::Unexpected(script::unexpected_reply("queue", reply))
}

impl From<ScriptError> for QueueError {
    fn from(error: ScriptError) -> Self {
        match error {
            ScriptError::Unavailable(e) => Self::Unavailable(e),
            ScriptError::Unexpected(e) => Self::Unexpected(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_dated_by_the_milliseconds_of_its_stream_id() {
        let at = entry_time("1767225600123-4").unwrap();
        assert_eq!(at, DateTime::parse_from_rfc3339("2026-01-01T00:00:00.123Z").unwrap());
        for bad in ["", "abc-1", "1767225600123", "-1"] {
            assert!(entry_time(bad).is_err(), "{bad}");
        }
    }
}
