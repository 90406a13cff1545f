//! Delivery: replay then live with no gap and no duplicate while an agent posts, live only
//! without `after_seq`, a stalled reader that gets coalesced deltas and then 1013 while
//! another client on the run gets every event, broadcast throttling, and events ingested on
//! one node reaching a subscriber on another through Redis.

use std::time::{Duration, Instant};

use sba_domain::Role;
use sba_infrastructure::internal_store::test_support::fresh_postgres_url;
use sba_infrastructure::redis::test_support::redis_url;
use serde_json::{Value, json};

use super::{Client, Run, connect, connect_slow, delta, ingest, new_run, opening, seqs};
use crate::helpers::{Store, TestApp, spawn_app, spawn_app_on, spawn_app_with};

/// Rates high enough that throttling never shows where it is not under test.
const UNTHROTTLED: [(&str, &str); 2] =
    [("SBA_STREAM__TENANT_EVENTS_PER_SECOND", "1000000"), ("SBA_STREAM__USER_EVENTS_PER_SECOND", "1000000")];

/// `count` deltas of `step` (or alternating `s1`/`s2` when `step` is `None`), each of
/// `size` bytes of text that names its position.
fn deltas(prefix: &str, count: usize, size: usize, step: Option<&str>) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let step = step.unwrap_or(if i % 2 == 0 { "s1" } else { "s2" });
            let text = format!("{prefix}{i:06}-{}", "x".repeat(size.saturating_sub(prefix.len() + 8)));
            delta(&format!("{prefix}{i}"), step, &text)
        })
        .collect()
}

/// Ingests `events` in batches of at most 200 (under the 1 MiB body limit with 4 KB deltas).
async fn ingest_all(app: &TestApp, run: &Run, events: &[Value]) -> u64 {
    let mut last = 0;
    for batch in events.chunks(200) {
        last = ingest(app, run, batch).await;
    }
    last
}

/// The seqs an event frame stands for: its own, or the range it coalesced.
fn covered(frame: &Value) -> std::ops::RangeInclusive<u64> {
    let coalesced = &frame["event"]["data"]["coalesced"];
    if coalesced.is_null() {
        let seq = frame["seq"].as_u64().unwrap();
        seq..=seq
    } else {
        coalesced["from_seq"].as_u64().unwrap()..=coalesced["to_seq"].as_u64().unwrap()
    }
}

/// Checks that `frames` cover `first..=last` exactly once, in order.
fn assert_gapless(frames: &[Value], first: u64, last: u64) {
    let mut next = first;
    for frame in frames {
        let range = covered(frame);
        assert_eq!(*range.start(), next, "gap or duplicate before {frame}");
        assert_eq!(frame["seq"].as_u64(), Some(*range.end()), "a coalesced delta carries its last seq");
        next = range.end() + 1;
    }
    assert_eq!(next, last + 1, "delivery stopped early");
}

/// The text of the `step` deltas among `frames`, concatenated.
fn text_of(frames: &[Value], step: &str) -> String {
    frames
        .iter()
        .filter(|frame| frame["event"]["kind"] == "step.delta" && frame["event"]["data"]["step_id"] == step)
        .map(|frame| frame["event"]["data"]["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_replay_while_the_agent_posts_continues_live_without_gap_or_duplicate() {
    let app = spawn_app(Store::Sqlite).await;
    let run = new_run(&app).await;
    ingest(&app, &run, &opening()).await;
    ingest_all(&app, &run, &deltas("a", 200, 20, Some("s1"))).await;
    let posting = {
        let (address, agent, id) = (app.url(""), run.agent.clone(), run.id.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for batch in 0..20 {
                let events: Vec<Value> = deltas(&format!("b{batch}-"), 10, 20, Some("s2"));
                let url = format!("{address}/v1/runs/{id}/events");
                let response =
                    client.post(url).bearer_auth(&agent).json(&json!({"events": events})).send().await;
                assert_eq!(response.unwrap().status(), 200);
            }
        })
    };
    let mut client = connect(&app, &run.user).await;
    client.subscribe(&run.channel(), Some(0)).await;
    posting.await.unwrap();
    let last = 1 + 3 + 200 + 200;
    let events = client.events_through(last).await;
    assert_eq!(seqs(&events), (1..=last).collect::<Vec<_>>());
    let more = ingest(&app, &run, &[delta("late", "s1", "late")]).await;
    assert_eq!(seqs(&client.events_through(more).await), [more]);

    let mut resumed = connect(&app, &run.user).await;
    resumed.subscribe(&run.channel(), Some(400)).await;
    assert_eq!(seqs(&resumed.events_through(more).await), (401..=more).collect::<Vec<_>>());
}

#[tokio::test]
async fn without_after_seq_a_subscription_is_live_only() {
    let app = spawn_app(Store::Sqlite).await;
    let run = new_run(&app).await;
    ingest(&app, &run, &opening()).await;
    let mut client = connect(&app, &run.user).await;
    client.subscribe(&run.channel(), None).await;
    let seq = ingest(&app, &run, &[delta("d", "s1", "hello")]).await;
    assert_eq!(seqs(&client.events_through(seq).await), [seq], "nothing from before the subscription");
}

/// A node whose connections coalesce from 300 queued frames or 1 MiB (more than an ingest
/// batch, which the bus hands over at once) and hold at most `max` frames or 64 MiB. It
/// pings often, so that a ping stuck behind a stalled client's full socket would show.
async fn small_queue_app(max: &str) -> TestApp {
    let mut env = vec![
        ("SBA_STREAM__HEARTBEAT_INTERVAL", "100ms"),
        ("SBA_STREAM__HEARTBEAT_TIMEOUT", "10m"),
        ("SBA_STREAM__QUEUE_HIGH_WATER_MESSAGES", "300"),
        ("SBA_STREAM__QUEUE_MAX_MESSAGES", max),
        ("SBA_STREAM__QUEUE_MAX_BYTES", "67108864"),
    ];
    env.extend(UNTHROTTLED);
    spawn_app_with(Store::Sqlite, &env).await
}

/// A run with a stalled subscriber (`bob`, small receive buffer, not reading) and a
/// reading one (`alice`), both live from the start.
async fn two_subscribers(app: &TestApp) -> (Run, Client, Client) {
    let run = new_run(app).await;
    let mut stalled = connect_slow(app, &app.token(run.tenant, "bob", Role::Authenticated)).await;
    stalled.subscribe(&run.channel(), Some(0)).await;
    let mut reading = connect(app, &run.user).await;
    reading.subscribe(&run.channel(), Some(0)).await;
    (run, stalled, reading)
}

#[tokio::test]
async fn a_stalled_reader_gets_coalesced_deltas_whose_text_is_the_original_while_others_get_every_event() {
    let app = small_queue_app("100000").await;
    let (run, mut stalled, mut reading) = two_subscribers(&app).await;
    ingest(&app, &run, &opening()).await;
    // 12 MB: more than the kernel buffers between the server and a client that stopped
    // reading hold, so the rest backs up in the server's queue.
    let deltas = deltas("c", 3000, 4000, Some("s1"));
    let reader = tokio::spawn(async move {
        let events = reading.events_through(4 + 3000).await;
        (reading, events)
    });
    let last = ingest_all(&app, &run, &deltas).await;
    let (_, every) = reader.await.unwrap();
    assert_eq!(seqs(&every), (1..=last).collect::<Vec<_>>(), "the reading client gets every event, in order");

    let frames = stalled.events_through(last).await;
    assert_gapless(&frames, 1, last);
    let original: String = deltas.iter().map(|d| d["data"]["text"].as_str().unwrap()).collect();
    assert_eq!(text_of(&frames, "s1"), original, "coalescing loses and reorders nothing");
    assert!(frames.len() < every.len(), "the stalled client got coalesced deltas ({} frames)", frames.len());
    stalled.assert_alive().await;
}

#[tokio::test]
async fn a_reader_that_cannot_keep_up_is_closed_with_1013_and_resumes_with_after_seq() {
    let app = small_queue_app("600").await;
    let (run, mut stalled, reading) = two_subscribers(&app).await;
    ingest(&app, &run, &opening()).await;
    // Deltas of two steps in turn: none continues the last queued event, so none merges.
    let reader = tokio::spawn(async move {
        let mut reading = reading;
        reading.events_through(4 + 3000).await
    });
    let last = ingest_all(&app, &run, &deltas("o", 3000, 4000, None)).await;
    assert_eq!(seqs(&reader.await.unwrap()), (1..=last).collect::<Vec<_>>(), "the reading client keeps up");

    let (frames, code) = stalled.closed().await;
    assert_eq!(code, Some(1013), "{} frames before the close", frames.len());
    let received = frames.iter().filter_map(|frame| frame["seq"].as_u64()).max().unwrap_or(0);
    assert!(received < last, "the overflow lost the tail, which a resume fetches");
    let mut resumed = connect(&app, &app.token(run.tenant, "bob", Role::Authenticated)).await;
    resumed.subscribe(&run.channel(), Some(received)).await;
    assert_gapless(&resumed.events_through(last).await, received + 1, last);
}

#[tokio::test]
async fn a_reader_whose_oldest_queued_frame_waits_past_the_maximum_delay_is_closed_with_1013_and_resumes() {
    let mut env = vec![
        ("SBA_STREAM__HEARTBEAT_TIMEOUT", "10m"),
        ("SBA_STREAM__QUEUE_HIGH_WATER_MESSAGES", "300"),
        ("SBA_STREAM__QUEUE_MAX_MESSAGES", "100000"),
        ("SBA_STREAM__QUEUE_MAX_BYTES", "67108864"),
        ("SBA_STREAM__QUEUE_MAX_DELAY", "2s"),
    ];
    env.extend(UNTHROTTLED);
    let app = spawn_app_with(Store::Sqlite, &env).await;
    let (run, mut stalled, reading) = two_subscribers(&app).await;
    let reader = tokio::spawn(async move {
        let mut reading = reading;
        reading.events_through(4 + 3000 + 1).await
    });
    ingest(&app, &run, &opening()).await;
    // 12 MB of deltas: far within the queue's size bounds once merged, but the stalled
    // client's first queued frame then waits...
    ingest_all(&app, &run, &deltas("c", 3000, 4000, Some("s1"))).await;
    // ...longer than the maximum delay (this waits for the condition, it measures nothing),
    // and the next event finds it too late.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let last = ingest(&app, &run, &[delta("late", "s1", "!")]).await;
    assert_eq!(seqs(&reader.await.unwrap()), (1..=last).collect::<Vec<_>>(), "the reading client keeps up");

    let (frames, code) = stalled.closed().await;
    assert_eq!(code, Some(1013), "{} frames before the close", frames.len());
    let received = frames.iter().filter_map(|frame| frame["seq"].as_u64()).max().unwrap_or(0);
    let mut resumed = connect(&app, &app.token(run.tenant, "bob", Role::Authenticated)).await;
    resumed.subscribe(&run.channel(), Some(received)).await;
    assert_gapless(&resumed.events_through(last).await, received + 1, last);
}

#[tokio::test]
async fn over_the_users_broadcast_rate_deltas_merge_and_lifecycle_events_are_not_held_long() {
    let app = spawn_app_with(
        Store::Sqlite,
        &[("SBA_STREAM__USER_EVENTS_PER_SECOND", "20"), ("SBA_STREAM__TENANT_EVENTS_PER_SECOND", "1000")],
    )
    .await;
    let run = new_run(&app).await;
    let mut client = connect(&app, &run.user).await;
    client.subscribe(&run.channel(), Some(0)).await;
    ingest(&app, &run, &opening()).await;
    let deltas = deltas("t", 200, 10, Some("s1"));
    ingest_all(&app, &run, &deltas).await;
    let sent = Instant::now();
    let last =
        ingest(&app, &run, &[json!({"id": "done", "kind": "run.completed", "data": {"output": "ok"}})]).await;
    let frames = client.events_through(last).await;
    let waited = sent.elapsed();
    assert_gapless(&frames, 1, last);
    let original: String = deltas.iter().map(|d| d["data"]["text"].as_str().unwrap()).collect();
    assert_eq!(text_of(&frames, "s1"), original, "throttling merges deltas and drops none");
    assert!(frames.len() < 100, "{} frames for {last} events at 20 a second", frames.len());
    assert!(waited < Duration::from_secs(5), "run.completed waited {waited:?}");
}

#[tokio::test]
async fn a_subscriber_on_one_node_receives_events_ingested_on_another_through_redis() {
    let database = fresh_postgres_url().await;
    let redis = redis_url();
    let env = [("REDIS_URL", redis.as_str()), ("SBA_RATE_LIMIT__ENABLED", "false")];
    let a = spawn_app_on(&database, &env).await;
    let b = spawn_app_on(&database, &env).await;
    let run = new_run(&a).await;
    let mut on_b = connect(&b, &run.user).await;
    on_b.subscribe(&run.channel(), Some(0)).await;
    assert_eq!(
        seqs(&on_b.events_through(1).await),
        [1],
        "run.created, replayed on B from the shared history"
    );
    let last = ingest(&a, &run, &opening()).await;
    assert_eq!(seqs(&on_b.events_through(last).await), (2..=last).collect::<Vec<_>>());
    let more = ingest(&a, &run, &[delta("x", "s1", "from A")]).await;
    let live = on_b.events_through(more).await;
    assert_eq!(live[0]["event"]["data"]["text"], "from A");
}
