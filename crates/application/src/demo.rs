//! The built-in demo agent `echo` (development): it answers a run of agent `echo` by
//! streaming the input's text back, through the same ingest path as a real agent runtime
//! with an `agent` principal of the run's tenant.
//!
//! What it reports, in order ([`script`]): `run.started`; a `message_creation` step with one
//! `step.delta` per word (paced); a `tool_calls` step with one `word_count` call;
//! `usage.reported`; `run.completed` with the text. A cancelled run is noticed at the next
//! batch (the ingest answers that the run has ended) and the agent stops there.

use std::sync::Arc;
use std::time::Duration;

use sba_domain::events::EventKind;
use sba_domain::{AgentRun, Principal, Role, RunId, RunStatus, UserId};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument as _;

use crate::RequestContext;
use crate::events::{IngestError, IngestService, RawEvent};

/// The agent name whose runs the demo agent answers.
pub const ECHO_AGENT: &str = "echo";

/// The `user_id` of the demo agent's principal (audit entries show it as the actor).
pub const ECHO_USER: &str = "demo-agent:echo";

/// Words streamed per second unless configured.
pub const DEFAULT_WORDS_PER_SECOND: u32 = 20;

/// Demo runs answered at once unless configured.
pub const DEFAULT_MAX_RUNS: usize = 64;

/// The error code of a run refused because [`EchoAgent`] already answers its maximum of runs.
pub const BUSY_CODE: &str = "demo_agent_busy";

/// The error code of a run the demo agent could not finish because its events were refused.
pub const FAILED_CODE: &str = "demo_agent_failed";

/// The most words echoed; the rest of a longer text is left out.
pub const MAX_WORDS: usize = 2_000;

/// The most characters echoed (a text without spaces is one word, whatever its length).
pub const MAX_TEXT_CHARS: usize = 16_000;

/// The most characters of the text passed as the tool call's argument.
const MAX_ARGUMENT_CHARS: usize = 200;

/// The members of an object input that hold its text, by preference.
const TEXT_MEMBERS: [&str; 4] = ["text", "message", "question", "prompt"];

/// The model named in the usage report.
const MODEL: &str = "echo-1";

const MESSAGE_STEP: &str = "msg-1";
const TOOL_STEP: &str = "tools-1";
const TOOL_CALL: &str = "call-1";

/// The first wait before a batch refused as unavailable is sent again; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one batch is retried before the agent gives up on its run (which then ends when
/// the worker expires it).
const GIVE_UP_AFTER: Duration = Duration::from_mins(1);

/// The demo agent: [`EchoAgent::start`] answers one run in a task of its own.
#[derive(Debug, Clone)]
pub struct EchoAgent {
    ingest: IngestService,
    /// The time between two `step.delta` events.
    period: Duration,
    /// One permit per run being answered.
    slots: Arc<Semaphore>,
}

impl EchoAgent {
    /// An agent reporting through `ingest`, streaming `words_per_second` words (at least 1)
    /// and answering at most `max_runs` runs at once (at least 1).
    pub fn new(ingest: IngestService, words_per_second: u32, max_runs: usize) -> Self {
        Self {
            ingest,
            period: Duration::from_secs(1) / words_per_second.max(1),
            slots: Arc::new(Semaphore::new(max_runs.max(1))),
        }
    }

    /// Answers `run` (a run of agent [`ECHO_AGENT`], just created) in a spawned task, and
    /// returns at once. When the agent already answers its maximum of runs, the run fails
    /// with error code [`BUSY_CODE`] instead.
    pub fn start(&self, run: &AgentRun) {
        let Some(reporter) = Reporter::for_run(self.ingest.clone(), run) else { return };
        let period = self.period;
        let span = tracing::info_span!("echo_agent", run_id = %run.id);
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                let text = text_of(&run.input);
                tokio::spawn(answer(reporter, text, period, permit).instrument(span));
            }
            Err(_) => {
                tokio::spawn(refuse_busy(reporter).instrument(span));
            }
        }
    }
}

/// Plays the script of `text` for the run, holding `_permit` until it ends.
async fn answer(reporter: Reporter, text: String, period: Duration, _permit: OwnedSemaphorePermit) {
    tracing::info!("the demo agent starts the run");
    match reporter.play(script(&text), period).await {
        Ok(()) => tracing::info!("the demo agent completed the run"),
        Err(Stop::Ended(status)) => tracing::info!(%status, "the run has ended; the demo agent stops"),
        Err(Stop::GaveUp(error)) => tracing::error!(
            error = format!("{error:#}"),
            "the event store stayed unavailable; the demo agent gives up the run"
        ),
        Err(Stop::Refused(error)) => {
            tracing::error!(error = format!("{error:#}"), "the demo agent's events were refused");
            reporter.fail(FAILED_CODE, "The demo agent could not report its events.").await;
        }
    }
}

/// Fails the run at once: the agent already answers its maximum of runs.
async fn refuse_busy(reporter: Reporter) {
    tracing::info!("the demo agent is busy; the run fails");
    reporter.fail(BUSY_CODE, "The demo agent is answering too many runs; try again later.").await;
}

/// Why a run's script stopped before its end.
#[derive(Debug)]
enum Stop {
    /// The run has ended (cancelled, expired or failed) in this status.
    Ended(RunStatus),
    /// The event store stayed unavailable for [`GIVE_UP_AFTER`].
    GaveUp(IngestError),
    /// A batch was refused for a reason retrying does not change.
    Refused(IngestError),
}

/// Sends one run's events as its agent.
struct Reporter {
    ingest: IngestService,
    ctx: RequestContext,
    run: RunId,
}

impl Reporter {
    /// A reporter acting as the demo agent of `run`'s tenant.
    fn for_run(ingest: IngestService, run: &AgentRun) -> Option<Self> {
        let user = match UserId::parse(ECHO_USER) {
            Ok(user) => user,
            Err(error) => {
                tracing::error!(%error, "the demo agent's user id is invalid");
                return None;
            }
        };
        let ctx = RequestContext {
            principal: Principal { tenant_id: run.tenant_id, user_id: user, role: Role::Agent },
            ip: None,
            request_id: format!("demo-{}", run.id),
            client_request_id: None,
            token: None,
        };
        Some(Self { ingest, ctx, run: run.id })
    }

    /// Sends `events` with producer ids `echo-1`, `echo-2`, ... (the same for a run every
    /// time, so a resent batch is answered as duplicates): each `step.delta` in a batch of
    /// its own, one `period` after the previous one, and the events between deltas together.
    async fn play(&self, events: Vec<(EventKind, Value)>, period: Duration) -> Result<(), Stop> {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pending = Vec::new();
        for (index, (kind, data)) in events.into_iter().enumerate() {
            let event = RawEvent { id: format!("echo-{}", index + 1), kind: kind.as_str().to_owned(), data };
            if kind == EventKind::StepDelta {
                if !pending.is_empty() {
                    self.send(std::mem::take(&mut pending)).await?;
                }
                ticks.tick().await;
                self.send(vec![event]).await?;
            } else {
                pending.push(event);
            }
        }
        if pending.is_empty() { Ok(()) } else { self.send(pending).await }
    }

    /// Fails the run with `code`, unless it has ended already; a failure is only logged.
    async fn fail(&self, code: &str, message: &str) {
        let failed = RawEvent {
            id: "echo-failed".to_owned(),
            kind: EventKind::RunFailed.as_str().to_owned(),
            data: json!({ "error": { "code": code, "message": message } }),
        };
        match self.send(vec![failed]).await {
            Ok(()) | Err(Stop::Ended(_)) => {}
            Err(Stop::GaveUp(error) | Stop::Refused(error)) => {
                tracing::error!(error = format!("{error:#}"), "the demo agent could not fail the run");
            }
        }
    }

    /// Sends `batch`, again after a growing pause while the event store is unavailable.
    async fn send(&self, batch: Vec<RawEvent>) -> Result<(), Stop> {
        let first_try = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.ingest.ingest(&self.ctx, self.run, batch.clone()).await {
                Ok(receipt) => {
                    for (event, appended) in batch.iter().zip(&receipt.events) {
                        tracing::debug!(kind = %event.kind, id = %event.id, seq = appended.seq, "demo event accepted");
                    }
                    return Ok(());
                }
                Err(IngestError::RunTerminal(status)) => return Err(Stop::Ended(status)),
                Err(error @ (IngestError::Unavailable(_) | IngestError::Unexpected(_))) => {
                    if first_try.elapsed() + backoff > GIVE_UP_AFTER {
                        return Err(Stop::GaveUp(error));
                    }
                    tracing::warn!(
                        error = format!("{error:#}"),
                        retry_in_ms = backoff.as_millis(),
                        "a demo batch was not accepted; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => return Err(Stop::Refused(error)),
            }
        }
    }
}

/// The text the demo agent echoes for a run's input: the input itself when it is a JSON
/// string; else its `text`, `message`, `question` or `prompt` member (the first that is a
/// string); else the input as JSON.
pub fn text_of(input: &Value) -> String {
    match input {
        Value::String(text) => text.clone(),
        Value::Object(members) => TEXT_MEMBERS
            .iter()
            .find_map(|name| members.get(*name).and_then(Value::as_str))
            .map_or_else(|| input.to_string(), str::to_owned),
        other => other.to_string(),
    }
}

/// The events the demo agent reports for `text` (cut to [`MAX_TEXT_CHARS`] characters and
/// [`MAX_WORDS`] words), as kinds and data: the `step.delta` texts concatenate to the
/// (cut) text, which is also the run's output.
pub fn script(text: &str) -> Vec<(EventKind, Value)> {
    let words = words(text);
    let text: String = words.concat();
    let word_count = text.split_whitespace().count();
    let argument: String = text.chars().take(MAX_ARGUMENT_CHARS).collect();
    let mut events = vec![
        (EventKind::RunStarted, json!({})),
        (EventKind::StepCreated, json!({ "step_id": MESSAGE_STEP, "type": "message_creation" })),
    ];
    events.extend(
        words.iter().map(|word| (EventKind::StepDelta, json!({ "step_id": MESSAGE_STEP, "text": word }))),
    );
    events.extend([
        (EventKind::StepCompleted, json!({ "step_id": MESSAGE_STEP })),
        (EventKind::StepCreated, json!({ "step_id": TOOL_STEP, "type": "tool_calls" })),
        (
            EventKind::ToolCallStarted,
            json!({
                "tool_call_id": TOOL_CALL,
                "step_id": TOOL_STEP,
                "name": "word_count",
                "arguments": { "text": argument },
            }),
        ),
        (
            EventKind::ToolCallCompleted,
            json!({ "tool_call_id": TOOL_CALL, "output": { "words": word_count }, "status": "completed" }),
        ),
        (EventKind::StepCompleted, json!({ "step_id": TOOL_STEP })),
        (
            EventKind::UsageReported,
            json!({ "model": MODEL, "input_tokens": word_count, "output_tokens": word_count, "cost_micros": 0 }),
        ),
        (EventKind::RunCompleted, json!({ "output": { "text": text } })),
    ]);
    events
}

/// The first [`MAX_WORDS`] words of `text` (itself cut to [`MAX_TEXT_CHARS`] characters),
/// each with the whitespace after it and the first also with any before it, so that they
/// concatenate back to the (cut) text.
fn words(text: &str) -> Vec<&str> {
    let text = text.char_indices().nth(MAX_TEXT_CHARS).map_or(text, |(end, _)| &text[..end]);
    let mut words = Vec::new();
    let mut start = 0;
    let mut word_seen = false;
    let mut after_space = false;
    for (index, c) in text.char_indices() {
        if c.is_whitespace() {
            after_space = true;
            continue;
        }
        if after_space && word_seen {
            words.push(&text[start..index]);
            if words.len() == MAX_WORDS {
                return words;
            }
            start = index;
        }
        word_seen = true;
        after_space = false;
    }
    if start < text.len() {
        words.push(&text[start..]);
    }
    words
}

#[cfg(test)]
mod tests;
