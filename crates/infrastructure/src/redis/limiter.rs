//! `FredRateLimiter`: the distributed GCRA of ADR 0006, one atomic Lua script per decision
//! on the Redis server clock, bounded by a short timeout so a slow or absent Redis turns into
//! [`RateLimitError::Unavailable`] instead of a waiting request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike as _, LuaInterface as _};
use fred::types::scripts::Script;
use fred::types::{ConnectHandle, Key, Value};
use sba_application::ports::{RateLimitError, RateLimiter};
use sba_domain::ratelimit::{Decision, Quota};
use secrecy::SecretString;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::connection::{self, ConnectionOptions};
use crate::observe;

const GCRA_LUA: &str = include_str!("gcra.lua");

/// The namespace of rate-limit keys in Redis (docs/architecture.md, "Redis key schema");
/// the key bodies come from `sba_domain::ratelimit` (ADR 0012).
const KEY_PREFIX: &str = "sba:rl:";

/// How the limiter talks to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FredRateLimiterSettings {
    /// The bound on one decision, reloading the script included. Default: 50 ms
    /// (`SBA_RATE_LIMIT__REDIS_TIMEOUT_MS`).
    pub timeout: Duration,
    /// How long [`FredRateLimiter::connect`] waits for the first connection before it returns
    /// anyway (and the bound on opening one TCP connection). Default: 1 s.
    pub connect_timeout: Duration,
}

impl Default for FredRateLimiterSettings {
    fn default() -> Self {
        Self { timeout: Duration::from_millis(50), connect_timeout: Duration::from_secs(1) }
    }
}

/// The [`RateLimiter`] on Redis: every decision is made by a script that mirrors
/// `sba_domain::ratelimit::Gcra::decide` on the Redis clock, so all nodes sharing the Redis
/// share every limit exactly.
///
/// Up to [`MAX_IN_FLIGHT`] calls are on their way to Redis at once; a decision that finds a
/// free slot is sent at once, by its caller, as one `EVALSHA`. Decisions that find every slot
/// taken are coalesced (ADR 0006): the next free slot sends up to [`MAX_BATCH`] of them in one
/// `EVALSHA`, each decided exactly as alone, atomically. A decision never waits for a batch
/// to fill, and costs one round trip plus, under saturation, the wait for a slot.
///
/// A limiter made by [`Self::connect`] gives every thread that decides its own connection,
/// driven by that thread's runtime: on actix's per-thread workers a decision then never
/// crosses threads (ADR 0006, "one connection per worker"). One made by
/// [`Self::from_client`] sends everything through the given client.
#[derive(Clone)]
pub struct FredRateLimiter {
    shared: Arc<Shared>,
}

struct Shared {
    /// Tells this limiter's per-thread connections from other limiters' on the same thread.
    id: u64,
    /// The client given or connected first: the one connection of `from_client`, and the
    /// configuration of per-thread connections.
    home: Arc<Inner>,
    per_thread: bool,
    settings: FredRateLimiterSettings,
}

/// One connection and its in-flight slots and coalescing queue.
struct Inner {
    client: Client,
    script: Script,
    timeout: Duration,
    /// Calls in flight to Redis, direct or batched.
    slots: Arc<Semaphore>,
    /// The dispatcher's queue, started on first use (it needs the runtime).
    queue: OnceLock<mpsc::Sender<Pending>>,
}

/// A per-thread connection of one limiter.
struct ThreadConnection {
    limiter_id: u64,
    limiter: Weak<Shared>,
    inner: Arc<Inner>,
    task: ConnectHandle,
}

thread_local! {
    static THREAD_CONNECTIONS: RefCell<Vec<ThreadConnection>> = const { RefCell::new(Vec::new()) };
}

static NEXT_LIMITER_ID: AtomicU64 = AtomicU64::new(1);

/// One decision waiting for its batch.
struct Pending {
    key: String,
    quota: Quota,
    cost: u32,
    reply: oneshot::Sender<Result<Decision, String>>,
}

/// Decisions per `EVALSHA`, at most.
pub const MAX_BATCH: usize = 64;
/// Calls on their way to Redis at once, at most; later decisions queue and are coalesced.
pub const MAX_IN_FLIGHT: usize = 1;
/// Decisions waiting, at most; beyond that a decision is refused as unavailable (overload).
const QUEUE_CAPACITY: usize = 16_384;

impl fmt::Debug for FredRateLimiter {
    // The client's configuration holds the password of the URL: only the timeout is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FredRateLimiter")
            .field("timeout", &self.shared.settings.timeout)
            .field("per_thread", &self.shared.per_thread)
            .finish_non_exhaustive()
    }
}

impl FredRateLimiter {
    /// Connects to the Redis at `url` (`redis://` or `rediss://`, never logged).
    ///
    /// A Redis that is down at startup is not an error: `connect` waits at most
    /// `settings.connect_timeout`, logs a warning and returns a limiter whose calls fail fast
    /// with [`RateLimitError::Unavailable`] (so the service starts and applies its fail mode)
    /// while the client keeps reconnecting in the background.
    ///
    /// # Errors
    /// When `url` is not a usable Redis URL.
    pub async fn connect(url: &SecretString, settings: FredRateLimiterSettings) -> anyhow::Result<Self> {
        // Per-thread connections are copies of this one (`clone_new`), options included.
        let options = ConnectionOptions {
            command_timeout: settings.timeout,
            connect_timeout: settings.connect_timeout,
            ..ConnectionOptions::default()
        };
        let client =
            connection::connected_client(url, &options, "rate-limit decisions are unavailable").await?;
        let limiter = Self::new(client, settings, true);
        if let Err(e) = limiter.shared.home.load_script().await {
            tracing::warn!(error = %e, "cannot load the rate-limit script yet: it is loaded on first use");
        }
        Ok(limiter)
    }

    /// A limiter on an existing fred client, which the caller connects and configures (see
    /// [`Self::connect`] for the settings that keep callers from waiting). Decisions are
    /// bounded by `settings.timeout` and fail at once while the client is disconnected; the
    /// script is loaded on first use.
    pub fn from_client(client: Client, settings: FredRateLimiterSettings) -> Self {
        Self::new(client, settings, false)
    }

    fn new(client: Client, settings: FredRateLimiterSettings, per_thread: bool) -> Self {
        Self {
            shared: Arc::new(Shared {
                id: NEXT_LIMITER_ID.fetch_add(1, Ordering::Relaxed),
                home: Arc::new(Inner::new(client, settings.timeout)),
                per_thread,
                settings,
            }),
        }
    }

    /// The connection this thread decides through: its own once connected; until then (a
    /// new thread's connection takes a moment) or while it reconnects, the home connection.
    /// `None` while neither is connected.
    fn connection(&self) -> Option<Arc<Inner>> {
        let local = self.thread_connection();
        if local.client.is_connected() {
            Some(local)
        } else if self.shared.home.client.is_connected() {
            Some(Arc::clone(&self.shared.home))
        } else {
            None
        }
    }

    fn thread_connection(&self) -> Arc<Inner> {
        if !self.shared.per_thread {
            return Arc::clone(&self.shared.home);
        }
        THREAD_CONNECTIONS.with_borrow_mut(|connections| {
            // Connections of dropped limiters, and ones whose runtime has ended (the task is
            // gone with it), are closed and forgotten.
            connections.retain(|c| {
                let keep = c.limiter.strong_count() > 0 && !c.task.is_finished();
                if !keep {
                    c.task.abort();
                }
                keep
            });
            if let Some(c) = connections.iter().find(|c| c.limiter_id == self.shared.id) {
                return Arc::clone(&c.inner);
            }
            let client = self.shared.home.client.clone_new();
            let task = client.connect();
            let inner = Arc::new(Inner::new(client, self.shared.settings.timeout));
            connections.push(ThreadConnection {
                limiter_id: self.shared.id,
                limiter: Arc::downgrade(&self.shared),
                inner: Arc::clone(&inner),
                task,
            });
            inner
        })
    }
}

/// Takes decisions off the queue and sends them in batches: a batch leaves as soon as an
/// in-flight slot is free, with everything that queued meanwhile. It holds its connection
/// weakly (the connection holds the queue), so it ends when the connection is dropped.
async fn dispatch(connection: Weak<Inner>, mut queue: mpsc::Receiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let Some(inner) = connection.upgrade() else { return };
        let Ok(slot) = Arc::clone(&inner.slots).acquire_owned().await else { return };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        // A caller that gave up (timeout) is not decided: it must not consume quota.
        batch.retain(|pending| !pending.reply.is_closed());
        tokio::spawn(async move {
            inner.decide_all(batch).await;
            drop(slot);
        });
    }
}

impl Inner {
    fn new(client: Client, timeout: Duration) -> Self {
        Self {
            client,
            script: Script::from_lua(GCRA_LUA),
            timeout,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            queue: OnceLock::new(),
        }
    }

    fn queue(self: &Arc<Self>) -> &mpsc::Sender<Pending> {
        self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
            tokio::spawn(dispatch(Arc::downgrade(self), receiver));
            sender
        })
    }

    async fn load_script(&self) -> Result<(), FredError> {
        tokio::time::timeout(self.timeout, self.client.script_load::<(), _>(GCRA_LUA))
            .await
            .unwrap_or_else(|_| Err(FredError::new(ErrorKind::Timeout, "SCRIPT LOAD timed out")))
    }

    /// Decides a batch and answers every caller; in a Redis Cluster, keys are grouped by
    /// hash slot, one `EVALSHA` per slot.
    async fn decide_all(&self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        if self.client.is_clustered() {
            let mut by_slot: HashMap<u16, Vec<Pending>> = HashMap::new();
            for pending in batch {
                by_slot.entry(Key::from(pending.key.as_str()).cluster_hash()).or_default().push(pending);
            }
            for group in by_slot.into_values() {
                self.decide_group(group).await;
            }
        } else {
            self.decide_group(batch).await;
        }
    }

    async fn decide_group(&self, group: Vec<Pending>) {
        let outcome = tokio::time::timeout(self.timeout, self.evaluate(&group))
            .await
            .unwrap_or_else(|_| Err(FredError::new(ErrorKind::Timeout, "no answer in time")));
        match outcome {
            Ok(reply) if reply.len() == group.len() * 4 => {
                for (pending, values) in group.into_iter().zip(reply.chunks_exact(4)) {
                    let _ = pending.reply.send(decision(values).map_err(|e| format!("{e:#}")));
                }
            }
            Ok(reply) => {
                let message =
                    format!("the rate-limit script returned {} values for {} keys", reply.len(), group.len());
                for pending in group {
                    let _ = pending.reply.send(Err(message.clone()));
                }
            }
            Err(error) => {
                let message = format!("{:?}: {}", error.kind(), error.details());
                for pending in group {
                    let _ = pending.reply.send(Err(message.clone()));
                }
            }
        }
    }

    /// One `EVALSHA` for the group; when Redis has lost the script (restart, `SCRIPT
    /// FLUSH`), it is loaded again and run once more.
    async fn evaluate(&self, group: &[Pending]) -> Result<Vec<i64>, FredError> {
        // fred would queue the command until it reconnects; the caller needs an answer now.
        // (`Options::fail_fast` would do this, but fred's `WithOptions` has no Lua interface.)
        if !self.client.is_connected() {
            return Err(FredError::new(ErrorKind::IO, "not connected to Redis"));
        }
        let keys = || group.iter().map(|p| Key::from(p.key.as_str())).collect::<Vec<Key>>();
        let args = || {
            let mut args = Vec::with_capacity(group.len() * 4);
            for pending in group {
                // Integers go out as RESP bulk strings, without a String each.
                args.extend([
                    integer(pending.quota.interval_us()),
                    integer(pending.quota.window_us()),
                    Value::from(pending.quota.limit()),
                    Value::from(pending.cost),
                ]);
            }
            args
        };
        match self.script.evalsha(&self.client, keys(), args()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                self.load_script().await?;
                self.script.evalsha(&self.client, keys(), args()).await
            }
            result => result,
        }
    }
}

#[async_trait]
impl RateLimiter for FredRateLimiter {
    async fn check(&self, key: &str, quota: Quota, cost: u32) -> Result<Decision, RateLimitError> {
        observe::redis!("limiter.check", async {
            let unavailable = |message: String| RateLimitError::Unavailable(anyhow!(message));
            // fred would queue the command until it reconnects; the caller needs an answer now.
            let Some(inner) = self.connection() else {
                return Err(unavailable("not connected to Redis".to_owned()));
            };
            let (reply, answer) = oneshot::channel();
            let pending = Pending { key: format!("{KEY_PREFIX}{key}"), quota, cost, reply };
            if let Ok(slot) = Arc::clone(&inner.slots).try_acquire_owned() {
                // A free slot: this task sends its own decision now.
                let outcome =
                    tokio::time::timeout(inner.timeout, inner.evaluate(std::slice::from_ref(&pending))).await;
                drop(slot);
                return match outcome {
                    Err(_) => Err(unavailable(format!(
                        "no rate-limit decision from Redis within {} ms",
                        inner.timeout.as_millis()
                    ))),
                    Ok(Err(error)) => Err(unavailable(format!("the rate-limit script failed: {error}"))),
                    Ok(Ok(reply)) => decision(&reply).map_err(RateLimitError::Unavailable),
                };
            }
            inner
                .queue()
                .try_send(pending)
                .map_err(|_| unavailable("too many rate-limit decisions are waiting".to_owned()))?;
            match tokio::time::timeout(inner.timeout, answer).await {
                Err(_) => Err(unavailable(format!(
                    "no rate-limit decision from Redis within {} ms",
                    inner.timeout.as_millis()
                ))),
                Ok(Err(_)) => Err(unavailable("the rate-limit dispatcher stopped".to_owned())),
                Ok(Ok(result)) => {
                    result.map_err(|e| unavailable(format!("the rate-limit script failed: {e}")))
                }
            }
        })
        .await
    }
}

/// A script argument; quotas are far below `i64::MAX` microseconds (checked by `Quota`).
fn integer(value: u64) -> Value {
    Value::from(i64::try_from(value).unwrap_or(i64::MAX))
}

/// Reads the script's `{allowed, remaining, retry_after_us, reset_us}`.
fn decision(reply: &[i64]) -> anyhow::Result<Decision> {
    let &[allowed, remaining, retry_after_us, reset_us] = reply else {
        return Err(anyhow!("the rate-limit script returned {} values instead of 4", reply.len()));
    };
    let reset_us = u64::try_from(reset_us).context("negative reset from the rate-limit script")?;
    Ok(if allowed == 1 {
        Decision::Allowed {
            remaining: u32::try_from(remaining)
                .context("remaining out of range from the rate-limit script")?,
            reset_us,
        }
    } else {
        Decision::Denied {
            retry_after_us: u64::try_from(retry_after_us)
                .context("negative retry-after from the rate-limit script")?,
            reset_us,
        }
    })
}

#[cfg(test)]
mod tests {
    use fred::types::Builder;
    use fred::types::config::Config;

    use super::*;

    #[test]
    fn script_replies_become_decisions() {
        assert_eq!(
            decision(&[1, 4, 0, 2_000_000]).unwrap(),
            Decision::Allowed { remaining: 4, reset_us: 2_000_000 }
        );
        assert_eq!(
            decision(&[0, 0, 500_000, 1_000_000]).unwrap(),
            Decision::Denied { retry_after_us: 500_000, reset_us: 1_000_000 }
        );
        assert!(decision(&[1, 2, 3]).is_err());
        assert!(decision(&[1, -1, 0, 0]).is_err());
    }

    #[test]
    fn debug_output_hides_the_connection() {
        let limiter = FredRateLimiter::from_client(
            Builder::from_config(Config::from_url("redis://user:hunter2@127.0.0.1:6379").unwrap())
                .build()
                .unwrap(),
            FredRateLimiterSettings::default(),
        );
        let shown = format!("{limiter:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
