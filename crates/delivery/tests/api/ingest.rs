//! `POST /v1/runs/{run_id}/events`, mostly in the embedded mode (no Redis: the internal store is the
//! sequencer and persists each batch before the answer), on SQLite and PostgreSQL.

use sba_domain::{Role, TenantId};
use serde_json::{Value, json};

use crate::helpers::{Store, TestApp, accepted_seqs, json_of, new_tenant, problem, spawn_app};

crate::on_both_stores!(
    seqs_follow_run_created_gapless_in_batch_order_and_events_are_listed_at_once,
    a_seen_id_is_a_duplicate_answered_with_its_original_seq_alone_or_mixed_with_new_ids,
    one_invalid_event_refuses_the_batch_with_its_index_and_stores_nothing,
    a_batch_holds_at_most_500_events_and_1_mib,
    an_ended_run_answers_409_run_terminal_with_its_status,
    cancel_writes_run_cancelled_as_the_next_seq_and_later_batches_are_refused,
    only_the_runs_tenants_agents_and_services_may_report_events,
    usage_reported_through_ingest_is_summed_and_status_changes_are_audited,
);

/// A run of a new tenant, created by its user; answers the run and an agent token of the
/// tenant.
async fn new_run(app: &TestApp) -> (Value, TenantId, String) {
    let tenant = new_tenant();
    let user = app.token(tenant, "alice", Role::Authenticated);
    let run = json_of(app.post_json("/v1/runs", &user, &json!({"agent": "bot"})).await, 201).await;
    (run, tenant, app.token(tenant, "agent-1", Role::Agent))
}

fn events_path(run: &Value) -> String {
    format!("/v1/runs/{}/events", run["id"].as_str().unwrap())
}

fn delta(id: &str, text: &str) -> Value {
    json!({"id": id, "kind": "step.delta", "data": {"step_id": "s1", "text": text}})
}

fn opening() -> Vec<Value> {
    vec![
        json!({"id": "e1", "kind": "run.started"}),
        json!({"id": "e2", "kind": "step.created", "data": {"step_id": "s1", "type": "message_creation"}}),
    ]
}

async fn ingest(app: &TestApp, run: &Value, token: &str, events: &[Value]) -> reqwest::Response {
    app.post_json(&events_path(run), token, &json!({"events": events})).await
}

fn pairs(expected: &[(&str, u64)]) -> Vec<(String, u64)> {
    expected.iter().map(|(id, seq)| ((*id).to_owned(), *seq)).collect()
}

/// `(seq, kind)` of the run's listed events.
async fn listed(app: &TestApp, run: &Value, token: &str) -> Vec<(u64, String)> {
    let page = json_of(app.get(&format!("{}?limit=100", events_path(run)), token).await, 200).await;
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["kind"].as_str().unwrap().to_owned()))
        .collect()
}

async fn seqs_follow_run_created_gapless_in_batch_order_and_events_are_listed_at_once(store: Store) {
    let app = spawn_app(store).await;
    let (run, _, agent) = new_run(&app).await;
    let mut batch = opening();
    batch.push(delta("e3", "Hello"));
    let body = json_of(ingest(&app, &run, &agent, &batch).await, 200).await;
    assert_eq!(accepted_seqs(&body), pairs(&[("e1", 2), ("e2", 3), ("e3", 4)]));
    assert_eq!((body["duplicates"].as_u64(), body["run_status"].as_str()), (Some(0), Some("in_progress")));
    let body = json_of(ingest(&app, &run, &agent, &[delta("e4", " world")]).await, 200).await;
    assert_eq!(accepted_seqs(&body), pairs(&[("e4", 5)]));
    let kinds = listed(&app, &run, &agent).await;
    assert_eq!(
        kinds,
        [(1, "run.created"), (2, "run.started"), (3, "step.created"), (4, "step.delta"), (5, "step.delta")]
            .map(|(seq, kind)| (seq, kind.to_owned()))
    );
    let stored =
        json_of(app.get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()), &agent).await, 200).await;
    assert_eq!(stored["status"], "in_progress");
}

async fn a_seen_id_is_a_duplicate_answered_with_its_original_seq_alone_or_mixed_with_new_ids(store: Store) {
    let app = spawn_app(store).await;
    let (run, _, agent) = new_run(&app).await;
    json_of(ingest(&app, &run, &agent, &opening()).await, 200).await;
    let again = json_of(ingest(&app, &run, &agent, &opening()).await, 200).await;
    assert_eq!(accepted_seqs(&again), pairs(&[("e1", 2), ("e2", 3)]));
    assert_eq!(again["duplicates"], 2);
    let mixed = [delta("e3", "a"), opening()[1].clone(), delta("e4", "b"), delta("e3", "a")];
    let body = json_of(ingest(&app, &run, &agent, &mixed).await, 200).await;
    assert_eq!(accepted_seqs(&body), pairs(&[("e3", 4), ("e2", 3), ("e4", 5), ("e3", 4)]));
    assert_eq!(body["duplicates"], 2, "an id seen earlier and one repeated within the batch");
    assert_eq!(listed(&app, &run, &agent).await.len(), 5, "nothing stored twice");
}

async fn one_invalid_event_refuses_the_batch_with_its_index_and_stores_nothing(store: Store) {
    let app = spawn_app(store).await;
    let (run, _, agent) = new_run(&app).await;
    let mut batch = opening();
    batch.push(json!({"id": "e3", "kind": "step.delta", "data": {"step_id": "s1"}}));
    let refused = problem(ingest(&app, &run, &agent, &batch).await, 422, "validation_failed").await;
    assert_eq!(refused["index"], 2);
    assert_eq!(refused["errors"][0]["field"], "events[2].data");
    let unknown_kind = [delta("x1", "a"), json!({"id": "x2", "kind": "run.teleported"})];
    assert_eq!(
        problem(ingest(&app, &run, &agent, &unknown_kind).await, 422, "validation_failed").await["index"],
        1
    );
    let not_an_event = [json!("step.delta")];
    assert_eq!(
        problem(ingest(&app, &run, &agent, &not_an_event).await, 422, "validation_failed").await["index"],
        0
    );
    let server_only = [json!({"id": "c", "kind": "run.cancelled"})];
    problem(ingest(&app, &run, &agent, &server_only).await, 422, "validation_failed").await;
    let too_early = [json!({"id": "done", "kind": "run.completed", "data": {"output": 1}})];
    assert_eq!(
        problem(ingest(&app, &run, &agent, &too_early).await, 422, "validation_failed").await["index"],
        0
    );
    assert_eq!(listed(&app, &run, &agent).await.len(), 1, "only run.created");
    // None of the refused ids is remembered: they are new in the next batch.
    let body = json_of(ingest(&app, &run, &agent, &batch[..2]).await, 200).await;
    assert_eq!(accepted_seqs(&body), pairs(&[("e1", 2), ("e2", 3)]));
}

async fn a_batch_holds_at_most_500_events_and_1_mib(store: Store) {
    let app = spawn_app(store).await;
    let (run, _, agent) = new_run(&app).await;
    let mut batch = opening();
    batch.extend((3..=500).map(|i| delta(&format!("e{i}"), "w")));
    let body = json_of(ingest(&app, &run, &agent, &batch).await, 200).await;
    assert_eq!(accepted_seqs(&body).last(), Some(&("e500".to_owned(), 501)));
    let too_many: Vec<Value> = (0..501).map(|i| delta(&format!("f{i}"), "w")).collect();
    let refused = problem(ingest(&app, &run, &agent, &too_many).await, 422, "validation_failed").await;
    assert_eq!(refused["errors"][0]["field"], "events");
    problem(ingest(&app, &run, &agent, &[]).await, 422, "validation_failed").await;
    let big = "x".repeat(1024 * 1024);
    problem(ingest(&app, &run, &agent, &[delta("big", &big)]).await, 413, "payload_too_large").await;
    assert_eq!(listed(&app, &run, &agent).await.len(), 100, "the first page; nothing of the refused batches");
}

async fn an_ended_run_answers_409_run_terminal_with_its_status(store: Store) {
    let app = spawn_app(store).await;
    let (run, _, agent) = new_run(&app).await;
    let mut batch = opening();
    batch.push(json!({"id": "done", "kind": "run.completed", "data": {"output": "hi"}}));
    let body = json_of(ingest(&app, &run, &agent, &batch).await, 200).await;
    assert_eq!(body["run_status"], "completed");
    let refused = problem(ingest(&app, &run, &agent, &[delta("late", "x")]).await, 409, "run_terminal").await;
    assert_eq!(refused["run_status"], "completed");
    // The batch that ended the run, retried, is answered with its seqs.
    let retried = json_of(ingest(&app, &run, &agent, &batch).await, 200).await;
    assert_eq!(
        (retried["duplicates"].as_u64(), retried["run_status"].as_str()),
        (Some(3), Some("completed"))
    );
    let stored =
        json_of(app.get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()), &agent).await, 200).await;
    assert_eq!((stored["status"].as_str(), &stored["output"]), (Some("completed"), &json!("hi")));
}

async fn cancel_writes_run_cancelled_as_the_next_seq_and_later_batches_are_refused(store: Store) {
    let app = spawn_app(store).await;
    let (run, tenant, agent) = new_run(&app).await;
    json_of(ingest(&app, &run, &agent, &opening()).await, 200).await;
    let user = app.token(tenant, "alice", Role::Authenticated);
    let cancelled =
        json_of(app.post(&format!("/v1/runs/{}/cancel", run["id"].as_str().unwrap()), &user).await, 200)
            .await;
    assert_eq!(cancelled["status"], "cancelled");
    let refused = problem(ingest(&app, &run, &agent, &[delta("late", "x")]).await, 409, "run_terminal").await;
    assert_eq!(refused["run_status"], "cancelled");
    let kinds = listed(&app, &run, &agent).await;
    assert_eq!(kinds.last(), Some(&(4, "run.cancelled".to_owned())));
    let steps =
        json_of(app.get(&format!("/v1/runs/{}/steps", run["id"].as_str().unwrap()), &user).await, 200).await;
    assert_eq!(steps["data"][0]["status"], "cancelled", "open steps end with the run");
    problem(
        app.post(&format!("/v1/runs/{}/cancel", run["id"].as_str().unwrap()), &user).await,
        409,
        "invalid_transition",
    )
    .await;
}

async fn only_the_runs_tenants_agents_and_services_may_report_events(store: Store) {
    let app = spawn_app(store).await;
    let (run, tenant, _) = new_run(&app).await;
    for role in [Role::Authenticated, Role::Admin] {
        problem(ingest(&app, &run, &app.token(tenant, "someone", role), &opening()).await, 403, "forbidden")
            .await;
    }
    let service = app.token(tenant, "pipeline", Role::Service);
    json_of(ingest(&app, &run, &service, &opening()).await, 200).await;
    let stranger = app.token(new_tenant(), "agent-9", Role::Agent);
    problem(ingest(&app, &run, &stranger, &[delta("x", "y")]).await, 404, "not_found").await;
    let agent = app.token(tenant, "agent-1", Role::Agent);
    let body = json!({"events": [delta("x", "y")]});
    problem(app.post_json("/v1/runs/not-a-uuid/events", &agent, &body).await, 404, "not_found").await;
    problem(
        app.post_json(&format!("/v1/runs/{}/events", uuid::Uuid::now_v7()), &agent, &body).await,
        404,
        "not_found",
    )
    .await;
    let unknown_field = json!({"events": [delta("x", "y")], "extra": 1});
    problem(app.post_json(&events_path(&run), &agent, &unknown_field).await, 400, "invalid_json").await;
}

async fn usage_reported_through_ingest_is_summed_and_status_changes_are_audited(store: Store) {
    let app = spawn_app(store).await;
    let (run, tenant, agent) = new_run(&app).await;
    let usage = json!({"id": "u1", "kind": "usage.reported",
        "data": {"model": "gpt-x", "input_tokens": 120, "output_tokens": 30, "cost_micros": 4500}});
    let done = json!({"id": "done", "kind": "run.completed", "data": {"output": null}});
    json_of(ingest(&app, &run, &agent, &[opening()[0].clone(), usage, done]).await, 200).await;
    let admin = app.token(tenant, "boss", Role::Admin);
    let today = chrono::Utc::now().date_naive();
    let sums =
        json_of(app.get(&format!("/v1/usage?from={today}&to={today}&group_by=model"), &admin).await, 200)
            .await;
    assert_eq!(sums["data"][0]["key"], "gpt-x");
    assert_eq!(
        (sums["data"][0]["input_tokens"].as_u64(), sums["data"][0]["cost_micros"].as_u64()),
        (Some(120), Some(4500))
    );
    let audit = json_of(app.get("/v1/audit-logs?limit=100", &admin).await, 200).await;
    let actions: Vec<&str> =
        audit["data"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"run.complete"), "{actions:?}");
}

/// With Redis: every accepted event (the server's own included) is published on the run's
/// and the tenant's channels, in seq order, exactly as REST lists it; duplicates are not
/// published again. The list reads the events from the run history, as no worker runs here.
#[tokio::test]
async fn accepted_events_are_published_live_in_order_exactly_as_rest_lists_them() {
    use sba_application::ports::{BusMessage, EventBus as _, EventChannel};
    use sba_infrastructure::redis::{FredEventBus, FredEventBusSettings};
    use secrecy::SecretString;

    let redis = sba_infrastructure::redis::test_support::PrivateRedis::start();
    let app = crate::helpers::spawn_app_with(Store::Postgres, &[("REDIS_URL", &redis.url())]).await;
    let (run, tenant, agent) = new_run(&app).await;
    let run_id = run["id"].as_str().unwrap().parse().unwrap();
    let bus = FredEventBus::connect(&SecretString::from(redis.url()), FredEventBusSettings::default())
        .await
        .unwrap();
    let mut on_run = bus.subscribe(EventChannel::Run(run_id)).await;
    let mut on_tenant = bus.subscribe(EventChannel::Tenant(tenant)).await;

    let mut batch = opening();
    batch.push(delta("e3", "Hello"));
    json_of(ingest(&app, &run, &agent, &batch).await, 200).await;
    json_of(ingest(&app, &run, &agent, &batch).await, 200).await; // duplicates only
    let user = app.token(tenant, "alice", Role::Authenticated);
    json_of(app.post(&format!("/v1/runs/{run_id}/cancel"), &user).await, 200).await;

    let listed = json_of(app.get(&format!("{}?limit=100", events_path(&run)), &user).await, 200).await;
    let listed: Vec<Value> = listed["data"].as_array().unwrap()[1..].to_vec(); // after run.created
    assert_eq!(listed.len(), 4, "three events and run.cancelled, from the history: {listed:?}");
    for subscription in [&mut on_run, &mut on_tenant] {
        for expected in &listed {
            let message = tokio::time::timeout(std::time::Duration::from_secs(5), subscription.recv())
                .await
                .expect("an event within 5 s")
                .expect("the bus is open");
            let BusMessage::Event(event) = message else { panic!("expected an event, got {message:?}") };
            assert_eq!(event.seq, expected["seq"].as_u64().unwrap());
            assert_eq!(&serde_json::from_str::<Value>(&event.json).unwrap(), expected);
        }
        assert!(subscription.try_recv().is_none(), "duplicates are not published again");
    }
}
