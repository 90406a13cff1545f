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
mod tests {
    use std::sync::Mutex;

    use sba_domain::events::{IncomingEvent, ProducerId, status_after};
    use sba_domain::runs::NewRun;
    use sba_domain::{AgentName, Metadata, TenantId};
    use uuid::Uuid;

    use super::*;
    use crate::audit::Auditor;
    use crate::events::EventPipeline;
    use crate::ports::{
        AppendOutcome, AppendedEvent, Clock, MockAuditLog, MockEventBus, MockEventLog, MockEventSequencer,
        MockIdGenerator, MockRunRepository, RepositoryError, SequencerError,
    };
    use crate::testing::TestClock;

    fn kinds(events: &[(EventKind, Value)]) -> Vec<&'static str> {
        events.iter().map(|(kind, _)| kind.as_str()).collect()
    }

    fn deltas(events: &[(EventKind, Value)]) -> Vec<String> {
        events
            .iter()
            .filter(|(kind, _)| *kind == EventKind::StepDelta)
            .map(|(_, data)| data["text"].as_str().unwrap().to_owned())
            .collect()
    }

    fn output(events: &[(EventKind, Value)]) -> &Value {
        &events.last().unwrap().1["output"]["text"]
    }

    #[test]
    fn the_text_is_a_string_input_or_its_first_text_member_or_else_the_inputs_json() {
        assert_eq!(text_of(&json!("hello there")), "hello there");
        assert_eq!(text_of(&json!({"question": "why?", "message": "hi"})), "hi");
        assert_eq!(text_of(&json!({"text": "a", "prompt": "b"})), "a");
        assert_eq!(text_of(&json!({"prompt": "only this"})), "only this");
        assert_eq!(text_of(&json!({"text": 3, "question": "q"})), "q");
        assert_eq!(text_of(&json!({"other": 1})), r#"{"other":1}"#);
        assert_eq!(text_of(&json!([1, 2])), "[1,2]");
        assert_eq!(text_of(&Value::Null), "null");
    }

    #[test]
    fn the_script_streams_the_words_then_one_tool_call_usage_and_the_text_as_output() {
        let events = script("Hello  brave\nworld ");
        assert_eq!(
            kinds(&events),
            [
                "run.started",
                "step.created",
                "step.delta",
                "step.delta",
                "step.delta",
                "step.completed",
                "step.created",
                "tool_call.started",
                "tool_call.completed",
                "step.completed",
                "usage.reported",
                "run.completed",
            ]
        );
        assert_eq!(deltas(&events), ["Hello  ", "brave\n", "world "]);
        assert_eq!(events[1].1, json!({"step_id": "msg-1", "type": "message_creation"}));
        assert_eq!(events[6].1, json!({"step_id": "tools-1", "type": "tool_calls"}));
        assert_eq!(
            events[7].1,
            json!({"tool_call_id": "call-1", "step_id": "tools-1", "name": "word_count",
                   "arguments": {"text": "Hello  brave\nworld "}})
        );
        assert_eq!(
            events[8].1,
            json!({"tool_call_id": "call-1", "output": {"words": 3}, "status": "completed"})
        );
        assert_eq!(
            events[10].1,
            json!({"model": "echo-1", "input_tokens": 3, "output_tokens": 3, "cost_micros": 0})
        );
        assert_eq!(events[11].1, json!({"output": {"text": "Hello  brave\nworld "}}));
    }

    #[test]
    fn every_scripted_event_is_valid_and_the_script_takes_a_queued_run_to_completed() {
        for text in ["one", "", "  leading and trailing  ", "multi\n\nline\ttext"] {
            let events: Vec<IncomingEvent> = script(text)
                .into_iter()
                .enumerate()
                .map(|(i, (kind, data))| {
                    IncomingEvent::parse(&format!("echo-{i}"), kind.as_str(), data).unwrap()
                })
                .collect();
            assert_eq!(status_after(RunStatus::Queued, &events), Ok(RunStatus::Completed), "{text:?}");
        }
    }

    #[test]
    fn deltas_keep_every_space_so_they_concatenate_back_to_the_text() {
        for text in ["  leading", "trailing  ", "a\u{3000}b c", "é à ü", "   ", "", "word"] {
            let events = script(text);
            assert_eq!(deltas(&events).concat(), text, "{text:?}");
            assert_eq!(output(&events), text);
        }
        assert!(deltas(&script("")).is_empty());
    }

    #[test]
    fn a_long_text_is_cut_to_two_thousand_words_and_the_output_is_what_was_streamed() {
        let text = "word ".repeat(2_500);
        let events = script(&text);
        let streamed = deltas(&events);
        assert_eq!(streamed.len(), MAX_WORDS);
        assert_eq!(output(&events), &Value::String(streamed.concat()));
        assert_eq!(events[events.len() - 4].1["output"]["words"], 2_000);
    }

    #[test]
    fn a_text_without_spaces_is_cut_to_its_character_bound_and_the_tool_argument_to_200() {
        let text = "é".repeat(MAX_TEXT_CHARS + 10);
        let events = script(&text);
        assert_eq!(output(&events).as_str().unwrap().chars().count(), MAX_TEXT_CHARS);
        let argument = events.iter().find(|(kind, _)| *kind == EventKind::ToolCallStarted).unwrap();
        assert_eq!(argument.1["arguments"]["text"].as_str().unwrap().chars().count(), 200);
    }

    #[test]
    fn the_demo_agents_user_id_is_valid() {
        assert!(UserId::parse(ECHO_USER).is_ok());
    }

    const TENANT: TenantId = TenantId::from_uuid(Uuid::from_u128(1));
    const RUN: RunId = RunId::from_uuid(Uuid::from_u128(7));

    fn run(input: Value) -> AgentRun {
        AgentRun::new(
            RUN,
            NewRun {
                tenant_id: TENANT,
                user_id: UserId::parse("alice").unwrap(),
                agent: AgentName::parse(ECHO_AGENT).unwrap(),
                input,
                session_id: None,
                metadata: Metadata::default(),
            },
            chrono::Utc::now(),
        )
    }

    /// The ids of every batch the sequencer was asked to append, in order.
    type Batches = Arc<Mutex<Vec<Vec<String>>>>;

    /// An ingest service on mocks whose sequencer answers the `n`th append with `answer(n)`
    /// (`None`: appended) and records the batches.
    fn ingest_answering(
        answer: impl Fn(usize) -> Option<Result<AppendOutcome, SequencerError>> + Send + Sync + 'static,
    ) -> (IngestService, Batches) {
        let mut runs = MockRunRepository::new();
        runs.expect_get().returning(|_, _| Ok(Some(run(json!(null)))));
        ingest_answering_on(runs, answer)
    }

    /// As [`ingest_answering`], with `runs` as the run store.
    fn ingest_answering_on(
        runs: MockRunRepository,
        answer: impl Fn(usize) -> Option<Result<AppendOutcome, SequencerError>> + Send + Sync + 'static,
    ) -> (IngestService, Batches) {
        let batches: Batches = Arc::default();
        let seen = Arc::clone(&batches);
        let mut sequencer = MockEventSequencer::new();
        sequencer.expect_append().returning(move |request| {
            let ids: Vec<String> = request.events.iter().map(|e| e.producer_id.to_string()).collect();
            let mut seen = seen.lock().unwrap();
            seen.push(ids.clone());
            answer(seen.len()).unwrap_or_else(|| {
                let new = request.status_change.map_or(RunStatus::InProgress, |change| change.new);
                Ok(AppendOutcome::Appended {
                    events: ids
                        .iter()
                        .enumerate()
                        .map(|(i, id)| AppendedEvent {
                            producer_id: ProducerId::parse(id).unwrap(),
                            seq: i as u64 + 2,
                            duplicate: false,
                        })
                        .collect(),
                    run_status: new,
                })
            })
        });
        (ingest_on(sequencer, runs), batches)
    }

    /// An ingest service on `sequencer` and `runs` whose bus and audit log take everything.
    fn ingest_on(sequencer: MockEventSequencer, runs: MockRunRepository) -> IngestService {
        let mut bus = MockEventBus::new();
        bus.expect_publish_all().returning(|_, _| Ok(()));
        let mut audit = MockAuditLog::new();
        audit.expect_record().returning(|_| Ok(()));
        let mut ids = MockIdGenerator::new();
        ids.expect_new_id().returning(Uuid::now_v7);
        let clock: Arc<dyn Clock> = Arc::new(TestClock::at(0));
        let auditor = Auditor::new(Arc::new(audit), Arc::clone(&clock), Arc::new(ids));
        let pipeline = EventPipeline::new(Arc::new(sequencer), Arc::new(bus), Arc::new(MockEventLog::new()));
        IngestService::new(pipeline, Arc::new(runs), auditor, clock)
    }

    fn reporter(ingest: IngestService) -> Reporter {
        Reporter::for_run(ingest, &run(json!("a b"))).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_script_is_sent_as_the_agent_with_each_delta_alone_and_numbered_ids() {
        let (ingest, batches) = ingest_answering(|_| None);
        let reporter = reporter(ingest);
        assert_eq!(reporter.ctx.principal.role, Role::Agent);
        assert_eq!(reporter.ctx.principal.tenant_id, TENANT);
        assert_eq!(reporter.ctx.request_id, format!("demo-{RUN}"));
        let started = Instant::now();
        reporter.play(script("a b"), Duration::from_millis(50)).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(50), "the first delta at once, the second paced");
        let expected: Vec<Vec<String>> = vec![
            vec!["echo-1".into(), "echo-2".into()],
            vec!["echo-3".into()],
            vec!["echo-4".into()],
            (5..=11).map(|n| format!("echo-{n}")).collect(),
        ];
        assert_eq!(*batches.lock().unwrap(), expected);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_store_gets_the_same_batch_again_after_a_pause() {
        let (ingest, batches) = ingest_answering(|n| {
            (n <= 2).then(|| Err(SequencerError::Unavailable(anyhow::anyhow!("connection refused"))))
        });
        let started = Instant::now();
        reporter(ingest).play(script(""), Duration::from_millis(50)).await.unwrap();
        let batches = batches.lock().unwrap();
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|batch| *batch == batches[0]));
        assert_eq!(started.elapsed(), FIRST_BACKOFF * 3, "100 ms, then 200 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn the_agent_gives_up_after_about_a_minute_of_unavailability() {
        // The store comes back only after the agent should have given up.
        let (ingest, batches) = ingest_answering(|n| {
            (n <= 17).then(|| Err(SequencerError::Unavailable(anyhow::anyhow!("down"))))
        });
        let started = Instant::now();
        let stopped = reporter(ingest).play(script("a"), Duration::from_millis(50)).await;
        assert!(matches!(stopped, Err(Stop::GaveUp(IngestError::Unavailable(_)))), "{stopped:?}");
        // Pauses of 100, 200, 400, 800, 1600 and 3200 ms, then 5 s each: the 17th try
        // is at 56.3 s, and a pause after it would end past the minute.
        assert_eq!(batches.lock().unwrap().len(), 17);
        assert_eq!(started.elapsed(), Duration::from_millis(56_300));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unexpected_store_error_gets_the_same_batch_again_like_an_outage() {
        let (ingest, batches) = ingest_answering(|n| {
            (n == 1).then(|| Err(SequencerError::Unexpected(anyhow::anyhow!("unreadable reply"))))
        });
        let started = Instant::now();
        reporter(ingest).play(script(""), Duration::from_millis(50)).await.unwrap();
        let batches = batches.lock().unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0], batches[1]);
        assert_eq!(started.elapsed(), FIRST_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_store_outage_gets_the_batch_sent_again_after_a_pause() {
        let mut runs = MockRunRepository::new();
        let mut calls = 0;
        runs.expect_get().times(2).returning(move |_, _| {
            calls += 1;
            if calls == 1 {
                Err(RepositoryError::Unexpected(anyhow::anyhow!("connection reset")))
            } else {
                Ok(Some(run(json!(null))))
            }
        });
        let (ingest, batches) = ingest_answering_on(runs, |_| None);
        let started = Instant::now();
        reporter(ingest).play(script(""), Duration::from_millis(50)).await.unwrap();
        assert_eq!(batches.lock().unwrap().len(), 1, "appended once, after the pause");
        assert_eq!(started.elapsed(), FIRST_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_refused_as_not_found_is_not_sent_again_and_the_run_is_failed() {
        let mut runs = MockRunRepository::new();
        // The script's first batch, then the failure report: each asked once, refused once.
        runs.expect_get().times(2).returning(|_, _| Ok(None));
        let mut sequencer = MockEventSequencer::new();
        sequencer.expect_append().never();
        let slots = Arc::new(Semaphore::new(1));
        let permit = Arc::clone(&slots).try_acquire_owned().unwrap();
        let started = Instant::now();
        answer(reporter(ingest_on(sequencer, runs)), "a b".into(), Duration::from_millis(50), permit).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "no pause: nothing was retried");
        assert_eq!(slots.available_permits(), 1, "the run's slot is given back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_run_stops_the_agent_with_nothing_sent_after() {
        let (ingest, batches) =
            ingest_answering(|n| (n == 2).then_some(Ok(AppendOutcome::Terminal(RunStatus::Cancelled))));
        let stopped = reporter(ingest).play(script("a b c"), Duration::from_millis(50)).await;
        assert!(matches!(stopped, Err(Stop::Ended(RunStatus::Cancelled))));
        assert_eq!(batches.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_over_the_bound_fails_as_busy_at_once() {
        let (ingest, batches) = ingest_answering(|_| None);
        let agent = EchoAgent::new(ingest, 1, 1);
        agent.start(&run(json!("slow words here")));
        agent.start(&run(json!("second")));
        // Let both tasks send their first batch; the first run's next delta waits a second.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let batches = batches.lock().unwrap();
        assert!(batches.contains(&vec!["echo-failed".to_owned()]), "{batches:?}");
        assert!(batches.contains(&vec!["echo-1".to_owned(), "echo-2".to_owned()]), "{batches:?}");
    }
}
