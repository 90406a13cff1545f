use uuid::Uuid;

use super::*;

const RUN: RunId = RunId::from_uuid(Uuid::from_u128(0xa));
const OTHER: RunId = RunId::from_uuid(Uuid::from_u128(0xb));

fn limits(page: u64, held: usize) -> FeedLimits {
    FeedLimits { page, held, runs: 8 }
}

fn event_of(run: RunId, seq: u64) -> LiveEvent {
    LiveEvent::new(run, seq, format!(r#"{{"seq":{seq}}}"#))
}

fn event(seq: u64) -> LiveEvent {
    event_of(RUN, seq)
}

fn events(seqs: impl IntoIterator<Item = u64>) -> Vec<LiveEvent> {
    seqs.into_iter().map(event).collect()
}

fn seqs(events: &[LiveEvent]) -> Vec<u64> {
    events.iter().map(|event| event.seq).collect()
}

const fn read(after_seq: u64, limit: u64) -> HistoryRead {
    HistoryRead { run: RUN, after_seq, limit }
}

#[test]
fn a_replay_delivers_the_history_then_the_live_events_held_meanwhile_without_duplicates() {
    let (mut feed, first) = SubscriptionFeed::run(RUN, Some(2), limits(100, 16));
    assert_eq!(first, Some(read(2, 100)));
    // Published while the history is read: 5 is in the history too.
    assert_eq!(feed.on_event(event(5)), OnLive::Nothing);
    assert_eq!(feed.on_event(event(6)), OnLive::Nothing);
    let (deliver, next) = feed.on_history(RUN, events([1, 2, 3, 4, 5]));
    assert_eq!((seqs(&deliver), next), (vec![3, 4, 5, 6], Next::Live), "nothing at or before after_seq");
    assert_eq!(feed.on_event(event(6)), OnLive::Nothing, "already delivered");
    assert_eq!(feed.on_event(event(7)), OnLive::Deliver(event(7)));
}

#[test]
fn a_long_replay_is_read_page_by_page() {
    let (mut feed, first) = SubscriptionFeed::run(RUN, Some(0), limits(2, 16));
    assert_eq!(first, Some(read(0, 2)));
    let (deliver, next) = feed.on_history(RUN, events([1, 2]));
    assert_eq!((seqs(&deliver), next), (vec![1, 2], Next::Read(read(2, 2))));
    let (deliver, next) = feed.on_history(RUN, events([3, 4]));
    assert_eq!((seqs(&deliver), next), (vec![3, 4], Next::Read(read(4, 2))));
    let (deliver, next) = feed.on_history(RUN, events([5]));
    assert_eq!((seqs(&deliver), next), (vec![5], Next::Live));
}

#[test]
fn a_full_page_followed_by_the_held_live_events_needs_no_further_read() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, Some(0), limits(2, 16));
    feed.on_event(event(3));
    let (deliver, next) = feed.on_history(RUN, events([1, 2]));
    assert_eq!((seqs(&deliver), next), (vec![1, 2, 3], Next::Live));
}

#[test]
fn held_events_beyond_a_full_page_read_the_seqs_between_them() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, Some(0), limits(2, 16));
    feed.on_event(event(9));
    let (deliver, next) = feed.on_history(RUN, events([1, 2]));
    assert_eq!((seqs(&deliver), next), (vec![1, 2], Next::Read(read(2, 2))));
    let (deliver, next) = feed.on_history(RUN, events([3, 4]));
    assert_eq!((seqs(&deliver), next), (vec![3, 4], Next::Read(read(4, 2))));
    let (deliver, next) = feed.on_history(RUN, events([5, 6]));
    assert_eq!((seqs(&deliver), next), (vec![5, 6], Next::Read(read(6, 2))));
    let (deliver, next) = feed.on_history(RUN, events([7, 8]));
    assert_eq!((seqs(&deliver), next), (vec![7, 8, 9], Next::Live));
}

#[test]
fn live_only_starts_at_the_first_live_event_without_looking_back() {
    let (mut feed, first) = SubscriptionFeed::run(RUN, None, limits(100, 16));
    assert_eq!(first, None);
    assert_eq!(feed.on_event(event(10)), OnLive::Deliver(event(10)));
    assert_eq!(feed.on_event(event(11)), OnLive::Deliver(event(11)));
    assert_eq!(feed.on_event(event(11)), OnLive::Nothing);
    assert_eq!(feed.on_event(event(9)), OnLive::Nothing);
}

#[test]
fn a_live_gap_holds_delivery_while_exactly_the_missing_seqs_are_read() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, None, limits(100, 16));
    feed.on_event(event(10));
    assert_eq!(feed.on_event(event(13)), OnLive::Read(read(10, 2)));
    assert_eq!(feed.on_event(event(14)), OnLive::Nothing);
    let (deliver, next) = feed.on_history(RUN, events([11, 12, 13]));
    assert_eq!((seqs(&deliver), next), (vec![11, 12, 13, 14], Next::Live));
    assert_eq!(feed.on_event(event(15)), OnLive::Deliver(event(15)));
}

#[test]
fn live_events_over_the_held_bound_are_read_from_the_history_afterwards() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, Some(0), limits(100, 2));
    for seq in 3..=6 {
        assert_eq!(feed.on_event(event(seq)), OnLive::Nothing);
    }
    let (deliver, next) = feed.on_history(RUN, events([1, 2]));
    assert_eq!((seqs(&deliver), next), (vec![1, 2, 3, 4], Next::Read(read(4, 100))), "5 and 6 were not held");
    let (deliver, next) = feed.on_history(RUN, events([5, 6]));
    assert_eq!((seqs(&deliver), next), (vec![5, 6], Next::Live));
}

#[test]
fn a_resume_signal_reads_the_history_after_the_last_seq_delivered() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, None, limits(100, 16));
    feed.on_event(event(5));
    assert_eq!(feed.on_resume_needed(), [read(5, 100)]);
    assert_eq!(feed.on_event(event(9)), OnLive::Nothing, "held while reading");
    let (deliver, next) = feed.on_history(RUN, events([6, 7, 8, 9]));
    assert_eq!((seqs(&deliver), next), (vec![6, 7, 8, 9], Next::Live));
}

#[test]
fn a_resume_signal_during_a_read_reads_again_after_the_held_events() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, Some(0), limits(100, 16));
    feed.on_event(event(3));
    assert_eq!(feed.on_resume_needed(), [], "the read under way is answered first");
    let (deliver, next) = feed.on_history(RUN, events([1, 2]));
    assert_eq!((seqs(&deliver), next), (vec![1, 2, 3], Next::Read(read(3, 100))));
    let (deliver, next) = feed.on_history(RUN, events([4]));
    assert_eq!((seqs(&deliver), next), (vec![4], Next::Live));
}

#[test]
fn a_resume_signal_before_any_live_event_has_nothing_to_resume_from() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, None, limits(100, 16));
    assert_eq!(feed.on_resume_needed(), []);
    assert_eq!(feed.on_event(event(7)), OnLive::Deliver(event(7)));
}

#[test]
fn a_gap_the_history_cannot_fill_ends_delivery_with_the_seq_to_resume_after() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, None, limits(100, 16));
    feed.on_event(event(10));
    assert_eq!(feed.on_event(event(14)), OnLive::Read(read(10, 3)));
    let (deliver, next) = feed.on_history(RUN, events([11]));
    assert_eq!((seqs(&deliver), next), (vec![11], Next::ResumeRequired { run: RUN, after_seq: 11 }));
    assert_eq!(feed.on_event(event(15)), OnLive::Nothing, "nothing more after a loss");
    assert_eq!(feed.on_resume_needed(), []);
}

#[test]
fn a_gap_before_events_that_arrived_during_the_read_is_read_again_before_giving_up() {
    // 3 arrives after the replay's read was asked for: that read may have missed 2.
    let (mut feed, _) = SubscriptionFeed::run(RUN, Some(0), limits(100, 16));
    feed.on_event(event(3));
    let (deliver, next) = feed.on_history(RUN, events([1]));
    assert_eq!((seqs(&deliver), next), (vec![1], Next::Read(read(1, 1))));
    let (deliver, next) = feed.on_history(RUN, events([2]));
    assert_eq!((seqs(&deliver), next), (vec![2, 3], Next::Live));

    let (mut feed, _) = SubscriptionFeed::run(RUN, Some(0), limits(100, 16));
    feed.on_event(event(3));
    feed.on_history(RUN, events([1]));
    let (deliver, next) = feed.on_history(RUN, vec![]);
    assert_eq!(
        (seqs(&deliver), next),
        (vec![], Next::ResumeRequired { run: RUN, after_seq: 1 }),
        "asked after 3 came"
    );
}

#[test]
fn a_history_with_a_hole_ends_delivery_before_the_hole() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, Some(0), limits(100, 16));
    let (deliver, next) = feed.on_history(RUN, events([1, 2, 5, 6]));
    assert_eq!((seqs(&deliver), next), (vec![1, 2], Next::ResumeRequired { run: RUN, after_seq: 2 }));
}

#[test]
fn a_failed_read_ends_delivery_with_the_seq_to_resume_after() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, Some(4), limits(100, 16));
    assert_eq!(feed.on_read_failed(RUN), Next::ResumeRequired { run: RUN, after_seq: 4 });
    assert_eq!(feed.on_event(event(5)), OnLive::Nothing);
}

#[test]
fn answers_nobody_asked_for_change_nothing() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, None, limits(100, 16));
    feed.on_event(event(1));
    assert_eq!(feed.on_history(RUN, events([2, 3])), (vec![], Next::Live));
    assert_eq!(feed.on_history(OTHER, events([2, 3])), (vec![], Next::Live));
    assert_eq!(feed.on_read_failed(RUN), Next::Live);
    assert_eq!(feed.on_event(event(2)), OnLive::Deliver(event(2)));
}

#[test]
fn a_run_channel_ignores_other_runs() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, None, limits(100, 16));
    assert_eq!(feed.on_event(event_of(OTHER, 1)), OnLive::Nothing);
}

#[test]
fn a_channel_of_many_runs_follows_each_run_on_its_own() {
    let mut feed = SubscriptionFeed::runs(limits(100, 16));
    assert_eq!(feed.on_event(event_of(RUN, 1)), OnLive::Deliver(event_of(RUN, 1)));
    assert_eq!(feed.on_event(event_of(OTHER, 7)), OnLive::Deliver(event_of(OTHER, 7)));
    assert_eq!(feed.on_event(event_of(RUN, 2)), OnLive::Deliver(event_of(RUN, 2)));
    assert_eq!(feed.on_event(event_of(OTHER, 7)), OnLive::Nothing);
    let gap = HistoryRead { run: OTHER, after_seq: 7, limit: 1 };
    assert_eq!(feed.on_event(event_of(OTHER, 9)), OnLive::Read(gap));
    assert_eq!(
        feed.on_event(event_of(RUN, 3)),
        OnLive::Deliver(event_of(RUN, 3)),
        "another run is not held up"
    );
    let (deliver, next) = feed.on_history(OTHER, vec![event_of(OTHER, 8)]);
    assert_eq!((deliver, next), (vec![event_of(OTHER, 8), event_of(OTHER, 9)], Next::Live));
    let mut reads = feed.on_resume_needed();
    reads.sort_by_key(|read| read.after_seq);
    assert_eq!(
        reads,
        [
            HistoryRead { run: RUN, after_seq: 3, limit: 100 },
            HistoryRead { run: OTHER, after_seq: 9, limit: 100 }
        ]
    );
}

#[test]
fn a_channel_of_many_runs_forgets_the_run_heard_from_longest_ago() {
    let mut feed = SubscriptionFeed::runs(FeedLimits { page: 100, held: 16, runs: 2 });
    let third = RunId::from_uuid(Uuid::from_u128(0xc));
    feed.on_event(event_of(RUN, 1));
    feed.on_event(event_of(OTHER, 1));
    feed.on_event(event_of(RUN, 2));
    feed.on_event(event_of(third, 1));
    assert_eq!(feed.on_event(event_of(RUN, 4)), OnLive::Read(read(2, 1)), "RUN is still followed");
    assert_eq!(
        feed.on_event(event_of(OTHER, 5)),
        OnLive::Deliver(event_of(OTHER, 5)),
        "OTHER was forgotten: followed anew from 5, live only"
    );
}

#[test]
fn a_channel_of_many_runs_keeps_a_run_whose_history_is_being_read() {
    let mut feed = SubscriptionFeed::runs(FeedLimits { page: 100, held: 16, runs: 2 });
    let third = RunId::from_uuid(Uuid::from_u128(0xc));
    feed.on_event(event_of(third, 1));
    assert!(matches!(feed.on_event(event_of(third, 3)), OnLive::Read(_)));
    feed.on_event(event_of(RUN, 1));
    // `third` was heard from longest ago, but waits for its read: RUN goes.
    feed.on_event(event_of(OTHER, 1));
    assert_eq!(feed.on_event(event_of(RUN, 5)), OnLive::Deliver(event_of(RUN, 5)), "RUN was forgotten");
    let (deliver, next) = feed.on_history(third, vec![event_of(third, 2)]);
    assert_eq!((seqs(&deliver), next), (vec![2, 3], Next::Live), "third kept its place and its held event");
}

fn merged(first: u64, last: u64) -> LiveEvent {
    LiveEvent::merged(RUN, first, last, format!(r#"{{"seq":{last}}}"#))
}

#[test]
fn merged_deltas_that_continue_the_last_seq_are_delivered_and_stand_for_their_whole_range() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, None, limits(100, 16));
    assert_eq!(feed.on_event(event(1)), OnLive::Deliver(event(1)));
    assert_eq!(feed.on_event(merged(2, 5)), OnLive::Deliver(merged(2, 5)));
    assert_eq!(feed.on_event(event(4)), OnLive::Nothing, "covered by the merged deltas");
    assert_eq!(feed.on_event(event(6)), OnLive::Deliver(event(6)));
}

#[test]
fn merged_deltas_after_a_gap_read_the_gap_then_follow_it() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, None, limits(100, 16));
    feed.on_event(event(1));
    assert_eq!(feed.on_event(merged(4, 6)), OnLive::Read(read(1, 2)), "2 and 3 are missing");
    let (deliver, next) = feed.on_history(RUN, events([2, 3]));
    assert_eq!(seqs(&deliver), [2, 3, 6], "the history up to the merged deltas, then them");
    assert_eq!(deliver[2].first_seq, 4);
    assert_eq!(next, Next::Live);
}

#[test]
fn merged_deltas_partly_delivered_already_are_read_one_by_one_instead() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, None, limits(100, 16));
    feed.on_event(event(1));
    feed.on_event(event(2));
    // 1..=4 merged, 1 and 2 delivered: the rest cannot be cut out of the text.
    assert_eq!(feed.on_event(merged(1, 4)), OnLive::Read(read(2, 2)));
    let (deliver, next) = feed.on_history(RUN, events([3, 4]));
    assert_eq!((seqs(&deliver), next), (vec![3, 4], Next::Live));
    assert_eq!(feed.on_event(event(5)), OnLive::Deliver(event(5)));
}

#[test]
fn held_merged_deltas_overlapping_the_history_read_are_replaced_by_a_second_read() {
    let (mut feed, first) = SubscriptionFeed::run(RUN, Some(0), limits(100, 16));
    assert_eq!(first, Some(read(0, 100)));
    feed.on_event(merged(2, 5));
    feed.on_event(event(6));
    // The history had 1..=3 when read: 2..=5 cannot follow 3.
    let (deliver, next) = feed.on_history(RUN, events([1, 2, 3]));
    assert_eq!((seqs(&deliver), next), (vec![1, 2, 3], Next::Read(read(3, 2))));
    let (deliver, next) = feed.on_history(RUN, events([4, 5]));
    assert_eq!((seqs(&deliver), next), (vec![4, 5, 6], Next::Live));
}

#[test]
fn a_full_channel_of_runs_keeps_the_state_of_the_runs_it_follows() {
    let mut feed = SubscriptionFeed::runs(FeedLimits { page: 100, held: 16, runs: 2 });
    feed.on_event(event_of(RUN, 1));
    feed.on_event(event_of(OTHER, 1));
    assert_eq!(feed.on_event(event_of(RUN, 1)), OnLive::Nothing, "delivered already");
    assert_eq!(feed.on_event(event_of(RUN, 3)), OnLive::Read(read(1, 1)), "2 is missing");
    for n in 0xc..0x10 {
        feed.on_event(event_of(RunId::from_uuid(Uuid::from_u128(n)), 1));
    }
    assert_eq!(feed.runs.len(), 2, "never more runs than the bound (none is being read here)");
}

#[test]
fn merged_deltas_starting_at_the_last_seq_delivered_are_read_one_by_one_after_it() {
    let (mut feed, _) = SubscriptionFeed::run(RUN, None, limits(100, 16));
    feed.on_event(event(1));
    feed.on_event(event(2));
    assert_eq!(feed.on_event(merged(2, 4)), OnLive::Read(read(2, 2)));
    let (deliver, next) = feed.on_history(RUN, events([3, 4]));
    assert_eq!((seqs(&deliver), next), (vec![3, 4], Next::Live));
}

#[test]
fn the_last_held_event_overlapping_the_history_read_is_read_again_from_the_history() {
    let (mut feed, first) = SubscriptionFeed::run(RUN, Some(0), limits(100, 16));
    assert_eq!(first, Some(read(0, 100)));
    feed.on_event(merged(2, 5));
    // The history had 1..=3 when read: 2..=5 cannot follow 3, and nothing is held after it.
    let (deliver, next) = feed.on_history(RUN, events([1, 2, 3]));
    assert_eq!((seqs(&deliver), next), (vec![1, 2, 3], Next::Read(read(3, 100))));
    let (deliver, next) = feed.on_history(RUN, events([4, 5]));
    assert_eq!((seqs(&deliver), next), (vec![4, 5], Next::Live));
}
