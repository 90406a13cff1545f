//! The built-in demo agent `echo`: a run of agent `echo` is answered through the ingest
//! path, seen by clients as any agent's run.

use std::time::Duration;

use sba_domain::Role;
use serde_json::{Value, json};

use crate::helpers::{Store, TestApp, json_of, new_tenant, spawn_app_with};

crate::on_both_stores!(
    an_echo_run_streams_its_input_back_word_by_word_and_completes,
    a_cancelled_echo_run_gets_no_event_after_its_cancellation,
    echo_runs_over_the_bound_fail_as_busy,
    the_echo_agent_answers_nothing_when_turned_off_nor_runs_of_other_agents,
);

/// How long a test waits for a run to reach the status it expects.
const PATIENCE: Duration = Duration::from_secs(10);

async fn create_run(app: &TestApp, token: &str, body: &Value) -> String {
    let run = json_of(app.post_json("/v1/runs", token, body).await, 201).await;
    run["id"].as_str().unwrap().to_owned()
}

/// The run once it is in `status`; panics after [`PATIENCE`].
async fn wait_for_status(app: &TestApp, token: &str, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let run = json_of(app.get(&format!("/v1/runs/{id}"), token).await, 200).await;
        if run["status"] == status {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run is still {} after {PATIENCE:?}",
            run["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn events(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let page = json_of(app.get(&format!("/v1/runs/{id}/events?limit=100"), token).await, 200).await;
    page["data"].as_array().unwrap().clone()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|event| event["kind"].as_str().unwrap()).collect()
}

async fn an_echo_run_streams_its_input_back_word_by_word_and_completes(store: Store) {
    let app = spawn_app_with(store, &[("SBA_DEMO__WORDS_PER_SECOND", "1000")]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let text = "What is the answer to  everything?";
    let id = create_run(&app, &token, &json!({"agent": "echo", "input": {"question": text}})).await;

    let run = wait_for_status(&app, &token, &id, "completed").await;
    assert_eq!(run["output"], json!({"text": text}));

    let events = events(&app, &token, &id).await;
    let seqs: Vec<u64> = events.iter().map(|event| event["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let mut expected = vec!["run.created", "run.started", "step.created"];
    expected.extend(["step.delta"; 6]);
    expected.extend([
        "step.completed",
        "step.created",
        "tool_call.started",
        "tool_call.completed",
        "step.completed",
        "usage.reported",
        "run.completed",
    ]);
    assert_eq!(kinds(&events), expected);
    let streamed: String = events
        .iter()
        .filter(|event| event["kind"] == "step.delta")
        .map(|event| event["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, text);

    let steps = json_of(app.get(&format!("/v1/runs/{id}/steps"), &token).await, 200).await;
    let steps: Vec<(&str, &str, &str)> = steps["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["type"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("msg-1", "message_creation", "completed"), ("tools-1", "tool_calls", "completed")]);

    let calls = json_of(app.get(&format!("/v1/runs/{id}/tool-calls"), &token).await, 200).await;
    let call = &calls["data"][0];
    assert_eq!(calls["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        (&call["id"], &call["step_id"], &call["name"]),
        (&json!("call-1"), &json!("tools-1"), &json!("word_count"))
    );
    assert_eq!(call["arguments"], json!({"text": text}));
    assert_eq!((&call["output"], &call["status"]), (&json!({"words": 6}), &json!("completed")));

    let usage = json_of(app.get("/v1/usage?group_by=model", &token).await, 200).await;
    assert_eq!(
        usage["data"],
        json!([{"key": "echo-1", "input_tokens": 6, "output_tokens": 6, "cost_micros": 0, "runs": 1}])
    );
}

async fn a_cancelled_echo_run_gets_no_event_after_its_cancellation(store: Store) {
    let app = spawn_app_with(store, &[("SBA_DEMO__WORDS_PER_SECOND", "2")]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let id =
        create_run(&app, &token, &json!({"agent": "echo", "input": "one two three four five six"})).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !kinds(&events(&app, &token, &id).await).contains(&"step.delta") {
        assert!(tokio::time::Instant::now() < deadline, "no delta after {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    json_of(app.post(&format!("/v1/runs/{id}/cancel"), &token).await, 200).await;
    wait_for_status(&app, &token, &id, "cancelled").await;
    // Long enough for the agent's next delta (one every 500 ms), refused as the run has ended.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let events = events(&app, &token, &id).await;
    assert_eq!(kinds(&events).last(), Some(&"run.cancelled"), "{events:?}");
    assert!(!kinds(&events).contains(&"run.completed"));
}

async fn echo_runs_over_the_bound_fail_as_busy(store: Store) {
    let app =
        spawn_app_with(store, &[("SBA_DEMO__WORDS_PER_SECOND", "1"), ("SBA_DEMO__MAX_RUNS", "1")]).await;
    let token = app.token(new_tenant(), "alice", Role::Authenticated);
    let slow = create_run(&app, &token, &json!({"agent": "echo", "input": "a long enough text"})).await;
    let refused = create_run(&app, &token, &json!({"agent": "echo", "input": "too many"})).await;

    let run = wait_for_status(&app, &token, &refused, "failed").await;
    assert_eq!(run["last_error"]["code"], "demo_agent_busy");
    wait_for_status(&app, &token, &slow, "in_progress").await;
    json_of(app.post(&format!("/v1/runs/{slow}/cancel"), &token).await, 200).await;
}

async fn the_echo_agent_answers_nothing_when_turned_off_nor_runs_of_other_agents(store: Store) {
    for (settings, agent) in [
        (&[("SBA_DEMO__ECHO_AGENT", "false")][..], "echo"),
        (&[("SBA_DEMO__WORDS_PER_SECOND", "1000")][..], "echo-bot"),
    ] {
        let app = spawn_app_with(store, settings).await;
        let token = app.token(new_tenant(), "alice", Role::Authenticated);
        let id = create_run(&app, &token, &json!({"agent": agent, "input": "hello"})).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let run = json_of(app.get(&format!("/v1/runs/{id}"), &token).await, 200).await;
        assert_eq!(run["status"], "queued", "{agent} with {settings:?}");
        assert_eq!(kinds(&events(&app, &token, &id).await), ["run.created"]);
    }
}
