//! Unit tests of the demo agent: its script, and its [`Reporter`](super::Reporter) against
//! an ingest service on mocks, in paused time.

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
    MockIdGenerator, MockRunRepository, RepositoryError, RunRepository, SequencerError,
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
    assert_eq!(events[8].1, json!({"tool_call_id": "call-1", "output": {"words": 3}, "status": "completed"}));
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
            .map(|(i, (kind, data))| IncomingEvent::parse(&format!("echo-{i}"), kind.as_str(), data).unwrap())
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
    runs: impl RunRepository,
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
fn ingest_on(sequencer: MockEventSequencer, runs: impl RunRepository) -> IngestService {
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
    let (ingest, batches) =
        ingest_answering(|n| (n <= 17).then(|| Err(SequencerError::Unavailable(anyhow::anyhow!("down")))));
    let started = Instant::now();
    let stopped = reporter(ingest).play(script("a"), Duration::from_millis(50)).await;
    assert!(matches!(stopped, Err(Stop::GaveUp(IngestError::Unavailable(_)))), "{stopped:?}");
    // Pauses of 100, 200, 400, 800, 1600 and 3200 ms, then 5 s each: the 17th try
    // is at 56.3 s, and a pause after it would end past the minute.
    assert_eq!(batches.lock().unwrap().len(), 17);
    assert_eq!(started.elapsed(), Duration::from_millis(56_300));
}

/// A run store whose answer takes `delay` (the run's first lookup, in paused time).
#[derive(Debug)]
struct SlowRunStore {
    delay: Duration,
}

#[async_trait::async_trait]
impl RunRepository for SlowRunStore {
    async fn get(&self, _: TenantId, _: RunId) -> Result<Option<AgentRun>, RepositoryError> {
        tokio::time::sleep(self.delay).await;
        Ok(Some(run(json!(null))))
    }

    async fn list(
        &self,
        _: TenantId,
        _: crate::ports::RunFilter,
        _: crate::pagination::PageRequest,
    ) -> Result<crate::pagination::Page<AgentRun>, RepositoryError> {
        unreachable!("the ingest never lists runs")
    }

    async fn list_overdue(
        &self,
        _: chrono::DateTime<chrono::Utc>,
        _: u64,
    ) -> Result<Vec<AgentRun>, RepositoryError> {
        unreachable!("the ingest never lists runs")
    }
}

#[tokio::test(start_paused = true)]
async fn a_pause_that_ends_exactly_at_the_minute_is_still_taken() {
    // The first try takes 3.7 s (the run's lookup): the pauses (100 ms doubling to 5 s)
    // then make the 16th try at 55 s, and its 5 s pause ends exactly at the minute. The
    // store comes back only after the agent should have given up (an agent that never
    // gives up then fails this test instead of hanging it).
    let (ingest, batches) = ingest_answering_on(SlowRunStore { delay: Duration::from_millis(3_700) }, |n| {
        (n <= 17).then(|| Err(SequencerError::Unavailable(anyhow::anyhow!("down"))))
    });
    let started = Instant::now();
    let stopped = reporter(ingest).play(script("a"), Duration::from_millis(50)).await;
    assert!(matches!(stopped, Err(Stop::GaveUp(_))), "{stopped:?}");
    assert_eq!(batches.lock().unwrap().len(), 17, "a 17th, last try at the minute");
    assert_eq!(started.elapsed(), GIVE_UP_AFTER);
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
