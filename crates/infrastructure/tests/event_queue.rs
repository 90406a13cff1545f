#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! `FredEventQueue` against the test Redis (`SBA_TEST_REDIS_URL`, failing loudly without
//! it), fed by `FredEventSequencer`. The partition queues are shared by every test: each test
//! reads them with a consumer group of its own (created at the queues' ends, so it sees only
//! entries appended after it starts; it keeps leases and dead letters of its own too) and
//! picks its entries out by run id (random `UUIDv7`s), so tests run in parallel.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use fred::interfaces::LuaInterface as _;
use sba_application::ports::{
    AppendOutcome, AppendRequest, EventQueue, EventSequencer, QueuedEntry, SeedOutcome,
};
use sba_domain::events::{EventData, EventKind, IncomingEvent, ProducerId};
use sba_domain::{RunId, RunStatus, TenantId};
use sba_infrastructure::redis::events::UNDECODABLE;
use sba_infrastructure::redis::events::keys::queue_key;
use sba_infrastructure::redis::test_support::{admin_client, drop_queue_group, new_queue_group, redis_url};
use sba_infrastructure::redis::{
    FredEventQueue, FredEventQueueSettings, FredEventSequencer, FredEventSequencerSettings,
};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

const PARTITIONS: u16 = 16;
/// Short lease and claim times, so takeovers happen within a test.
const LEASE_TTL: Duration = Duration::from_millis(600);
const CLAIM_IDLE: Duration = Duration::from_millis(600);
const PAST_BOTH: Duration = Duration::from_millis(900);

async fn consumer(group: &str, name: &str, max_partitions: u16) -> FredEventQueue {
    let settings = FredEventQueueSettings {
        partitions: PARTITIONS,
        max_partitions,
        consumer: name.to_owned(),
        group: group.to_owned(),
        lease_ttl: LEASE_TTL,
        claim_idle: CLAIM_IDLE,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
    };
    FredEventQueue::connect(&SecretString::from(redis_url()), settings)
        .await
        .expect("connecting to the test Redis")
}

async fn sequencer() -> FredEventSequencer {
    let settings = FredEventSequencerSettings {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..FredEventSequencerSettings::default()
    };
    FredEventSequencer::connect(&SecretString::from(redis_url()), settings)
        .await
        .expect("connecting to the test Redis")
}

fn ids() -> (TenantId, RunId) {
    (TenantId::from_uuid(Uuid::now_v7()), RunId::from_uuid(Uuid::now_v7()))
}

/// A run seeded at seq 1, as a created run is.
async fn seeded(sequencer: &FredEventSequencer, run: RunId) {
    assert_eq!(sequencer.seed(run, 1, RunStatus::Queued).await.unwrap(), SeedOutcome::Seeded { seq: 1 });
}

/// Appends one batch of step deltas with these producer ids; one queue entry.
async fn append(sequencer: &FredEventSequencer, tenant: TenantId, run: RunId, producer_ids: &[&str]) {
    let events = producer_ids
        .iter()
        .map(|id| IncomingEvent {
            producer_id: ProducerId::parse(id).unwrap(),
            data: EventData::parse(
                EventKind::StepDelta,
                json!({"step_id": "s1", "text": format!("text of {id}")}),
            )
            .unwrap(),
        })
        .collect();
    let request = AppendRequest { tenant, run, events, created_at: Utc::now(), status_change: None };
    let outcome = sequencer.append(request).await.unwrap();
    assert!(matches!(outcome, AppendOutcome::Appended { .. }), "{outcome:?}");
}

/// The run's entries in one `next_batch` (other tests' entries are left pending in this
/// test's group).
async fn next_of(queue: &FredEventQueue, run: RunId) -> Vec<QueuedEntry> {
    queue.next_batch(10_000).await.unwrap().into_iter().filter(|e| e.run == run).collect()
}

/// `(seq, producer id)` of each entry.
fn seqs(entries: &[QueuedEntry]) -> Vec<Vec<(u64, String)>> {
    entries
        .iter()
        .map(|e| e.events.iter().map(|ev| (ev.seq, ev.producer_id.clone().unwrap())).collect())
        .collect()
}

fn pairs(expected: &[&[(u64, &str)]]) -> Vec<Vec<(u64, String)>> {
    expected.iter().map(|entry| entry.iter().map(|&(seq, id)| (seq, id.to_owned())).collect()).collect()
}

#[tokio::test]
async fn appended_batches_come_back_decoded_in_seq_order_and_acked_ones_do_not() {
    let admin = admin_client().await;
    let group = new_queue_group(&admin, PARTITIONS).await;
    let (sequencer, queue) = (sequencer().await, consumer(&group, "a", PARTITIONS).await);
    let (tenant, run) = ids();
    seeded(&sequencer, run).await;
    append(&sequencer, tenant, run, &["p-1", "p-2"]).await;
    append(&sequencer, tenant, run, &["p-3"]).await;

    let entries = next_of(&queue, run).await;
    assert_eq!(seqs(&entries), pairs(&[&[(2, "p-1"), (3, "p-2")], &[(4, "p-3")]]));
    for entry in &entries {
        assert_eq!((entry.tenant, entry.run, entry.deliveries), (tenant, run, 1));
        assert!(entry.events.iter().all(|e| e.tenant_id == tenant && e.run_id == run));
        assert_eq!(entry.partition, sba_domain::events::partition(run, PARTITIONS));
        assert!(matches!(entry.events[0].data, EventData::StepDelta { .. }), "{:?}", entry.events[0].data);
    }

    queue.ack(&entries).await.unwrap();
    tokio::time::sleep(PAST_BOTH).await;
    assert!(next_of(&queue, run).await.is_empty(), "acked entries are neither read nor claimed again");
    queue.release().await.unwrap();
    drop_queue_group(&admin, &group, PARTITIONS).await;
}

#[tokio::test]
async fn an_entry_not_acked_is_claimed_by_the_next_owner_with_its_delivery_count() {
    let admin = admin_client().await;
    let group = new_queue_group(&admin, PARTITIONS).await;
    let sequencer = sequencer().await;
    let (a, b) = (consumer(&group, "a", PARTITIONS).await, consumer(&group, "b", PARTITIONS).await);
    let (tenant, run) = ids();
    seeded(&sequencer, run).await;
    a.next_batch(0).await.unwrap();
    assert_eq!(a.leased_partitions().len(), usize::from(PARTITIONS));
    append(&sequencer, tenant, run, &["p-1"]).await;

    let first = next_of(&a, run).await;
    assert_eq!((seqs(&first), first[0].deliveries), (pairs(&[&[(2, "p-1")]]), 1));
    assert!(next_of(&b, run).await.is_empty(), "b holds no lease while a renews them");
    assert!(b.leased_partitions().is_empty());

    // a dies: its leases lapse and its entry stays pending.
    tokio::time::sleep(PAST_BOTH).await;
    let claimed = next_of(&b, run).await;
    assert_eq!(seqs(&claimed), pairs(&[&[(2, "p-1")]]));
    assert_eq!((claimed[0].entry_id.as_str(), claimed[0].deliveries), (first[0].entry_id.as_str(), 2));
    b.ack(&claimed).await.unwrap();
    b.release().await.unwrap();
    drop_queue_group(&admin, &group, PARTITIONS).await;
}

#[tokio::test]
async fn two_consumers_never_lease_a_partition_at_once_and_a_lapsed_lease_is_taken_over() {
    let admin = admin_client().await;
    let group = new_queue_group(&admin, PARTITIONS).await;
    let (a, b) = (consumer(&group, "a", 8).await, consumer(&group, "b", PARTITIONS).await);
    a.next_batch(0).await.unwrap();
    b.next_batch(0).await.unwrap();
    let (held_a, held_b): (BTreeSet<u16>, BTreeSet<u16>) =
        (a.leased_partitions().into_iter().collect(), b.leased_partitions().into_iter().collect());
    assert_eq!(held_a.len(), 8);
    assert!(held_a.is_disjoint(&held_b), "{held_a:?} {held_b:?}");
    assert_eq!(held_a.union(&held_b).count(), usize::from(PARTITIONS));

    // Renewing keeps them apart.
    a.next_batch(0).await.unwrap();
    b.next_batch(0).await.unwrap();
    assert_eq!(a.leased_partitions().into_iter().collect::<BTreeSet<_>>(), held_a);

    // a stops renewing: once its leases lapse, b takes its partitions and a gets none back.
    tokio::time::sleep(PAST_BOTH).await;
    b.next_batch(0).await.unwrap();
    assert_eq!(b.leased_partitions().len(), usize::from(PARTITIONS));
    a.next_batch(0).await.unwrap();
    assert!(a.leased_partitions().is_empty(), "{:?}", a.leased_partitions());

    // A released lease is free at once.
    b.release().await.unwrap();
    assert!(b.leased_partitions().is_empty());
    a.next_batch(0).await.unwrap();
    assert_eq!(a.leased_partitions().len(), 8);
    a.release().await.unwrap();
    drop_queue_group(&admin, &group, PARTITIONS).await;
}

#[tokio::test]
async fn dead_letters_leave_the_queue_are_listed_and_replay_in_order() {
    let admin = admin_client().await;
    let group = new_queue_group(&admin, PARTITIONS).await;
    let (sequencer, queue) = (sequencer().await, consumer(&group, "a", PARTITIONS).await);
    let (tenant, run) = ids();
    seeded(&sequencer, run).await;
    append(&sequencer, tenant, run, &["p-1", "p-2"]).await;
    append(&sequencer, tenant, run, &["p-3"]).await;
    let entries = next_of(&queue, run).await;
    assert_eq!(entries.len(), 2);
    for entry in &entries {
        queue.dead_letter(entry, "apply_events failed").await.unwrap();
    }

    tokio::time::sleep(PAST_BOTH).await;
    assert!(next_of(&queue, run).await.is_empty(), "dead letters are acknowledged");
    let letters: Vec<_> =
        queue.dead_letters(1000).await.unwrap().into_iter().filter(|l| l.run == run).collect();
    let listed: Vec<_> = letters
        .iter()
        .map(|l| (l.entry_id.as_str(), l.tenant, l.first_seq, l.last_seq, l.reason.as_str(), l.attempts))
        .collect();
    assert_eq!(
        listed,
        vec![
            (entries[0].entry_id.as_str(), tenant, 2, 3, "apply_events failed", 1),
            (entries[1].entry_id.as_str(), tenant, 4, 4, "apply_events failed", 1),
        ]
    );
    assert!(queue.dead_letters(1).await.unwrap().len() <= 1, "the limit holds");

    assert_eq!(queue.replay_dead_letters(Some(run)).await.unwrap(), 2);
    assert!(queue.dead_letters(1000).await.unwrap().iter().all(|l| l.run != run), "replayed ones are gone");
    let replayed = next_of(&queue, run).await;
    assert_eq!(seqs(&replayed), pairs(&[&[(2, "p-1"), (3, "p-2")], &[(4, "p-3")]]));
    assert!(replayed.iter().all(|e| e.deliveries == 1 && e.tenant == tenant));
    assert!(replayed[0].entry_id != entries[0].entry_id, "a replay is a new entry");
    queue.ack(&replayed).await.unwrap();
    queue.release().await.unwrap();
    drop_queue_group(&admin, &group, PARTITIONS).await;
}

#[tokio::test]
async fn an_entry_that_cannot_be_decoded_goes_to_the_dead_letters_and_blocks_nothing() {
    let admin = admin_client().await;
    let group = new_queue_group(&admin, PARTITIONS).await;
    let (sequencer, queue) = (sequencer().await, consumer(&group, "a", PARTITIONS).await);
    let ((tenant, run), (bad_tenant, bad_run)) = (ids(), ids());
    let bad_queue = queue_key(sba_domain::events::partition(bad_run, PARTITIONS));
    let _: String = admin
        .eval(
            "return redis.call('XADD', KEYS[1], '*', 'tenant', ARGV[1], 'run', ARGV[2], 'first_seq', '2', \
             'last_seq', '2', 'events', '[{\"seq\": 2, \"not\": \"an event\"}]')",
            vec![bad_queue],
            vec![bad_tenant.to_string(), bad_run.to_string()],
        )
        .await
        .unwrap();
    seeded(&sequencer, run).await;
    append(&sequencer, tenant, run, &["p-1"]).await;

    let batch = queue.next_batch(10_000).await.unwrap();
    assert!(batch.iter().all(|e| e.run != bad_run));
    assert_eq!(
        seqs(&batch.into_iter().filter(|e| e.run == run).collect::<Vec<_>>()),
        pairs(&[&[(2, "p-1")]])
    );
    let letters: Vec<_> =
        queue.dead_letters(1000).await.unwrap().into_iter().filter(|l| l.run == bad_run).collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].tenant, letters[0].reason.as_str(), letters[0].attempts),
        (bad_tenant, UNDECODABLE, 1)
    );
    tokio::time::sleep(PAST_BOTH).await;
    assert!(queue.next_batch(10_000).await.unwrap().iter().all(|e| e.run != bad_run), "acknowledged");
    queue.release().await.unwrap();
    drop_queue_group(&admin, &group, PARTITIONS).await;
}
