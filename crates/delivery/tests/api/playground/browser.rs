//! The playground in a real headless Chromium ([`Browser`]): the page loads from the server
//! alone without a console error, mints a token and starts an `echo` run; over the WebSocket
//! the deltas appear in seq order and assemble into the echoed text, a disconnect and a
//! resume from the last seq seen (and from an earlier one) replay without a duplicate, and
//! cancel ends the run. Named `browser_*`: nextest runs them one at a time (one Chromium is
//! plenty on two cores).

use std::time::Duration;

use sba_application::demo::script;
use sba_delivery::http::playground::PAGE;
use sba_delivery::http::playground::dev_token::{DEFAULT_TENANT, DEFAULT_USER};
use sba_domain::Role;
use sba_domain::events::EventKind;
use serde_json::json;

use super::webdriver::{Browser, PATIENCE};
use crate::helpers::{Store, TestApp, json_of, spawn_app_with};

/// `n` distinct words: a prompt the echo agent streams back one delta per word.
fn words(n: usize) -> String {
    (1..=n).map(|i| format!("word-{i:03}")).collect::<Vec<_>>().join(" ")
}

/// What the page shows in its event list: `(from_seq, seq, kind)` per row.
async fn rows(browser: &Browser) -> Vec<(u64, u64, String)> {
    let rows = browser
        .eval(
            "return [...document.querySelectorAll('#events tbody tr')]
                .map(row => [Number(row.dataset.fromSeq), Number(row.dataset.seq), row.dataset.kind]);",
        )
        .await;
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| (row[0].as_u64().unwrap(), row[1].as_u64().unwrap(), row[2].as_str().unwrap().to_owned()))
        .collect()
}

async fn text_of(browser: &Browser, id: &str) -> String {
    browser
        .eval(&format!("return document.getElementById('{id}').textContent;"))
        .await
        .as_str()
        .unwrap()
        .to_owned()
}

async fn last_seq(browser: &Browser) -> u64 {
    text_of(browser, "last-seq").await.parse().unwrap()
}

/// In seq order from 1, each seq once, none missing (a coalesced delta covers its range).
fn assert_each_seq_once_in_order(rows: &[(u64, u64, String)]) {
    let mut expected_from = 1;
    for (from_seq, seq, kind) in rows {
        assert_eq!(*from_seq, expected_from, "a gap or a repeat before {kind} {seq}: {rows:?}");
        assert!(seq >= from_seq, "{rows:?}");
        expected_from = seq + 1;
    }
}

/// Waits for the page's subscription; a refused WebSocket fails at once, with what the page
/// says.
async fn wait_for_subscription(browser: &Browser) {
    browser
        .wait_until(
            "a subscribed or refused WebSocket",
            "const status = document.getElementById('connection-status');
             return status.textContent.includes('subscribed') || status.dataset.state === 'error';",
        )
        .await;
    let connection = text_of(browser, "connection-status").await;
    assert!(
        connection.starts_with("open (sba.v1), subscribed"),
        "GET /v1/stream did not take the page's subscription (the server selects sba.v1): {connection}"
    );
}

/// The page's assembled text, after checking it is what the echo agent streamed for
/// `prompt`, word for word, up to the deltas shown (and short of the whole prompt).
async fn assert_text_is_the_echoed_prefix(
    browser: &Browser,
    shown: &[(u64, u64, String)],
    prompt: &str,
) -> String {
    let delta_seqs: u64 =
        shown.iter().filter(|(_, _, kind)| kind == "step.delta").map(|(from, seq, _)| seq - from + 1).sum();
    let deltas: Vec<String> = script(prompt)
        .into_iter()
        .filter(|(kind, _)| *kind == EventKind::StepDelta)
        .map(|(_, data)| data["text"].as_str().unwrap().to_owned())
        .collect();
    let count = usize::try_from(delta_seqs).unwrap();
    assert!(count < deltas.len(), "the run was cancelled before its end");
    let text = text_of(browser, "text").await;
    assert_eq!(text, deltas[..count].concat());
    text
}

/// The rows shown are exactly the run's stored events, no more, no less (a coalesced delta
/// stands for its range).
async fn assert_shown_as_stored(app: &TestApp, run: &str, shown: &[(u64, u64, String)]) {
    let token = app.token(DEFAULT_TENANT.parse().unwrap(), DEFAULT_USER, Role::Authenticated);
    let stored = stored_events(app, &token, run).await;
    if shown.iter().all(|(from, seq, _)| from == seq) {
        let listed: Vec<(u64, String)> = shown.iter().map(|(_, seq, kind)| (*seq, kind.clone())).collect();
        assert_eq!(listed, stored);
    } else {
        assert_eq!(shown.last().map(|(_, seq, _)| *seq), stored.last().map(|(seq, _)| *seq));
    }
}

/// Loads the page and waits for the token it mints by itself.
async fn open_playground(browser: &mut Browser, app: &TestApp) {
    browser.goto(&app.url(PAGE)).await;
    browser
        .wait_until(
            "a minted token",
            "return document.getElementById('token-status').dataset.state === 'ok';",
        )
        .await;
    let status = text_of(browser, "token-status").await;
    assert!(
        status.starts_with(&format!("minted for {DEFAULT_USER} of tenant {DEFAULT_TENANT} (authenticated)")),
        "{status}"
    );
}

/// Types `prompt`, presses Start and returns the run id the page shows.
async fn start_run(browser: &Browser, prompt: &str) -> String {
    browser.fill("#prompt", prompt).await;
    browser.click("#start").await;
    browser
        .wait_until(
            "a started run",
            "return /^[0-9a-f-]{36}$/.test(document.getElementById('run-id').textContent);",
        )
        .await;
    text_of(browser, "run-id").await
}

/// Fails on any console error, and on any request to anything but the app itself.
async fn assert_clean(browser: &mut Browser, app: &TestApp) {
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let own_ws = app.address.replacen("http://", "ws://", 1);
    let requests = browser.requests().await;
    assert!(!requests.is_empty());
    // Network requests only: the browser's own `chrome://` pages (its first tab) and the
    // page's `data:` favicon never leave the machine.
    let foreign: Vec<&String> = requests
        .iter()
        .filter(|url| ["http:", "https:", "ws:", "wss:"].iter().any(|scheme| url.starts_with(scheme)))
        .filter(|url| {
            !url.starts_with(&format!("{}/", app.address)) && !url.starts_with(&format!("{own_ws}/"))
        })
        .collect();
    assert!(foreign.is_empty(), "requests beyond the app: {foreign:?}");
}

/// The run's events as the REST API lists them: `(seq, kind)`.
async fn stored_events(app: &TestApp, token: &str, run: &str) -> Vec<(u64, String)> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor.as_ref().map_or_else(String::new, |cursor| format!("&cursor={cursor}"));
        let page =
            json_of(app.get(&format!("/v1/runs/{run}/events?limit=100{query}"), token).await, 200).await;
        events.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|event| (event["seq"].as_u64().unwrap(), event["kind"].as_str().unwrap().to_owned())),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return events,
        }
    }
}

#[tokio::test]
async fn browser_the_page_loads_from_the_server_alone_mints_a_token_and_starts_an_echo_run() {
    let app = spawn_app_with(Store::Sqlite, &[("SBA_DEMO__WORDS_PER_SECOND", "200")]).await;
    let mut browser = Browser::start().await;
    open_playground(&mut browser, &app).await;
    assert_clean(&mut browser, &app).await;
    let requests = browser.requests().await;
    for path in [PAGE, "/playground/app.js", "/playground/app.css", "/dev/token"] {
        assert!(requests.contains(&app.url(path)), "{path} was not requested: {requests:?}");
    }

    let prompt = "hello from a real browser";
    let run = start_run(&browser, prompt).await;
    // The run is the page's token's: an echo run of the default tenant's playground user.
    let token = app.token(DEFAULT_TENANT.parse().unwrap(), DEFAULT_USER, Role::Authenticated);
    let stored = json_of(app.get(&format!("/v1/runs/{run}"), &token).await, 200).await;
    assert_eq!(
        (&stored["agent"], &stored["user_id"], &stored["input"]),
        (&json!("echo"), &json!(DEFAULT_USER), &json!(prompt))
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stored = json_of(app.get(&format!("/v1/runs/{run}"), &token).await, 200).await;
        if stored["status"] == "completed" {
            assert_eq!(stored["output"], json!({"text": prompt}));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the echo run did not complete: {stored}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn browser_deltas_stream_in_order_resume_replays_without_duplicates_and_cancel_ends_the_run() {
    // 20 words a second and 400 words: the run lasts 20 s, so cancel lands mid-run.
    let app = spawn_app_with(Store::Sqlite, &[("SBA_DEMO__WORDS_PER_SECOND", "20")]).await;
    let mut browser = Browser::start().await;
    open_playground(&mut browser, &app).await;
    let prompt = words(400);
    let run = start_run(&browser, &prompt).await;

    wait_for_subscription(&browser).await;
    browser
        .wait_until(
            "five deltas",
            "return document.querySelectorAll('#events tr[data-kind=\"step.delta\"]').length >= 5;",
        )
        .await;

    // Disconnect: nothing arrives while the agent goes on; Resume continues after the last seq.
    browser.click("#disconnect").await;
    let at_disconnect = last_seq(&browser).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(last_seq(&browser).await, at_disconnect, "events arrived while disconnected");
    assert_eq!(
        browser.eval("return document.getElementById('resume-seq').value;").await,
        json!(at_disconnect.to_string()),
        "Resume is offered from the last seq seen"
    );
    browser.click("#resume").await;
    browser
        .wait_until(
            "the events missed while disconnected, and more",
            &format!(
                "return Number(document.getElementById('last-seq').textContent) >= {};",
                at_disconnect + 15
            ),
        )
        .await;

    browser.click("#cancel").await;
    browser
        .wait_until(
            "the run.cancelled event",
            "return document.querySelector('#events tr[data-kind=\"run.cancelled\"]') !== null
                && document.getElementById('run-status').dataset.status === 'cancelled';",
        )
        .await;

    let shown = rows(&browser).await;
    assert_eq!(text_of(&browser, "duplicates").await, "0");
    assert_each_seq_once_in_order(&shown);
    let kinds: Vec<&str> = shown.iter().map(|(_, _, kind)| kind.as_str()).collect();
    assert_eq!(kinds[..3], ["run.created", "run.started", "step.created"]);
    assert_eq!(kinds.last(), Some(&"run.cancelled"));
    assert!(
        kinds[3..kinds.len() - 1].iter().all(|kind| *kind == "step.delta"),
        "cancelled mid-stream: {kinds:?}"
    );
    let text = assert_text_is_the_echoed_prefix(&browser, &shown, &prompt).await;
    assert_shown_as_stored(&app, &run, &shown).await;

    // Resume from an earlier seq: the page drops what follows it and the replay restores it,
    // each event once.
    browser.fill("#resume-seq", "3").await;
    browser.click("#resume").await;
    let last = shown.last().map(|(_, seq, _)| *seq).unwrap();
    browser
        .wait_until(
            "the replay after seq 3",
            &format!(
                "return Number(document.getElementById('last-seq').textContent) === {last}
                    && document.getElementById('connection-status').textContent.includes('subscribed');"
            ),
        )
        .await;
    let replayed = rows(&browser).await;
    assert_each_seq_once_in_order(&replayed);
    let kinds_again: Vec<&str> = replayed.iter().map(|(_, _, kind)| kind.as_str()).collect();
    assert_eq!(kinds_again, kinds);
    assert_eq!(text_of(&browser, "text").await, text);
    assert_eq!(text_of(&browser, "duplicates").await, "0");
    assert_eq!(text_of(&browser, "run-status").await, "cancelled");

    assert_clean(&mut browser, &app).await;
    let ws = app.address.replacen("http://", "ws://", 1);
    assert!(
        browser.requests().await.contains(&format!("{ws}/v1/stream")),
        "the page streamed through GET /v1/stream"
    );
}
