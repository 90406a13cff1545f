#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
//! `FredEventBus` against the test Redis (`SBA_TEST_REDIS_URL`): two buses on one Redis play
//! two nodes. Every test uses runs and tenants of its own (new ids), so tests run in
//! parallel; the tests that restart Redis or cut its connections run their own
//! `redis-server` on a free port.

use std::time::{Duration, Instant};

use chrono::Utc;
use fred::clients::Client;
use fred::interfaces::{ClientLike as _, PubsubInterface as _};
use fred::types::config::Config;
use fred::types::{Builder, Value};
use sba_application::ports::{BusMessage, DependencyCheck, EventBus, EventChannel, Subscription};
use sba_domain::events::{EventData, EventKind, RunEvent};
use sba_domain::{RunId, SessionId, TenantId};
use sba_infrastructure::redis::test_support::{PrivateRedis, redis_url};
use sba_infrastructure::redis::{FredEventBus, FredEventBusSettings};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

/// A bound for a hang, not a latency measurement.
const WAIT: Duration = Duration::from_secs(10);

async fn node_on(url: &str) -> FredEventBus {
    FredEventBus::connect(&SecretString::from(url.to_owned()), FredEventBusSettings::default())
        .await
        .expect("a usable Redis URL")
}

async fn raw_client(url: &str) -> Client {
    let client = Builder::from_config(Config::from_url(url).unwrap()).build().unwrap();
    client.init().await.unwrap();
    client
}

fn ids() -> (RunId, TenantId, SessionId) {
    (
        RunId::from_uuid(Uuid::now_v7()),
        TenantId::from_uuid(Uuid::now_v7()),
        SessionId::from_uuid(Uuid::now_v7()),
    )
}

fn event(run_id: RunId, tenant_id: TenantId, seq: u64) -> RunEvent {
    RunEvent {
        run_id,
        tenant_id,
        seq,
        producer_id: None,
        data: EventData::parse(EventKind::StepDelta, json!({"step_id": "s1", "text": format!("t {seq}")}))
            .unwrap(),
        created_at: Utc::now(),
    }
}

async fn next(subscription: &mut Subscription) -> BusMessage {
    tokio::time::timeout(WAIT, subscription.recv()).await.expect("a message in time").expect("an open bus")
}

/// Subscribers of a Redis channel, as Redis counts them.
async fn redis_subscribers(raw: &Client, channel: EventChannel) -> i64 {
    let reply: Vec<Value> = raw.pubsub_shardnumsub(channel.name()).await.unwrap();
    reply[1].as_i64().unwrap()
}

#[tokio::test]
async fn a_thousand_events_published_on_one_node_reach_another_in_seq_order_on_every_channel() {
    let url = redis_url();
    let (a, b) = (node_on(&url).await, node_on(&url).await);
    let (run, tenant, session) = ids();
    let mut on_run = b.subscribe(EventChannel::Run(run)).await;
    let mut on_session = b.subscribe(EventChannel::Session(session)).await;
    let mut on_tenant = b.subscribe(EventChannel::Tenant(tenant)).await;
    let mut on_publisher = a.subscribe(EventChannel::Run(run)).await;
    let (other_run, other_tenant, _) = ids();
    let mut on_other_tenant = b.subscribe(EventChannel::Tenant(other_tenant)).await;

    let published: Vec<RunEvent> = (1..=1_000).map(|seq| event(run, tenant, seq)).collect();
    for event in &published {
        a.publish(event, Some(session)).await.unwrap();
    }
    a.publish(&event(other_run, other_tenant, 1), None).await.unwrap();

    for subscription in [&mut on_run, &mut on_session, &mut on_tenant, &mut on_publisher] {
        for expected in &published {
            match next(subscription).await {
                BusMessage::Event(live) => {
                    assert_eq!((live.run_id, live.seq), (run, expected.seq));
                    assert_eq!(*live.json, expected.to_client_json().unwrap());
                }
                BusMessage::ResumeNeeded => panic!("told to resume at seq {}", expected.seq),
            }
        }
    }
    match next(&mut on_other_tenant).await {
        BusMessage::Event(live) => assert_eq!(live.run_id, other_run, "only its own tenant's event"),
        BusMessage::ResumeNeeded => panic!("told to resume"),
    }
}

#[tokio::test]
async fn the_redis_subscription_goes_with_the_last_local_subscriber() {
    let url = redis_url();
    let (node, raw) = (node_on(&url).await, raw_client(&url).await);
    let channel = EventChannel::Run(ids().0);
    let first = node.subscribe(channel).await;
    let second = node.subscribe(channel).await;
    assert_eq!(redis_subscribers(&raw, channel).await, 1, "one Redis subscription per node");
    drop(first);
    assert_eq!(node.channels_in_use(), 1);
    drop(second);
    assert_eq!(node.channels_in_use(), 0, "no local entry left");
    let deadline = Instant::now() + WAIT;
    while redis_subscribers(&raw, channel).await != 0 {
        assert!(Instant::now() < deadline, "still subscribed in Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // And a new subscriber subscribes again.
    let _third = node.subscribe(channel).await;
    assert_eq!(redis_subscribers(&raw, channel).await, 1);
}

#[tokio::test]
async fn after_a_redis_restart_subscribers_are_told_to_resume_and_delivery_works_again() {
    let mut redis = PrivateRedis::start();
    let (a, b) = (node_on(&redis.url()).await, node_on(&redis.url()).await);
    let (run, tenant, _) = ids();
    let mut on_run = b.subscribe(EventChannel::Run(run)).await;
    let mut on_tenant = b.subscribe(EventChannel::Tenant(tenant)).await;
    a.publish(&event(run, tenant, 1), None).await.unwrap();
    for subscription in [&mut on_run, &mut on_tenant] {
        assert!(matches!(next(subscription).await, BusMessage::Event(e) if e.seq == 1));
    }

    redis.stop();
    assert!(a.publish(&event(run, tenant, 2), None).await.is_err(), "nowhere to publish");
    // Subscribing during the outage does not fail: the subscriber is told to resume at once,
    // and subscribed in Redis when it is back.
    let (late_run, _, _) = ids();
    let mut late = b.subscribe(EventChannel::Run(late_run)).await;
    assert_eq!(next(&mut late).await, BusMessage::ResumeNeeded);
    redis.restart();

    for subscription in [&mut on_run, &mut on_tenant, &mut late] {
        assert_eq!(next(subscription).await, BusMessage::ResumeNeeded);
    }
    // The publisher's connection comes back too (in the background).
    let deadline = Instant::now() + WAIT;
    while a.publish(&event(run, tenant, 3), None).await.is_err() {
        assert!(Instant::now() < deadline, "publishing did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.publish(&event(late_run, tenant, 1), None).await.unwrap();
    for (subscription, expected) in
        [(&mut on_run, (run, 3)), (&mut on_tenant, (run, 3)), (&mut late, (late_run, 1))]
    {
        // More than one reconnection may have been noticed: each one tells to resume.
        loop {
            match next(subscription).await {
                BusMessage::ResumeNeeded => {}
                BusMessage::Event(live) => {
                    assert_eq!((live.run_id, live.seq), expected);
                    break;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_batch_published_on_one_node_reaches_a_subscriber_on_another_in_order() {
    let url = redis_url();
    let (a, b) = (node_on(&url).await, node_on(&url).await);
    let (run, tenant, session) = ids();
    let mut on_session = b.subscribe(EventChannel::Session(session)).await;
    let batches: Vec<Vec<RunEvent>> = [1..=50, 51..=120]
        .into_iter()
        .map(|seqs| seqs.map(|seq| event(run, tenant, seq)).collect())
        .collect();
    for batch in &batches {
        a.publish_all(batch, Some(session)).await.unwrap();
    }
    for expected in batches.iter().flatten() {
        match next(&mut on_session).await {
            BusMessage::Event(live) => {
                assert_eq!((live.run_id, live.seq), (run, expected.seq));
                assert_eq!(*live.json, expected.to_client_json().unwrap());
            }
            BusMessage::ResumeNeeded => panic!("told to resume at seq {}", expected.seq),
        }
    }
}

/// The canary's verdict, `Ok` or the cause.
async fn canary(check: &dyn DependencyCheck) -> Result<(), String> {
    check.check().await.map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn concurrent_canary_checks_make_the_round_trip_and_leave_nothing_behind() {
    let url = redis_url();
    let (node, raw) = (node_on(&url).await, raw_client(&url).await);
    let check = node.dependency_check();
    assert_eq!(check.component(), "event_bus");
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let check = std::sync::Arc::clone(&check);
        checks.spawn(async move { canary(check.as_ref()).await });
    }
    for verdict in checks.join_all().await {
        assert_eq!(verdict, Ok(()));
    }
    assert_eq!(node.canary_checks_waiting(), 0, "no nonce left waiting");
    assert_eq!(node.channels_in_use(), 0, "the canary is no local channel");
    let subscribers: Vec<Value> = raw.pubsub_shardnumsub(node.canary_channel()).await.unwrap();
    assert_eq!(subscribers[1].as_i64(), Some(1), "the node's own subscriber connection only");
}

#[tokio::test]
async fn foreign_and_late_messages_on_the_canary_channel_reach_no_subscriber_and_break_nothing() {
    let url = redis_url();
    let (node, raw) = (node_on(&url).await, raw_client(&url).await);
    let check = node.dependency_check();
    canary(check.as_ref()).await.unwrap();
    let (run, _, _) = ids();
    let mut on_run = node.subscribe(EventChannel::Run(run)).await;
    // Nonces of checks already answered, and payloads that are no nonce at all (one shaped
    // like an event message).
    for payload in ["1".to_owned(), "0".to_owned(), "x".to_owned(), format!("{run} 1 {{}}")] {
        let _: i64 = raw.spublish(node.canary_channel(), payload).await.unwrap();
    }
    canary(check.as_ref()).await.unwrap();
    assert_eq!(on_run.try_recv(), None, "canary messages reach no local subscriber");
    assert_eq!(node.canary_checks_waiting(), 0);
}

/// Kills the connections of `client_type` (`pubsub`: the bus's subscriber connection;
/// `normal`: its command connection, the caller's own excepted) and keeps them from coming
/// back (Redis refuses new clients) until [`end_outage`].
async fn cut(admin: &Client, client_type: &str) {
    let _: Value = admin.custom(fred::cmd!("CONFIG"), vec!["SET", "maxclients", "1"]).await.unwrap();
    let _: Value = admin.custom(fred::cmd!("CLIENT"), vec!["KILL", "TYPE", client_type]).await.unwrap();
}

async fn end_outage(admin: &Client) {
    let _: Value = admin.custom(fred::cmd!("CONFIG"), vec!["SET", "maxclients", "10000"]).await.unwrap();
}

/// Waits until the check gives `up`'s verdict, and returns the last cause of failure.
async fn until(check: &dyn DependencyCheck, up: bool) -> Option<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let verdict = canary(check).await;
        if verdict.is_ok() == up {
            return verdict.err();
        }
        assert!(
            Instant::now() < deadline,
            "the check never became {}: {verdict:?}",
            if up { "up" } else { "down" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_canary_fails_while_the_subscriber_connection_is_cut_and_passes_once_it_is_back() {
    let redis = PrivateRedis::start();
    let (node, admin) = (node_on(&redis.url()).await, raw_client(&redis.url()).await);
    let check = node.dependency_check();
    canary(check.as_ref()).await.unwrap();

    cut(&admin, "pubsub").await;
    let cause = until(check.as_ref(), false).await.unwrap();
    assert!(cause.contains("subscri"), "{cause}");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(canary(check.as_ref()).await.is_err(), "down until the subscriber connection is back");
    }

    end_outage(&admin).await;
    until(check.as_ref(), true).await;
    assert_eq!(node.canary_checks_waiting(), 0);
}

#[tokio::test]
async fn the_canary_fails_while_the_command_connection_is_cut_and_passes_once_it_is_back() {
    let redis = PrivateRedis::start();
    let (node, admin) = (node_on(&redis.url()).await, raw_client(&redis.url()).await);
    let check = node.dependency_check();
    canary(check.as_ref()).await.unwrap();

    cut(&admin, "normal").await;
    let cause = until(check.as_ref(), false).await.unwrap();
    assert!(cause.contains("SPUBLISH"), "{cause}");

    end_outage(&admin).await;
    until(check.as_ref(), true).await;
    assert_eq!(node.canary_checks_waiting(), 0);
}

#[tokio::test]
async fn the_canary_fails_while_redis_is_down_and_passes_once_it_is_back() {
    let mut redis = PrivateRedis::start();
    let node = node_on(&redis.url()).await;
    let check = node.dependency_check();
    canary(check.as_ref()).await.unwrap();
    redis.stop();
    until(check.as_ref(), false).await;
    redis.restart();
    until(check.as_ref(), true).await;
    assert_eq!(node.canary_checks_waiting(), 0);
}
