//! The ops: acks and pongs, authorization refusals, malformed frames, rate limits, and the
//! frame size bound. Every refusal but flooding and an oversized frame keeps the connection.

use sba_domain::Role;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{connect, new_run};
use crate::helpers::{Store, json_of, new_tenant, spawn_app, spawn_app_with};

#[tokio::test]
async fn subscribe_unsubscribe_and_ping_are_answered_with_their_ids() {
    let app = spawn_app(Store::Sqlite).await;
    let run = new_run(&app).await;
    let mut client = connect(&app, &run.user).await;
    let channel = run.channel();
    let ack = client.ask(json!({"op": "subscribe", "id": "1", "channel": channel, "after_seq": 0})).await;
    assert_eq!(ack, json!({"type": "ack", "id": "1"}));
    let created = client.frame().await;
    assert_eq!((created["seq"].as_u64(), created["event"]["kind"].as_str()), (Some(1), Some("run.created")));
    assert_eq!(created["channel"], channel.as_str());
    let duplicate = client.ask(json!({"op": "subscribe", "id": "2", "channel": channel})).await;
    assert_eq!((duplicate["code"].as_str(), duplicate["id"].as_str()), (Some("bad_request"), Some("2")));
    let unsubscribed = client.ask(json!({"op": "unsubscribe", "id": "3", "channel": channel})).await;
    assert_eq!(unsubscribed, json!({"type": "ack", "id": "3"}));
    assert_eq!(client.ask(json!({"op": "ping", "id": "4"})).await, json!({"type": "pong", "id": "4"}));
}

#[tokio::test]
async fn another_tenants_run_an_unknown_run_and_the_tenant_channel_of_a_non_admin_are_forbidden() {
    let app = spawn_app(Store::Sqlite).await;
    let theirs = new_run(&app).await;
    let tenant = new_tenant();
    let mut client = connect(&app, &app.token(tenant, "bob", Role::Authenticated)).await;
    let unknown = format!("run:{}", uuid::Uuid::now_v7());
    for (id, channel) in [("1", theirs.channel()), ("2", unknown), ("3", "tenant".to_owned())] {
        let refused = client.ask(json!({"op": "subscribe", "id": id, "channel": channel})).await;
        assert_eq!(
            (refused["type"].as_str(), refused["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{channel}"
        );
        assert_eq!(refused["id"], id);
    }
    let other = client.ask(json!({"op": "subscribe", "id": "4", "channel": theirs.channel()})).await;
    let unknown = client
        .ask(json!({"op": "subscribe", "id": "4", "channel": format!("run:{}", uuid::Uuid::now_v7())}))
        .await;
    assert_eq!(other["message"], unknown["message"], "another tenant's run is refused as an unknown one");
    client.assert_alive().await;

    let mut admin = connect(&app, &app.token(tenant, "root", Role::Admin)).await;
    admin.subscribe("tenant", None).await;
}

#[tokio::test]
async fn malformed_frames_and_channels_are_bad_requests_and_the_connection_lives() {
    let app = spawn_app(Store::Sqlite).await;
    let mut client = connect(&app, &app.token(new_tenant(), "alice", Role::Authenticated)).await;
    let malformed = client.ask(json!({"op": "subscribe", "id": "1", "channel": "run:not-a-uuid"})).await;
    assert_eq!((malformed["code"].as_str(), malformed["id"].as_str()), (Some("bad_request"), Some("1")));
    let unknown_op = client.ask(json!({"op": "publish", "id": "2"})).await;
    assert_eq!((unknown_op["code"].as_str(), unknown_op["id"].as_str()), (Some("bad_request"), Some("2")));
    client.send_raw(Message::text("not json")).await;
    let garbage = client.frame().await;
    assert_eq!(garbage["code"], "bad_request");
    assert!(garbage.get("id").is_none(), "{garbage}");
    client.send_raw(Message::binary(vec![1_u8, 2, 3])).await;
    assert_eq!(client.frame().await["code"], "bad_request");
    client.assert_alive().await;
}

#[tokio::test]
async fn a_rate_limited_op_is_refused_with_its_id_and_retry_after_and_the_connection_lives() {
    let app = spawn_app_with(Store::Sqlite, &[("SBA_RATE_LIMIT__WS", "ping=2/60")]).await;
    let run = new_run(&app).await;
    let mut client = connect(&app, &run.user).await;
    for id in ["1", "2"] {
        assert_eq!(client.ask(json!({"op": "ping", "id": id})).await["type"], "pong");
    }
    let refused = client.ask(json!({"op": "ping", "id": "3"})).await;
    assert_eq!(
        (refused["code"].as_str(), refused["id"].as_str()),
        (Some("rate_limited"), Some("3")),
        "{refused}"
    );
    assert!(refused["retry_after_ms"].as_u64().unwrap() > 0, "{refused}");
    client.subscribe(&run.channel(), None).await;
}

#[tokio::test]
async fn a_client_that_keeps_flooding_after_refusals_is_closed_with_1008() {
    let app = spawn_app_with(
        Store::Sqlite,
        &[("SBA_RATE_LIMIT__WS", "ping=1/60"), ("SBA_RATE_LIMIT__WS_CLOSE_AFTER", "3")],
    )
    .await;
    let mut client = connect(&app, &app.token(new_tenant(), "alice", Role::Authenticated)).await;
    for id in 0..4 {
        client.send(&json!({"op": "ping", "id": id.to_string()})).await;
    }
    let (frames, code) = client.closed().await;
    assert_eq!(code, Some(1008), "{frames:?}");
    let refusals = frames.iter().filter(|frame| frame["code"] == "rate_limited").count();
    assert_eq!((frames[0]["type"].as_str(), refusals), (Some("pong"), 2), "{frames:?}");
}

#[tokio::test]
async fn a_frame_over_the_configured_size_closes_with_1009_and_the_close_is_counted() {
    let app = spawn_app_with(Store::Sqlite, &[("SBA_STREAM__MAX_FRAME_BYTES", "1024")]).await;
    let mut client = connect(&app, &app.token(new_tenant(), "alice", Role::Authenticated)).await;
    client.assert_alive().await;
    let oversized = json!({"op": "ping", "id": "x".repeat(2000)});
    client.send(&oversized).await;
    assert_eq!(client.closed().await.1, Some(1009));
    let closes = r#"sba_ws_closes_total{code="1009",reason="frame_too_big"}"#;
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(closes), "{closes} missing from /metrics");
}

#[tokio::test]
async fn a_message_of_continuation_frames_is_one_op_and_over_the_frame_size_closes_with_1009() {
    let limit = 1024;
    let app = spawn_app_with(Store::Sqlite, &[("SBA_STREAM__MAX_FRAME_BYTES", &limit.to_string())]).await;
    let mut client = connect(&app, &app.token(new_tenant(), "alice", Role::Authenticated)).await;
    client.send_fragmented(&json!({"op": "ping", "id": "split"}).to_string(), 3).await;
    assert_eq!(client.frame().await, json!({"type": "pong", "id": "split"}), "three frames, one ping");

    // A ping padded with JSON whitespace (answered, were the bound not applied). Each frame
    // is under the bound and the first two together too: only the last frame overflows, so
    // the server has read everything the client sent when it closes.
    let over = format!(r#"{{"op":"ping","id":"over"{}}}"#, " ".repeat(limit));
    let frame = over.len().div_ceil(3);
    assert!(2 * frame <= limit && over.len() > limit, "{} bytes in frames of {frame}", over.len());
    client.send_fragmented(&over, 3).await;
    assert_eq!(client.closed().await, (Vec::new(), Some(1009)), "a message over the frame size");
}

#[tokio::test]
async fn a_session_channel_is_for_its_user_and_the_tenants_admins() {
    let app = spawn_app(Store::Sqlite).await;
    let tenant = new_tenant();
    let alice = app.token(tenant, "alice", Role::Authenticated);
    let created = json_of(app.post_json("/v1/sessions", &alice, &json!({"title": "chat"})).await, 201).await;
    let channel = format!("session:{}", created["id"].as_str().unwrap());
    connect(&app, &alice).await.subscribe(&channel, None).await;
    connect(&app, &app.token(tenant, "root", Role::Admin)).await.subscribe(&channel, None).await;
    let mut bob = connect(&app, &app.token(tenant, "bob", Role::Authenticated)).await;
    let refused = bob.ask(json!({"op": "subscribe", "id": "1", "channel": channel})).await;
    assert_eq!(refused["code"], "forbidden", "another user's session: {refused}");
    let refused = bob.ask(json!({"op": "subscribe", "id": "2", "channel": channel, "after_seq": 0})).await;
    assert_eq!(refused["code"], "bad_request", "after_seq is for run channels: {refused}");
}

#[tokio::test]
async fn with_rate_limiting_off_ops_are_not_limited() {
    let app = spawn_app_with(
        Store::Sqlite,
        &[("SBA_RATE_LIMIT__ENABLED", "false"), ("SBA_RATE_LIMIT__WS", "ping=1/60")],
    )
    .await;
    let mut client = connect(&app, &app.token(new_tenant(), "alice", Role::Authenticated)).await;
    for id in 0..5 {
        let answer = client.ask(json!({"op": "ping", "id": id.to_string()})).await;
        assert_eq!(answer["type"], "pong", "{answer}");
    }
}
