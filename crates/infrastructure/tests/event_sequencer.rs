#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! `FredEventSequencer` against the test Redis (`SBA_TEST_REDIS_URL`, failing loudly without
//! it): every test uses runs of its own (random `UUIDv7`s), so tests run in parallel; they
//! share the partition queues and find their entries by run id.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fred::clients::Client;
use fred::interfaces::{ClientLike as _, KeysInterface as _, LuaInterface as _, StreamsInterface as _};
use fred::types::Builder;
use fred::types::config::Config;
use sba_application::ports::{
    AppendOutcome, AppendRequest, EventSequencer, SeedOutcome, SequencerError, ServerAppendOutcome,
    ServerEvent, StatusChange,
};
use sba_domain::events::{EventData, EventKind, IncomingEvent, ProducerId, partition};
use sba_domain::{RunId, RunStatus, TenantId};
use sba_infrastructure::redis::events::keys::RunKeys;
use sba_infrastructure::redis::test_support::redis_url;
use sba_infrastructure::redis::{FredEventSequencer, FredEventSequencerSettings};
use secrecy::SecretString;
use serde_json::{Value as Json, json};
use uuid::Uuid;

const TTL: Duration = Duration::from_hours(1);

/// Generous bounds: parallel tests and builds share the machine.
fn settings() -> FredEventSequencerSettings {
    FredEventSequencerSettings {
        history_ttl: TTL,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..FredEventSequencerSettings::default()
    }
}

async fn sequencer() -> FredEventSequencer {
    FredEventSequencer::connect(&SecretString::from(redis_url()), settings())
        .await
        .expect("connecting to the test Redis")
}

async fn admin() -> Client {
    let admin = Builder::from_config(Config::from_url(&redis_url()).unwrap()).build().unwrap();
    admin.init().await.unwrap();
    admin
}

fn ids() -> (TenantId, RunId) {
    (TenantId::from_uuid(Uuid::now_v7()), RunId::from_uuid(Uuid::now_v7()))
}

fn keys(run: RunId) -> RunKeys {
    RunKeys::new(run, 16)
}

fn event(id: &str) -> IncomingEvent {
    IncomingEvent {
        producer_id: ProducerId::parse(id).unwrap(),
        data: EventData::parse(
            EventKind::StepDelta,
            json!({"step_id": "s1", "text": format!("text of {id}")}),
        )
        .unwrap(),
    }
}

fn request(
    tenant: TenantId,
    run: RunId,
    ids: &[&str],
    change: Option<(RunStatus, RunStatus)>,
) -> AppendRequest {
    AppendRequest {
        tenant,
        run,
        events: ids.iter().map(|id| event(id)).collect(),
        created_at: Utc::now(),
        status_change: change.map(|(expected, new)| StatusChange { expected, new }),
    }
}

/// `(producer id, seq, duplicate)` of an appended batch, and the run's status.
fn appended(outcome: AppendOutcome) -> (Vec<(String, u64, bool)>, RunStatus) {
    let AppendOutcome::Appended { events, run_status } = outcome else { panic!("not appended: {outcome:?}") };
    (
        events.into_iter().map(|e| (e.producer_id.as_str().to_owned(), e.seq, e.duplicate)).collect(),
        run_status,
    )
}

fn triples(expected: &[(&str, u64, bool)]) -> Vec<(String, u64, bool)> {
    expected.iter().map(|&(id, seq, dup)| (id.to_owned(), seq, dup)).collect()
}

async fn append(
    sequencer: &FredEventSequencer,
    tenant: TenantId,
    run: RunId,
    ids: &[&str],
) -> Vec<(String, u64, bool)> {
    appended(sequencer.append(request(tenant, run, ids, None)).await.unwrap()).0
}

async fn seeded(sequencer: &FredEventSequencer, run: RunId) {
    assert_eq!(sequencer.seed(run, 1, RunStatus::Queued).await.unwrap(), SeedOutcome::Seeded { seq: 1 });
}

/// `(seq, producer id)` of every event in the run's history stream, read directly: each
/// entry holds one call's events, is keyed `<last seq>-1` and has fields `first` and
/// `events` (a JSON array, its events in seq order from `first`).
async fn history(admin: &Client, run: RunId) -> Vec<(u64, Option<String>)> {
    let entries: Vec<Vec<String>> = admin
        .eval(
            "local out = {} for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do \
             assert(e[2][1] == 'first' and e[2][3] == 'events' and #e[2] == 4) \
             out[#out + 1] = {e[1], e[2][2], e[2][4]} end return out",
            vec![keys(run).history],
            Vec::<String>::new(),
        )
        .await
        .unwrap();
    let mut events = Vec::new();
    for entry in entries {
        let first: u64 = entry[1].parse().unwrap();
        let array: Vec<Json> = serde_json::from_str(&entry[2]).unwrap();
        assert!(!array.is_empty(), "an entry holds events");
        assert_eq!(entry[0], format!("{}-1", first + array.len() as u64 - 1), "entry id <last seq>-1");
        for (event, seq) in array.iter().zip(first..) {
            assert!(event.get("seq").is_none(), "a seq is the event's place, not a member");
            events.push((seq, event["id"].as_str().map(str::to_owned)));
        }
    }
    events
}

/// `(first_seq, last_seq, [(seq, producer id)])` of the run's entries in its partition queue.
async fn queued(admin: &Client, run: RunId) -> Vec<(u64, u64, Vec<(u64, String)>)> {
    let entries: Vec<Vec<String>> = admin
        .eval(
            "local out = {} for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do \
             local m = {} for i = 1, #e[2], 2 do m[e[2][i]] = e[2][i + 1] end \
             if m.run == ARGV[1] then out[#out + 1] = {m.tenant, m.first_seq, m.last_seq, m.events} end end \
             return out",
            vec![keys(run).queue],
            vec![run.to_string()],
        )
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|entry| {
            let events: Vec<Json> = serde_json::from_str(&entry[3]).unwrap();
            let first: u64 = entry[1].parse().unwrap();
            (
                first,
                entry[2].parse().unwrap(),
                events
                    .iter()
                    .zip(first..)
                    .map(|(e, seq)| (seq, e["id"].as_str().unwrap_or("").to_owned()))
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_new_run_needs_a_seed_then_seqs_follow_it_gapless_in_batch_order() {
    let (sequencer, (tenant, run)) = (sequencer().await, ids());
    assert_eq!(sequencer.append(request(tenant, run, &["a"], None)).await.unwrap(), AppendOutcome::NeedsSeed);
    seeded(&sequencer, run).await;
    let (events, status) =
        appended(sequencer.append(request(tenant, run, &["a", "b", "c"], None)).await.unwrap());
    assert_eq!(events, triples(&[("a", 2, false), ("b", 3, false), ("c", 4, false)]));
    assert_eq!(status, RunStatus::Queued);
    assert_eq!(
        append(&sequencer, tenant, run, &["d", "e"]).await,
        triples(&[("d", 5, false), ("e", 6, false)])
    );
    assert_eq!(sequencer.seed(run, 1, RunStatus::Queued).await.unwrap(), SeedOutcome::Kept { seq: 6 });
}

#[tokio::test]
async fn after_a_loss_restored_producer_ids_are_answered_with_their_stored_seqs() {
    // What the service does for a run whose Redis state is gone: the stored ids, then the
    // counter at the stored maximum.
    let (sequencer, (tenant, run)) = (sequencer().await, ids());
    let stored = |pairs: &[(&str, u64)]| {
        pairs.iter().map(|&(id, seq)| (ProducerId::parse(id).unwrap(), seq)).collect()
    };
    sequencer.restore_ids(run, stored(&[("x", 2), ("y", 3)])).await.unwrap();
    sequencer.restore_ids(run, stored(&[("y", 9)])).await.unwrap();
    sequencer.seed(run, 3, RunStatus::InProgress).await.unwrap();
    assert_eq!(
        append(&sequencer, tenant, run, &["y", "z", "x"]).await,
        triples(&[("y", 3, true), ("z", 4, false), ("x", 2, true)]),
        "restored ids are duplicates with their first restored seq; new ids follow the counter"
    );
}

#[tokio::test]
async fn run_status_is_none_without_a_counter_then_follows_the_runs_changes() {
    let (sequencer, (tenant, run)) = (sequencer().await, ids());
    assert_eq!(sequencer.run_status(run).await.unwrap(), None);
    seeded(&sequencer, run).await;
    assert_eq!(sequencer.run_status(run).await.unwrap(), Some(RunStatus::Queued));
    sequencer.append_server_event(tenant, run, ServerEvent::Cancelled, Utc::now()).await.unwrap();
    assert_eq!(sequencer.run_status(run).await.unwrap(), Some(RunStatus::Cancelled));
}

#[tokio::test]
async fn history_after_returns_what_was_appended_in_seq_order() {
    let (sequencer, (tenant, run)) = (sequencer().await, ids());
    seeded(&sequencer, run).await;
    let created_at = Utc::now();
    let mut batch = request(tenant, run, &["a", "b", "c", "d"], None);
    batch.created_at = created_at;
    let expected = batch.events.clone();
    sequencer.append(batch).await.unwrap();

    let all = sequencer.history_after(tenant, run, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4, 5]);
    for (stored, sent) in all.iter().zip(&expected) {
        assert_eq!(stored.producer_id.as_deref(), Some(sent.producer_id.as_str()));
        assert_eq!(stored.data, sent.data);
        assert_eq!((stored.run_id, stored.tenant_id, stored.created_at), (run, tenant, created_at));
    }
    let after_three = sequencer.history_after(tenant, run, 3, 100).await.unwrap();
    assert_eq!(after_three.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    let limited = sequencer.history_after(tenant, run, 2, 1).await.unwrap();
    assert_eq!(limited.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    assert!(sequencer.history_after(tenant, run, 5, 100).await.unwrap().is_empty());
    let stranger = TenantId::from_uuid(Uuid::now_v7());
    assert!(sequencer.history_after(stranger, run, 0, 100).await.unwrap().is_empty(), "another tenant's run");
}

#[tokio::test]
async fn duplicates_get_their_original_seq_and_are_stored_once() {
    let (sequencer, admin, (tenant, run)) = (sequencer().await, admin().await, ids());
    seeded(&sequencer, run).await;
    assert_eq!(
        append(&sequencer, tenant, run, &["a", "b"]).await,
        triples(&[("a", 2, false), ("b", 3, false)])
    );
    // Alone: a retried batch.
    assert_eq!(append(&sequencer, tenant, run, &["a"]).await, triples(&[("a", 2, true)]));
    // Mixed with new ids, and an id repeated inside the batch.
    assert_eq!(
        append(&sequencer, tenant, run, &["b", "c", "c", "a", "d"]).await,
        triples(&[("b", 3, true), ("c", 4, false), ("c", 4, true), ("a", 2, true), ("d", 5, false)])
    );
    let stored = history(&admin, run).await;
    let expected: Vec<_> =
        [(2, "a"), (3, "b"), (4, "c"), (5, "d")].map(|(s, id)| (s, Some(id.to_owned()))).into();
    assert_eq!(stored, expected);
    // One queue entry per batch with new events, holding the new events only.
    let queue = queued(&admin, run).await;
    assert_eq!(
        queue,
        [
            (2, 3, vec![(2, "a".to_owned()), (3, "b".to_owned())]),
            (4, 5, vec![(4, "c".to_owned()), (5, "d".to_owned())])
        ]
    );
}

#[tokio::test]
async fn a_terminal_status_change_ends_the_run_for_every_later_append_and_sets_the_ttl() {
    let (sequencer, admin, (tenant, run)) = (sequencer().await, admin().await, ids());
    seeded(&sequencer, run).await;
    let start = request(tenant, run, &["start"], Some((RunStatus::Queued, RunStatus::InProgress)));
    assert_eq!(appended(sequencer.append(start).await.unwrap()).1, RunStatus::InProgress);
    let keys = keys(run);
    assert_eq!(admin.ttl::<i64, _>(&keys.run).await.unwrap(), -1, "no TTL while the run goes on");
    let finish = request(tenant, run, &["work", "done"], Some((RunStatus::InProgress, RunStatus::Completed)));
    let (events, status) = appended(sequencer.append(finish.clone()).await.unwrap());
    assert_eq!((events, status), (triples(&[("work", 3, false), ("done", 4, false)]), RunStatus::Completed));

    let later = sequencer.append(request(tenant, run, &["late"], None)).await.unwrap();
    assert_eq!(later, AppendOutcome::Terminal(RunStatus::Completed));
    let cancel =
        sequencer.append_server_event(tenant, run, ServerEvent::Cancelled, Utc::now()).await.unwrap();
    assert_eq!(cancel, ServerAppendOutcome::Terminal(RunStatus::Completed));
    // The retry of the finishing batch is answered with its seqs.
    let (events, status) = appended(sequencer.append(finish).await.unwrap());
    assert_eq!((events, status), (triples(&[("work", 3, true), ("done", 4, true)]), RunStatus::Completed));
    assert_eq!(history(&admin, run).await.len(), 3, "nothing stored after the end");

    for key in [&keys.run, &keys.ids, &keys.history] {
        let ttl = admin.ttl::<i64, _>(key).await.unwrap();
        assert!(ttl > 0 && ttl <= 3_600, "TTL of {key}: {ttl}");
    }
}

#[tokio::test]
async fn a_cancel_ends_the_run_at_the_next_seq() {
    let (sequencer, admin, (tenant, run)) = (sequencer().await, admin().await, ids());
    assert_eq!(
        sequencer.append_server_event(tenant, run, ServerEvent::Cancelled, Utc::now()).await.unwrap(),
        ServerAppendOutcome::NeedsSeed
    );
    seeded(&sequencer, run).await;
    append(&sequencer, tenant, run, &["a"]).await;
    assert_eq!(
        sequencer.append_server_event(tenant, run, ServerEvent::Cancelled, Utc::now()).await.unwrap(),
        ServerAppendOutcome::Appended { seq: 3, run_status: RunStatus::Cancelled }
    );
    let later = sequencer.append(request(tenant, run, &["b"], None)).await.unwrap();
    assert_eq!(later, AppendOutcome::Terminal(RunStatus::Cancelled));
    let stored = sequencer.history_after(tenant, run, 2, 10).await.unwrap();
    assert_eq!((stored.len(), stored[0].seq, stored[0].kind()), (1, 3, EventKind::RunCancelled));
    assert_eq!(stored[0].producer_id, None);
    assert_eq!(queued(&admin, run).await.last().map(|q| (q.0, q.1)), Some((3, 3)));
    let keys = keys(run);
    for key in [&keys.run, &keys.history] {
        let ttl = admin.ttl::<i64, _>(key).await.unwrap();
        assert!(ttl > 0 && ttl <= 3_600, "TTL of {key}: {ttl}");
    }
}

#[tokio::test]
async fn an_expiry_ends_the_run_without_an_event_or_a_seq() {
    let (sequencer, admin, (tenant, run)) = (sequencer().await, admin().await, ids());
    seeded(&sequencer, run).await;
    append(&sequencer, tenant, run, &["a"]).await;
    let queue_before = queued(&admin, run).await;
    assert_eq!(
        sequencer.append_server_event(tenant, run, ServerEvent::Expired, Utc::now()).await.unwrap(),
        ServerAppendOutcome::Appended { seq: 2, run_status: RunStatus::Expired }
    );
    let later = sequencer.append(request(tenant, run, &["b"], None)).await.unwrap();
    assert_eq!(later, AppendOutcome::Terminal(RunStatus::Expired));
    assert_eq!(sequencer.run_status(run).await.unwrap(), Some(RunStatus::Expired));
    assert_eq!(history(&admin, run).await, [(2, Some("a".to_owned()))], "no event in the history");
    assert_eq!(queued(&admin, run).await, queue_before, "nothing queued");
    let keys = keys(run);
    for key in [&keys.run, &keys.ids, &keys.history] {
        let ttl = admin.ttl::<i64, _>(key).await.unwrap();
        assert!(ttl > 0 && ttl <= 3_600, "TTL of {key}: {ttl}");
    }
}

#[tokio::test]
async fn an_expiry_of_an_ended_run_is_terminal_and_changes_nothing() {
    let (sequencer, (tenant, run)) = (sequencer().await, ids());
    seeded(&sequencer, run).await;
    sequencer.append_server_event(tenant, run, ServerEvent::Cancelled, Utc::now()).await.unwrap();
    assert_eq!(
        sequencer.append_server_event(tenant, run, ServerEvent::Expired, Utc::now()).await.unwrap(),
        ServerAppendOutcome::Terminal(RunStatus::Cancelled)
    );
    assert_eq!(sequencer.run_status(run).await.unwrap(), Some(RunStatus::Cancelled));
}

#[tokio::test]
async fn an_expiry_without_a_counter_needs_a_seed() {
    let (sequencer, (tenant, run)) = (sequencer().await, ids());
    assert_eq!(
        sequencer.append_server_event(tenant, run, ServerEvent::Expired, Utc::now()).await.unwrap(),
        ServerAppendOutcome::NeedsSeed
    );
    assert_eq!(sequencer.run_status(run).await.unwrap(), None, "no counter was made");
}

#[tokio::test]
async fn run_created_starts_a_new_run_at_seq_one_and_only_once() {
    let (sequencer, admin, (tenant, run)) = (sequencer().await, admin().await, ids());
    assert_eq!(
        sequencer.append_server_event(tenant, run, ServerEvent::Created, Utc::now()).await.unwrap(),
        ServerAppendOutcome::Appended { seq: 1, run_status: RunStatus::Queued }
    );
    assert_eq!(append(&sequencer, tenant, run, &["a"]).await, triples(&[("a", 2, false)]));
    assert_eq!(
        sequencer.append_server_event(tenant, run, ServerEvent::Created, Utc::now()).await.unwrap(),
        ServerAppendOutcome::Conflict(RunStatus::Queued)
    );
    assert_eq!(history(&admin, run).await, [(1, None), (2, Some("a".to_owned()))]);
    // A history without a counter is a lost counter, not a new run.
    admin.del::<(), _>(&keys(run).run).await.unwrap();
    assert_eq!(
        sequencer.append_server_event(tenant, run, ServerEvent::Created, Utc::now()).await.unwrap(),
        ServerAppendOutcome::NeedsSeed
    );
}

#[tokio::test]
async fn a_wrong_expected_status_is_a_conflict_that_stores_nothing() {
    let (sequencer, admin, (tenant, run)) = (sequencer().await, admin().await, ids());
    seeded(&sequencer, run).await;
    let wrong = request(tenant, run, &["a", "b"], Some((RunStatus::InProgress, RunStatus::Completed)));
    assert_eq!(sequencer.append(wrong).await.unwrap(), AppendOutcome::Conflict(RunStatus::Queued));
    assert!(history(&admin, run).await.is_empty());
    assert!(queued(&admin, run).await.is_empty());
    assert_eq!(append(&sequencer, tenant, run, &["a"]).await, triples(&[("a", 2, false)]), "ids not taken");
}

#[tokio::test]
async fn two_nodes_appending_concurrently_hand_out_unique_gapless_seqs() {
    let nodes = [Arc::new(sequencer().await), Arc::new(sequencer().await)];
    let (admin, (tenant, run)) = (admin().await, ids());
    seeded(&nodes[0], run).await;
    let tasks: Vec<_> = (0..20)
        .map(|task| {
            let node = Arc::clone(&nodes[task % 2]);
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for batch in 0..10 {
                    let names: Vec<String> = (0..3).map(|i| format!("t{task}-b{batch}-e{i}")).collect();
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let events = append(&node, tenant, run, &names).await;
                    let batch_seqs: Vec<u64> = events.iter().map(|e| e.1).collect();
                    assert!(
                        batch_seqs.windows(2).all(|w| w[1] == w[0] + 1),
                        "a batch is consecutive: {batch_seqs:?}"
                    );
                    seqs.extend(batch_seqs);
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=601).collect::<Vec<u64>>());
    assert_eq!(history(&admin, run).await.len(), 600);
}

#[tokio::test]
async fn a_batch_is_one_history_entry_and_the_history_keeps_at_least_its_newest_events() {
    let settings = FredEventSequencerSettings { history_max_len: 5, ..settings() };
    let sequencer = FredEventSequencer::connect(&SecretString::from(redis_url()), settings).await.unwrap();
    let (admin, (tenant, run)) = (admin().await, ids());
    seeded(&sequencer, run).await;
    append(&sequencer, tenant, run, &["a", "b", "c"]).await;
    let entries: i64 = admin.xlen(&keys(run).history).await.unwrap();
    assert_eq!(entries, 1, "one entry for the batch");
    assert_eq!(history(&admin, run).await.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3, 4]);
    // Trimming is approximate (whole stream nodes of 100 entries go): 250 more single-event
    // calls let it evict at least one node, never one of the 5 newest events.
    for i in 0..250 {
        append(&sequencer, tenant, run, &[&format!("e{i}")]).await;
    }
    let kept: Vec<u64> = history(&admin, run).await.iter().map(|e| e.0).collect();
    assert!(kept.len() < 253, "old entries were trimmed: {} kept", kept.len());
    assert!(kept.ends_with(&[250, 251, 252, 253, 254]), "the newest are kept: {:?}", &kept[kept.len() - 5..]);
    let read = sequencer.history_after(tenant, run, 249, 100).await.unwrap();
    assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), [250, 251, 252, 253, 254]);
}

#[tokio::test]
async fn a_lost_counter_is_seeded_past_everything_in_the_history() {
    let (sequencer, admin, (tenant, run)) = (sequencer().await, admin().await, ids());
    seeded(&sequencer, run).await;
    append(&sequencer, tenant, run, &["a", "b", "c", "d", "e"]).await;
    admin.del::<(), _>(&keys(run).run).await.unwrap();
    assert_eq!(sequencer.append(request(tenant, run, &["f"], None)).await.unwrap(), AppendOutcome::NeedsSeed);
    // The database lags behind the history: the history wins.
    let seed = sequencer.seed(run, 3, RunStatus::InProgress).await.unwrap();
    assert_eq!(seed, SeedOutcome::Seeded { seq: 6 });
    let (events, status) = appended(sequencer.append(request(tenant, run, &["f", "a"], None)).await.unwrap());
    assert_eq!((events, status), (triples(&[("f", 7, false), ("a", 2, true)]), RunStatus::InProgress));
    // The database ahead of the history (trimmed or lost): the database wins.
    admin.del::<(), _>(&keys(run).run).await.unwrap();
    assert_eq!(
        sequencer.seed(run, 40, RunStatus::InProgress).await.unwrap(),
        SeedOutcome::Seeded { seq: 40 }
    );
    assert_eq!(append(&sequencer, tenant, run, &["g"]).await, triples(&[("g", 41, false)]));
}

#[tokio::test]
async fn a_lost_counter_is_seeded_past_history_entries_that_were_trimmed() {
    let (sequencer, admin, (tenant, run)) = (sequencer().await, admin().await, ids());
    seeded(&sequencer, run).await;
    append(&sequencer, tenant, run, &["a", "b", "c"]).await;
    let keys = keys(run);
    let _: i64 = admin
        .eval(
            "return redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)",
            vec![keys.history.clone()],
            Vec::<String>::new(),
        )
        .await
        .unwrap();
    assert!(history(&admin, run).await.is_empty(), "every entry trimmed");
    admin.del::<(), _>(&keys.run).await.unwrap();
    assert_eq!(sequencer.seed(run, 1, RunStatus::Queued).await.unwrap(), SeedOutcome::Seeded { seq: 4 });
    assert_eq!(append(&sequencer, tenant, run, &["d"]).await, triples(&[("d", 5, false)]));
}

#[tokio::test]
async fn seeding_an_ended_run_makes_it_terminal() {
    let (sequencer, admin, (tenant, run)) = (sequencer().await, admin().await, ids());
    assert_eq!(sequencer.seed(run, 9, RunStatus::Failed).await.unwrap(), SeedOutcome::Seeded { seq: 9 });
    let later = sequencer.append(request(tenant, run, &["a"], None)).await.unwrap();
    assert_eq!(later, AppendOutcome::Terminal(RunStatus::Failed));
    let ttl = admin.ttl::<i64, _>(&keys(run).run).await.unwrap();
    assert!(ttl > 0 && ttl <= 3_600, "TTL {ttl}");
}

#[tokio::test]
async fn every_key_of_a_run_and_its_queue_carry_one_hash_tag() {
    let (sequencer, admin, (tenant, run)) = (sequencer().await, admin().await, ids());
    seeded(&sequencer, run).await;
    append(&sequencer, tenant, run, &["a"]).await;
    let tag = format!("sba:{{ev:{}}}:", partition(run, 16));
    let keys = keys(run);
    for key in keys.all() {
        assert!(key.starts_with(&tag), "{key} lacks {tag}");
        assert_eq!(admin.exists::<i64, _>(key).await.unwrap(), 1, "{key} was written");
    }
    let distinct: HashSet<_> = keys.all().into_iter().collect();
    assert_eq!(distinct.len(), 4);
}

#[tokio::test]
async fn the_script_is_reloaded_after_script_flush() {
    let (sequencer, admin, (tenant, run)) = (sequencer().await, admin().await, ids());
    seeded(&sequencer, run).await;
    admin.script_flush(false).await.unwrap();
    assert_eq!(append(&sequencer, tenant, run, &["a"]).await, triples(&[("a", 2, false)]));
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable() {
    let settings = FredEventSequencerSettings {
        timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(200),
        ..FredEventSequencerSettings::default()
    };
    let sequencer =
        FredEventSequencer::connect(&SecretString::from("redis://127.0.0.1:1".to_owned()), settings)
            .await
            .unwrap();
    let (tenant, run) = ids();
    assert!(matches!(
        sequencer.append(request(tenant, run, &["a"], None)).await,
        Err(SequencerError::Unavailable(_))
    ));
    assert!(matches!(sequencer.seed(run, 1, RunStatus::Queued).await, Err(SequencerError::Unavailable(_))));
}
