use chrono::{DateTime, Utc};
use sba_domain::events::{EventData, RunEvent, StepRef};
use sba_domain::steps::StepType;
use sba_domain::{RunId, TenantId};
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;

const TENANT: TenantId = TenantId::from_uuid(Uuid::from_u128(1));
const RUN_A: RunId = RunId::from_uuid(Uuid::from_u128(0xa));
const RUN_B: RunId = RunId::from_uuid(Uuid::from_u128(0xb));

fn at(seq: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + i64::try_from(seq).unwrap(), 0).unwrap()
}

/// An event as the bus carries it: the domain's own client JSON.
fn live(run: RunId, seq: u64, data: EventData) -> LiveEvent {
    let event = RunEvent::server(run, TENANT, seq, data, at(seq));
    LiveEvent::new(run, seq, event.to_client_json().unwrap())
}

fn delta(run: RunId, seq: u64, step: &str, text: &str) -> LiveEvent {
    live(run, seq, EventData::StepDelta { step_id: StepRef::parse(step).unwrap(), text: text.into() })
}

fn step_created(run: RunId, seq: u64, step: &str) -> LiveEvent {
    live(
        run,
        seq,
        EventData::StepCreated {
            step_id: StepRef::parse(step).unwrap(),
            step_type: StepType::MessageCreation,
        },
    )
}

fn limits(max_messages: usize, high_water_messages: usize) -> OutboundLimits {
    OutboundLimits::new(max_messages, 1 << 20, high_water_messages, 1 << 20).unwrap()
}

/// Every queued frame, parsed, in the order they leave.
fn drain(queue: &mut OutboundQueue) -> Vec<Value> {
    std::iter::from_fn(|| queue.pop()).map(|frame| serde_json::from_str(frame.as_str()).unwrap()).collect()
}

fn text(frame: Option<OutFrame>) -> String {
    frame.unwrap().as_str().to_owned()
}

/// The (seq, kind, text) of each event frame.
fn summary(frames: &[Value]) -> Vec<(u64, String, String)> {
    frames
        .iter()
        .map(|frame| {
            let event = &frame["event"];
            (
                frame["seq"].as_u64().unwrap(),
                event["kind"].as_str().unwrap().to_owned(),
                event["data"]["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

const CHANNEL: StreamChannel = StreamChannel::Run(RUN_A);

#[test]
fn limits_need_positive_bounds_with_high_water_marks_within_them() {
    assert!(OutboundLimits::new(10, 100, 10, 100).is_ok());
    assert_eq!(OutboundLimits::new(10, 100, 11, 50), Err(InvalidOutboundLimits));
    assert_eq!(OutboundLimits::new(10, 100, 5, 101), Err(InvalidOutboundLimits));
    assert_eq!(OutboundLimits::new(10, 100, 0, 50), Err(InvalidOutboundLimits));
    assert_eq!(OutboundLimits::new(10, 100, 5, 0), Err(InvalidOutboundLimits));
    assert!(OutboundLimits::new(1, 1, 1, 1).is_ok());
}

#[test]
fn below_the_high_water_mark_frames_leave_one_by_one_in_order() {
    let mut queue = OutboundQueue::new(limits(100, 10));
    queue.push_control(r#"{"type":"ack","id":"1"}"#.into()).unwrap();
    for seq in 1..=5 {
        assert_eq!(
            queue.push_event(CHANNEL, delta(RUN_A, seq, "s1", &seq.to_string()), Instant::now()),
            Ok(Pushed::Queued)
        );
    }
    assert_eq!(queue.len(), 6);
    assert_eq!(text(queue.pop()), r#"{"type":"ack","id":"1"}"#);
    let texts: Vec<_> = summary(&drain(&mut queue)).into_iter().map(|(seq, _, text)| (seq, text)).collect();
    assert_eq!(texts, (1..=5).map(|seq| (seq, seq.to_string())).collect::<Vec<_>>());
    assert_eq!(queue.coalesced_deltas(), 0);
    assert_eq!((queue.len(), queue.bytes()), (0, 0));
}

#[test]
fn an_unmerged_event_leaves_as_the_bus_published_it() {
    let mut queue = OutboundQueue::new(limits(100, 1));
    let event = delta(RUN_A, 3, "s1", "hi");
    queue.push_event(CHANNEL, event.clone(), Instant::now()).unwrap();
    assert_eq!(queue.bytes(), event_frame_len(CHANNEL, &event));
    assert_eq!(text(queue.pop()), event_frame(CHANNEL, &event));
}

#[test]
fn above_the_high_water_mark_deltas_of_one_step_merge_into_one_coalesced_delta() {
    let mut queue = OutboundQueue::new(limits(100, 2));
    queue.push_event(CHANNEL, step_created(RUN_A, 1, "s1"), Instant::now()).unwrap();
    queue.push_event(CHANNEL, delta(RUN_A, 2, "s1", "Hel"), Instant::now()).unwrap();
    assert_eq!(
        queue.push_event(CHANNEL, delta(RUN_A, 3, "s1", "lo, "), Instant::now()),
        Ok(Pushed::Coalesced)
    );
    assert_eq!(
        queue.push_event(CHANNEL, delta(RUN_A, 4, "s1", "\"world\"\n"), Instant::now()),
        Ok(Pushed::Coalesced)
    );
    assert_eq!((queue.len(), queue.coalesced_deltas()), (2, 2));

    let frames = drain(&mut queue);
    assert_eq!(frames[0]["event"]["kind"], "step.created");
    let run = RUN_A.to_string();
    assert_eq!(
        frames[1],
        json!({
            "type": "event",
            "channel": format!("run:{run}"),
            "seq": 4,
            "event": {
                "seq": 4,
                "run_id": run,
                "kind": "step.delta",
                "data": {"step_id": "s1", "text": "Hello, \"world\"\n", "coalesced": {"from_seq": 2, "to_seq": 4}},
                "created_at": serde_json::to_value(at(4)).unwrap(),
            }
        })
    );
}

#[test]
fn a_coalesced_delta_keeps_the_field_order_of_every_other_event() {
    let mut queue = OutboundQueue::new(limits(100, 1));
    queue.push_event(CHANNEL, delta(RUN_A, 1, "s1", "a"), Instant::now()).unwrap();
    queue.push_event(CHANNEL, delta(RUN_A, 2, "s1", "b"), Instant::now()).unwrap();
    let frame = text(queue.pop());
    let event = frame.split_once(r#","event":"#).unwrap().1;
    let keys: Vec<&str> = ["\"seq\"", "\"run_id\"", "\"kind\"", "\"data\"", "\"created_at\""]
        .into_iter()
        .filter(|key| event.contains(key))
        .collect();
    assert_eq!(keys.len(), 5, "{event}");
    let positions: Vec<usize> = keys.iter().map(|key| event.find(key).unwrap()).collect();
    assert!(positions.is_sorted(), "{event}");
    assert!(event.starts_with(r#"{"seq":2,"#), "{event}");
}

#[test]
fn a_delta_never_merges_across_another_event_of_its_run() {
    let mut queue = OutboundQueue::new(limits(100, 1));
    queue.push_event(CHANNEL, delta(RUN_A, 1, "s1", "a"), Instant::now()).unwrap();
    let tool = live(
        RUN_A,
        2,
        EventData::ToolCallStarted {
            tool_call_id: sba_domain::events::ToolCallRef::parse("t1").unwrap(),
            step_id: StepRef::parse("s1").unwrap(),
            name: "search".into(),
            arguments: json!({}),
        },
    );
    queue.push_event(CHANNEL, tool, Instant::now()).unwrap();
    assert_eq!(queue.push_event(CHANNEL, delta(RUN_A, 3, "s1", "b"), Instant::now()), Ok(Pushed::Queued));
    let seqs: Vec<u64> = summary(&drain(&mut queue)).into_iter().map(|(seq, ..)| seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn deltas_of_another_step_or_not_next_in_seq_are_not_merged() {
    let mut queue = OutboundQueue::new(limits(100, 1));
    queue.push_event(CHANNEL, delta(RUN_A, 1, "s1", "a"), Instant::now()).unwrap();
    assert_eq!(queue.push_event(CHANNEL, delta(RUN_A, 2, "s2", "b"), Instant::now()), Ok(Pushed::Queued));
    assert_eq!(
        queue.push_event(CHANNEL, delta(RUN_A, 4, "s2", "c"), Instant::now()),
        Ok(Pushed::Queued),
        "seq 3 is not here"
    );
    assert_eq!(queue.coalesced_deltas(), 0);
    assert_eq!(summary(&drain(&mut queue)).len(), 3);
}

#[test]
fn a_delta_carrying_more_than_a_delta_holds_is_never_merged() {
    let mut queue = OutboundQueue::new(limits(100, 1));
    let mut odd = delta(RUN_A, 1, "s1", "a");
    odd.json = odd.json.replace(r#""text":"a""#, r#""text":"a","extra":1"#).into();
    queue.push_event(CHANNEL, odd.clone(), Instant::now()).unwrap();
    assert_eq!(queue.push_event(CHANNEL, delta(RUN_A, 2, "s1", "b"), Instant::now()), Ok(Pushed::Queued));
    assert_eq!(text(queue.pop()), event_frame(CHANNEL, &odd));
}

#[test]
fn a_delta_already_sent_is_not_merged_into() {
    let mut queue = OutboundQueue::new(limits(100, 1));
    queue.push_event(CHANNEL, delta(RUN_A, 1, "s1", "a"), Instant::now()).unwrap();
    queue.push_event(CHANNEL, step_created(RUN_B, 1, "x"), Instant::now()).unwrap();
    text(queue.pop());
    assert_eq!(queue.push_event(CHANNEL, delta(RUN_A, 2, "s1", "b"), Instant::now()), Ok(Pushed::Queued));
    let frames = summary(&drain(&mut queue));
    assert_eq!(frames[1], (2, "step.delta".into(), "b".into()));
}

#[test]
fn merging_is_per_run_and_channel_and_passes_other_runs_events() {
    let tenant = StreamChannel::Tenant;
    let mut queue = OutboundQueue::new(limits(100, 1));
    queue.push_event(tenant, delta(RUN_A, 5, "s1", "a"), Instant::now()).unwrap();
    queue.push_event(tenant, delta(RUN_B, 7, "s1", "x"), Instant::now()).unwrap();
    queue.push_event(CHANNEL, delta(RUN_A, 5, "s1", "a"), Instant::now()).unwrap();
    assert_eq!(queue.push_event(tenant, delta(RUN_A, 6, "s1", "b"), Instant::now()), Ok(Pushed::Coalesced));
    assert_eq!(queue.push_event(tenant, delta(RUN_B, 8, "s1", "y"), Instant::now()), Ok(Pushed::Coalesced));
    assert_eq!(queue.push_event(CHANNEL, delta(RUN_A, 6, "s1", "b"), Instant::now()), Ok(Pushed::Coalesced));
    let frames = drain(&mut queue);
    let seen: Vec<(&str, &str, &str)> = frames
        .iter()
        .map(|f| {
            (
                f["channel"].as_str().unwrap(),
                f["event"]["run_id"].as_str().unwrap(),
                f["event"]["data"]["text"].as_str().unwrap(),
            )
        })
        .collect();
    let (a, b, run_channel) = (RUN_A.to_string(), RUN_B.to_string(), CHANNEL.to_string());
    assert_eq!(
        seen,
        [
            ("tenant", a.as_str(), "ab"),
            ("tenant", b.as_str(), "xy"),
            (run_channel.as_str(), a.as_str(), "ab")
        ]
    );
}

#[test]
fn events_that_are_not_deltas_are_never_dropped_and_overflow_the_bounds() {
    let mut queue = OutboundQueue::new(limits(3, 1));
    for seq in 1..=3 {
        queue.push_event(CHANNEL, step_created(RUN_A, seq, &format!("s{seq}")), Instant::now()).unwrap();
    }
    assert_eq!(queue.push_event(CHANNEL, step_created(RUN_A, 4, "s4"), Instant::now()), Err(Overflow));
    assert_eq!(queue.push_control("{}".into()), Err(Overflow));
    let seqs: Vec<u64> = summary(&drain(&mut queue)).into_iter().map(|(seq, ..)| seq).collect();
    assert_eq!(seqs, [1, 2, 3], "the refused push changed nothing");
}

#[test]
fn a_full_queue_still_takes_deltas_it_can_merge() {
    let mut queue = OutboundQueue::new(limits(2, 1));
    queue.push_event(CHANNEL, step_created(RUN_A, 1, "s1"), Instant::now()).unwrap();
    queue.push_event(CHANNEL, delta(RUN_A, 2, "s1", "a"), Instant::now()).unwrap();
    for seq in 3..50 {
        assert_eq!(
            queue.push_event(CHANNEL, delta(RUN_A, seq, "s1", "a"), Instant::now()),
            Ok(Pushed::Coalesced)
        );
    }
    assert_eq!(
        queue.push_event(CHANNEL, delta(RUN_A, 50, "s2", "b"), Instant::now()),
        Err(Overflow),
        "a new step needs a place"
    );
    let frames = summary(&drain(&mut queue));
    assert_eq!(frames[1], (49, "step.delta".into(), "a".repeat(48)));
}

#[test]
fn the_byte_bound_refuses_a_frame_or_a_merge_that_would_exceed_it() {
    let first = delta(RUN_A, 1, "s1", "a");
    let size = event_frame_len(CHANNEL, &first);
    let mut queue = OutboundQueue::new(OutboundLimits::new(100, size + 100, 100, size).unwrap());
    queue.push_event(CHANNEL, first, Instant::now()).unwrap();
    assert_eq!(
        queue.push_event(CHANNEL, delta(RUN_A, 2, "s1", "b"), Instant::now()),
        Ok(Pushed::Coalesced),
        "bytes at high water"
    );
    let big = "x".repeat(100);
    assert_eq!(queue.push_event(CHANNEL, delta(RUN_A, 3, "s1", &big), Instant::now()), Err(Overflow));
    assert_eq!(queue.push_control(big), Err(Overflow));
    assert_eq!(summary(&drain(&mut queue)), [(2, "step.delta".into(), "ab".into())]);
}

#[test]
fn an_empty_queue_takes_one_frame_larger_than_its_byte_bound() {
    let mut queue = OutboundQueue::new(OutboundLimits::new(10, 64, 10, 64).unwrap());
    let large = delta(RUN_A, 1, "s1", &"x".repeat(500));
    assert_eq!(queue.push_event(CHANNEL, large.clone(), Instant::now()), Ok(Pushed::Queued));
    assert_eq!(queue.push_control("{}".into()), Err(Overflow));
    assert_eq!(text(queue.pop()), event_frame(CHANNEL, &large));
}

#[test]
fn the_byte_count_follows_what_is_queued_and_returns_to_zero() {
    let mut queue = OutboundQueue::new(limits(100, 2));
    queue.push_control("{}".into()).unwrap();
    let first = delta(RUN_A, 1, "s1", "abc");
    queue.push_event(CHANNEL, first.clone(), Instant::now()).unwrap();
    assert_eq!(queue.bytes(), 2 + event_frame_len(CHANNEL, &first));
    queue.push_event(CHANNEL, delta(RUN_A, 2, "s1", "defg"), Instant::now()).unwrap();
    let merged = queue.bytes() - 2;
    text(queue.pop());
    let frame = text(queue.pop());
    assert!(merged >= frame.len() && merged - frame.len() < 64, "counted {merged}, written {}", frame.len());
    assert_eq!(queue.bytes(), 0);
    assert!(queue.is_empty());
}

#[test]
fn a_throttled_queue_merges_deltas_below_the_high_water_mark() {
    let mut queue = OutboundQueue::new(limits(16, 8));
    let channel = StreamChannel::Run(RUN_A);
    queue.push_event(channel, step_created(RUN_A, 1, "s1"), Instant::now()).unwrap();
    queue.push_event(channel, delta(RUN_A, 2, "s1", "a"), Instant::now()).unwrap();
    queue.set_throttled(true);
    assert!(!queue.at_high_water());
    assert_eq!(
        queue.push_event(channel, delta(RUN_A, 3, "s1", "b"), Instant::now()).unwrap(),
        Pushed::Coalesced
    );
    queue.set_throttled(false);
    assert_eq!(
        queue.push_event(channel, delta(RUN_A, 4, "s1", "c"), Instant::now()).unwrap(),
        Pushed::Queued
    );
    let frames = drain(&mut queue);
    assert_eq!(
        summary(&frames),
        [
            (1, "step.created".to_owned(), String::new()),
            (3, "step.delta".to_owned(), "ab".to_owned()),
            (4, "step.delta".to_owned(), "c".to_owned()),
        ]
    );
}

#[test]
fn the_bus_merges_each_steps_consecutive_deltas_and_keeps_every_other_event_in_its_place() {
    let (events, merged) = coalesce_deltas(vec![
        delta(RUN_A, 1, "s1", "a"),
        delta(RUN_A, 2, "s1", "b"),
        delta(RUN_B, 1, "s1", "x"),
        step_created(RUN_A, 3, "s2"),
        delta(RUN_A, 4, "s1", "c"),
        delta(RUN_A, 5, "s2", "d"),
        delta(RUN_A, 6, "s2", "e"),
        delta(RUN_B, 2, "s1", "y"),
    ]);
    assert_eq!(merged, 3);
    let ranges: Vec<_> = events.iter().map(|e| (e.run_id, e.first_seq, e.seq)).collect();
    assert_eq!(ranges, [(RUN_A, 1, 2), (RUN_B, 1, 2), (RUN_A, 3, 3), (RUN_A, 4, 4), (RUN_A, 5, 6)]);
    let first: Value = serde_json::from_str(&events[0].json).unwrap();
    assert_eq!(first["data"]["text"], "ab");
    assert_eq!(first["data"]["coalesced"], json!({"from_seq": 1, "to_seq": 2}));
    assert_eq!(first["seq"], 2);
    let single: Value = serde_json::from_str(&events[3].json).unwrap();
    assert_eq!(single["data"].get("coalesced"), None, "a delta merged with nothing is unchanged");
}

#[test]
fn deltas_merged_by_the_bus_are_sent_as_they_came_and_merge_further_in_a_full_queue() {
    let (bus_merged, _) = coalesce_deltas(vec![delta(RUN_A, 1, "s1", "a"), delta(RUN_A, 2, "s1", "b")]);
    let mut queue = OutboundQueue::new(limits(100, 50));
    queue.push_event(CHANNEL, bus_merged[0].clone(), Instant::now()).unwrap();
    assert_eq!(text(queue.pop()), event_frame(CHANNEL, &bus_merged[0]));

    let mut queue = OutboundQueue::new(limits(100, 1));
    queue.push_event(CHANNEL, bus_merged[0].clone(), Instant::now()).unwrap();
    assert_eq!(queue.push_event(CHANNEL, delta(RUN_A, 3, "s1", "c"), Instant::now()), Ok(Pushed::Coalesced));
    let frames = drain(&mut queue);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["event"]["data"]["text"], "abc");
    assert_eq!(frames[0]["event"]["data"]["coalesced"], json!({"from_seq": 1, "to_seq": 3}));
}

#[test]
fn subscribers_of_one_channel_share_one_event_frame() {
    let event = delta(RUN_A, 1, "s1", "a");
    let (mut first, mut second) = (OutboundQueue::new(limits(10, 5)), OutboundQueue::new(limits(10, 5)));
    first.push_event(CHANNEL, event.clone(), Instant::now()).unwrap();
    second.push_event(CHANNEL, event.clone(), Instant::now()).unwrap();
    let (Some(OutFrame::Event(a)), Some(OutFrame::Event(b))) = (first.pop(), second.pop()) else {
        panic!("event frames expected");
    };
    assert!(Arc::ptr_eq(&a, &b), "built once");
    assert_eq!(&*a, event_frame(CHANNEL, &event));
}

#[test]
fn a_queue_whose_oldest_frame_waited_past_the_maximum_delay_is_too_late_until_it_is_sent() {
    let limits = limits(100, 50).with_max_delay(std::time::Duration::from_secs(10));
    let mut queue = OutboundQueue::new(limits);
    let start = std::time::Instant::now();
    assert!(!queue.too_late(start + std::time::Duration::from_mins(1)), "an empty queue is never late");
    queue.push_event(CHANNEL, delta(RUN_A, 1, "s1", "a"), Instant::now()).unwrap();
    queue.push_control("{}".into()).unwrap();
    let now = std::time::Instant::now();
    assert!(!queue.too_late(now + std::time::Duration::from_secs(9)));
    assert!(queue.too_late(now + std::time::Duration::from_secs(11)));
    // Sending the oldest frames clears it.
    text(queue.pop());
    text(queue.pop());
    assert!(!queue.too_late(now + std::time::Duration::from_secs(11)));
}

#[test]
fn a_configured_maximum_delay_applies_and_a_frame_may_wait_exactly_that_long() {
    let limits = limits(100, 50).with_max_delay(std::time::Duration::from_secs(2));
    assert_eq!(limits.max_delay(), std::time::Duration::from_secs(2));
    let mut queue = OutboundQueue::new(limits);
    queue.push_control("{}".into()).unwrap();
    let queued = queue.entries.front().unwrap().0;
    assert!(!queue.too_late(queued + std::time::Duration::from_secs(2)), "exactly the maximum");
    assert!(queue.too_late(queued + std::time::Duration::from_secs(2) + std::time::Duration::from_nanos(1)));
}

#[test]
fn a_delta_with_nothing_to_merge_into_leaves_as_the_bus_published_it_above_the_high_water_mark() {
    let mut queue = OutboundQueue::new(limits(100, 1));
    queue.push_event(CHANNEL, step_created(RUN_A, 1, "s1"), Instant::now()).unwrap();
    let event = delta(RUN_A, 2, "s1", "hi");
    assert_eq!(
        queue.push_event(CHANNEL, event.clone(), Instant::now()),
        Ok(Pushed::Queued),
        "read, but nothing to merge into"
    );
    assert!(!queue.is_empty());
    text(queue.pop());
    let Some(OutFrame::Event(frame)) = queue.pop() else { panic!("an event frame expected") };
    assert_eq!(&*frame, event_frame(CHANNEL, &event), "no `coalesced`");
    assert!(Arc::ptr_eq(&frame, &event.shared_frame(|_| unreachable!("built once"))), "the shared frame");
    assert!(queue.is_empty());
}

#[test]
fn once_earlier_frames_are_sent_a_delta_still_merges_into_the_queued_one_it_continues() {
    let mut queue = OutboundQueue::new(limits(100, 50));
    queue.push_event(CHANNEL, delta(RUN_A, 1, "s1", "a"), Instant::now()).unwrap();
    queue.push_event(CHANNEL, delta(RUN_A, 2, "s1", "b"), Instant::now()).unwrap();
    queue.set_throttled(true);
    assert_eq!(
        summary(&[serde_json::from_str(&text(queue.pop())).unwrap()]),
        [(1, "step.delta".into(), "a".into())]
    );
    assert_eq!(queue.push_event(CHANNEL, delta(RUN_A, 3, "s1", "c"), Instant::now()), Ok(Pushed::Coalesced));
    assert_eq!(summary(&drain(&mut queue)), [(3, "step.delta".into(), "bc".into())]);
}

#[test]
fn the_byte_count_goes_down_by_each_frame_sent() {
    let mut queue = OutboundQueue::new(limits(100, 50));
    queue.push_control("abc".into()).unwrap();
    queue.push_control("defgh".into()).unwrap();
    assert_eq!(queue.bytes(), 8);
    text(queue.pop());
    assert_eq!(queue.bytes(), 5);
    text(queue.pop());
    assert_eq!(queue.bytes(), 0);
}

#[test]
fn a_merge_that_fills_the_byte_bound_exactly_is_taken() {
    let first = delta(RUN_A, 1, "s1", "a");
    let size = event_frame_len(CHANNEL, &first);
    let growth = "b".len() + COALESCED_OVERHEAD;
    let mut queue = OutboundQueue::new(OutboundLimits::new(100, size + growth, 100, size).unwrap());
    queue.push_event(CHANNEL, first, Instant::now()).unwrap();
    assert_eq!(queue.push_event(CHANNEL, delta(RUN_A, 2, "s1", "b"), Instant::now()), Ok(Pushed::Coalesced));
    assert_eq!(queue.bytes(), size + growth);
    assert_eq!(
        queue.push_event(CHANNEL, delta(RUN_A, 3, "s1", "c"), Instant::now()),
        Err(Overflow),
        "one byte more"
    );
}

#[test]
fn a_merged_delta_grows_by_the_coalesced_overhead_once_then_by_its_texts() {
    let first = delta(RUN_A, 1, "s1", "a");
    let size = event_frame_len(CHANNEL, &first);
    let mut queue = OutboundQueue::new(limits(100, 1));
    queue.push_event(CHANNEL, first, Instant::now()).unwrap();
    queue.push_event(CHANNEL, delta(RUN_A, 2, "s1", "bc"), Instant::now()).unwrap();
    assert_eq!(queue.bytes(), size + 2 + COALESCED_OVERHEAD);
    queue.push_event(CHANNEL, delta(RUN_A, 3, "s1", "def"), Instant::now()).unwrap();
    assert_eq!(queue.bytes(), size + 5 + COALESCED_OVERHEAD);
}

#[test]
fn a_delta_whose_text_says_another_seq_than_the_event_is_never_merged() {
    let mut queue = OutboundQueue::new(limits(100, 1));
    queue.push_event(CHANNEL, delta(RUN_A, 1, "s1", "a"), Instant::now()).unwrap();
    // Published as seq 2, but its client JSON is that of seq 3.
    let inconsistent = LiveEvent::new(RUN_A, 2, delta(RUN_A, 3, "s1", "b").json);
    assert_eq!(queue.push_event(CHANNEL, inconsistent, Instant::now()), Ok(Pushed::Queued));
    assert_eq!(queue.coalesced_deltas(), 0);
}

#[test]
fn the_bus_merges_a_steps_deltas_up_to_64_kib_of_text_then_starts_a_new_one() {
    let half = 32 * 1024;
    let (events, merged) = coalesce_deltas(vec![
        delta(RUN_A, 1, "s1", &"a".repeat(half)),
        delta(RUN_A, 2, "s1", &"b".repeat(half)),
        delta(RUN_A, 3, "s1", "c"),
    ]);
    assert_eq!(merged, 1);
    let ranges: Vec<_> = events.iter().map(|e| (e.first_seq, e.seq)).collect();
    assert_eq!(ranges, [(1, 2), (3, 3)], "64 KiB exactly fit; one byte more starts a new delta");
}

#[test]
fn an_emptied_queue_gives_back_the_room_a_burst_took() {
    let run = RunId::from_uuid(Uuid::from_u128(7));
    let mut queue = OutboundQueue::new(limits(64, 32));
    for seq in 1..=20 {
        queue.push_event(StreamChannel::Run(run), delta(run, seq, "s", "x"), Instant::now()).unwrap();
    }
    assert!(queue.entries.capacity() >= 20);
    assert_eq!(drain(&mut queue).len(), 20);
    assert_eq!(queue.entries.capacity(), 0, "an idle connection holds no queue");
    assert_eq!(queue.last_event.capacity(), 0);
    queue.push_event(StreamChannel::Run(run), delta(run, 21, "s", "y"), Instant::now()).unwrap();
    assert_eq!(drain(&mut queue).len(), 1, "and the queue works on after it");
}
