//! A real headless Chromium for the playground's browser tests, driven through chromedriver
//! over the W3C `WebDriver` HTTP protocol (the few commands the tests need, on reqwest).
//!
//! Debian's `chromium` and `chromium-driver` are required: `scripts/test.sh` installs them
//! (`scripts/install-chromium.sh`), and a missing one fails the test with that instruction
//! rather than skipping it. `SBA_CHROMIUM` and `SBA_CHROMEDRIVER` name other binaries.

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

/// The key of an element reference in `WebDriver` answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a wait for the page lasts before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One browser session, with its chromedriver. Dropping it kills chromedriver's whole
/// process group (Chromium included) and deletes the profile, even when a test panicked.
pub struct Browser {
    driver: Child,
    /// The process group chromedriver leads (its id).
    group: u32,
    session: String,
    client: reqwest::Client,
    profile: PathBuf,
    /// Console messages and request URLs read so far (reading the logs empties them).
    console: Vec<Value>,
    requests: Vec<String>,
}

fn binary(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: the playground's browser test needs Debian's chromium and chromium-driver. \
         Run scripts/install-chromium.sh (scripts/test.sh does), or set {variable}.",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with the browser console and
    /// network logs on.
    pub async fn start() -> Self {
        let chromium = binary("SBA_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("SBA_CHROMEDRIVER", "/usr/bin/chromedriver");
        let profile = std::env::temp_dir().join(format!("sba-api-test-{}-chromium", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).unwrap();
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that Drop ends Chromium with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let group = driver.id();
        let client = reqwest::Client::builder().timeout(Duration::from_mins(1)).build().unwrap();
        let mut browser = Self {
            driver,
            group,
            session: String::new(),
            client,
            profile,
            console: Vec::new(),
            requests: Vec::new(),
        };
        let base = format!("http://127.0.0.1:{port}");
        browser.wait_for_driver(&base).await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Tests run as root in containers, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-crash-reporter",
                    "--disable-breakpad",
                    "--window-size=1200,1400",
                    format!("--user-data-dir={}", browser.profile.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        }}});
        let created =
            browser.send(reqwest::Method::POST, &format!("{base}/session"), Some(capabilities)).await;
        let id = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}"));
        browser.session = format!("{base}/session/{id}");
        browser
    }

    async fn wait_for_driver(&self, base: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(response) = self.client.get(format!("{base}/status")).send().await
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not start within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends one command; its `value`, or a panic naming the `WebDriver` error.
    async fn send(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let request = self.client.request(method, url);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response = request.send().await.unwrap_or_else(|e| panic!("WebDriver {url}: {e}"));
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or_else(|e| panic!("WebDriver {url}: {e}"));
        assert!(status.is_success(), "WebDriver {url} answered {status}: {}", answer["value"]);
        answer["value"].clone()
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::POST, &format!("{}{path}", self.session), Some(body)).await
    }

    pub async fn goto(&self, url: &str) {
        self.command("/url", json!({ "url": url })).await;
    }

    async fn element(&self, css: &str) -> String {
        let found = self.command("/element", json!({"using": "css selector", "value": css})).await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned()
    }

    pub async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.command(&format!("/element/{element}/click"), json!({})).await;
    }

    /// Replaces the text of the input `css` with `text`, as typed.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.command(&format!("/element/{element}/clear"), json!({})).await;
        self.command(&format!("/element/{element}/value"), json!({ "text": text })).await;
    }

    /// The value of `script` (a function body: `return ...;`) run in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.command("/execute/sync", json!({"script": script, "args": []})).await
    }

    /// Waits until `script` returns `true`; on timeout, fails with `what` and the page's
    /// messages.
    pub async fn wait_until(&self, what: &str, script: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.eval(script).await != true {
            if tokio::time::Instant::now() >= deadline {
                let messages = self.eval("return document.getElementById('messages').innerText;").await;
                let connection =
                    self.eval("return document.getElementById('connection-status').innerText;").await;
                panic!(
                    "the page did not get to: {what} within {PATIENCE:?}; connection: {connection}; messages:\n{messages}"
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn log(&self, kind: &str) -> Vec<Value> {
        let entries = self.command("/se/log", json!({ "type": kind })).await;
        entries.as_array().cloned().unwrap_or_default()
    }

    /// Every console message of level `SEVERE` (errors, failed loads, refused policies) so far.
    pub async fn console_errors(&mut self) -> Vec<String> {
        let entries = self.log("browser").await;
        self.console.extend(entries);
        self.console
            .iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The URL of every request the page made so far, WebSocket connections included.
    pub async fn requests(&mut self) -> Vec<String> {
        for entry in self.log("performance").await {
            let Some(text) = entry["message"].as_str() else { continue };
            let message: Value = serde_json::from_str(text).unwrap();
            let params = &message["message"]["params"];
            let url = match message["message"]["method"].as_str() {
                Some("Network.requestWillBeSent") => &params["request"]["url"],
                Some("Network.webSocketCreated") => &params["url"],
                _ => continue,
            };
            self.requests.extend(url.as_str().map(str::to_owned));
        }
        self.requests.clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium processes it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.group)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
