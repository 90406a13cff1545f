//! The deployment files against the code they deploy: every `sba` service of
//! `deploy/compose.yaml` passes `sba config check` with exactly its environment, the
//! `Dockerfile` copies files that exist from stages it defines, `sba healthcheck` probes a
//! running server, and the alert rules and the Grafana dashboard query only metrics and
//! labels that a running node exports (`promtool` checks their syntax:
//! `scripts/check-deploy.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use sba_delivery::startup::Worker;
use sba_infrastructure::redis::test_support::{admin_client, drop_queue_group, new_queue_group, redis_url};
use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Store, TestApp, json_of, process_text, sba_process, spawn_app, spawn_app_with};
use crate::stream;

/// What an operator's `deploy/.env` holds for the variables compose requires, plus one JWT
/// key; every optional variable stays unset, so compose uses its default or leaves it out.
const DEPLOY_ENV: &[(&str, &str)] = &[
    ("POSTGRES_PASSWORD", "5f0c7a3e9b1d4e2f8a6c0b9d7e3f1a2c"),
    ("REDIS_PASSWORD", "9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a"),
    ("SUPABASE_URL", "https://abcdefghijklmnop.supabase.co"),
    ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key-of-the-project"),
    ("SUPABASE_JWT_SECRET", "the-projects-jwt-secret-of-at-least-32-bytes"),
    ("SBA_AUTH__ISSUER", "https://abcdefghijklmnop.supabase.co/auth/v1"),
    ("SBA_CORS__ALLOWED_ORIGINS", "https://app.example.com"),
    ("GRAFANA_ADMIN_PASSWORD", "grafana-admin-password"),
];

fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_path(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A YAML file of the repository with its `<<` merge keys applied, as compose reads it.
/// A merged mapping may bring a merge key of its own (an anchor built on another anchor):
/// merging repeats until nothing changes.
fn yaml(path: &str) -> Yaml {
    let mut value: Yaml = serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    loop {
        let before = value.clone();
        value.apply_merge().unwrap();
        if value == before {
            return value;
        }
    }
}

fn text_of(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn strings(value: &Yaml) -> Vec<String> {
    value.as_sequence().map(|items| items.iter().map(text_of).collect()).unwrap_or_default()
}

/// `text` with compose's interpolation applied: `$$`, `${NAME}`, `${NAME:-default}` and
/// `${NAME:?message}` (an empty variable counts as unset, as in compose).
fn interpolate(text: &str, env: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let body = after
            .strip_prefix('{')
            .unwrap_or_else(|| panic!("a bare `$` in {text:?}: write $$ or ${{NAME}}"));
        let end = body.find('}').unwrap_or_else(|| panic!("an unclosed `${{` in {text:?}"));
        let expression = &body[..end];
        let name_end =
            expression.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expression.len());
        let (name, operator) = expression.split_at(name_end);
        let value = env.get(name).copied().filter(|v| !v.is_empty());
        let substituted = if operator.is_empty() {
            value.unwrap_or_default().to_owned()
        } else if let Some(default) = operator.strip_prefix(":-") {
            value.unwrap_or(default).to_owned()
        } else if let Some(message) = operator.strip_prefix(":?") {
            value
                .unwrap_or_else(|| panic!("compose refuses to start: {name} is required ({message})"))
                .to_owned()
        } else {
            panic!("an interpolation this test does not know: ${{{expression}}}")
        };
        out.push_str(&substituted);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Runs the `sba` binary with exactly `env` (nothing inherited), from an empty directory.
fn sba(args: &[&str], env: &[(String, String)]) -> Output {
    let (mut command, _) = sba_process(args);
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).output().unwrap()
}

/// The services of the compose file that run the `sba` image, with their command.
fn sba_services(compose: &Yaml) -> BTreeMap<String, (Vec<String>, &Yaml)> {
    compose["services"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, service)| service["image"].as_str().is_some_and(|image| image.contains("SBA_IMAGE")))
        .map(|(name, service)| (text_of(name), (strings(&service["command"]), service)))
        .collect()
}

/// The environment compose gives `service`'s container: values interpolated, and a key
/// without a value passed on from compose's own environment, or left out when unset there.
fn container_environment(
    name: &str,
    service: &Yaml,
    deploy_env: &BTreeMap<&str, &str>,
) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{name} has no environment mapping"))
        .iter()
        .filter_map(|(key, value)| {
            let key = text_of(key);
            match value {
                Yaml::Null => deploy_env.get(key.as_str()).map(|v| (key.clone(), (*v).to_owned())),
                value => Some((key, interpolate(&text_of(value), deploy_env))),
            }
        })
        .collect()
}

#[test]
fn every_sba_service_of_the_compose_file_passes_config_check_with_its_own_environment() {
    let compose = yaml("deploy/compose.yaml");
    let deploy_env: BTreeMap<&str, &str> = DEPLOY_ENV.iter().copied().collect();
    let services = sba_services(&compose);
    let commands: BTreeMap<&str, String> =
        services.iter().map(|(name, (command, _))| (name.as_str(), command.join(" "))).collect();
    assert_eq!(
        commands,
        BTreeMap::from([
            ("api-1", "serve".into()),
            ("api-2", "serve".into()),
            ("migrate", "migrate up".into()),
            ("worker", "worker".into())
        ])
    );
    for (name, (_, service)) in &services {
        let environment = container_environment(name, service, &deploy_env);
        let output = sba(&["config", "check"], &environment);
        let text = process_text(&output);
        assert_eq!(output.status.code(), Some(0), "`sba config check` as {name}:\n{text}");
        assert!(
            text.lines().any(|l| l.starts_with("environment") && l.ends_with("= production")),
            "{name}:\n{text}"
        );
        assert!(!text.contains("warning:"), "{name} has settings sba warns about:\n{text}");
        if name.starts_with("api-") {
            let admin_port = text.lines().find(|l| l.starts_with("server.admin_port")).unwrap_or_default();
            assert!(admin_port.contains("= 9090 "), "{name}:\n{text}");
        }
    }
}

#[test]
fn every_variable_the_compose_file_reads_is_in_the_env_example() {
    let compose = read("deploy/compose.yaml");
    let example = read("deploy/env.example");
    let listed: BTreeSet<&str> = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    let mut read_vars: BTreeSet<String> = compose
        .split("${")
        .skip(1)
        .map(|rest| rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap().to_owned())
        .collect();
    // Keys without a value are passed on from compose's environment.
    let parsed = yaml("deploy/compose.yaml");
    for (_, service) in parsed["services"].as_mapping().unwrap() {
        for (key, value) in service["environment"].as_mapping().into_iter().flatten() {
            if value.is_null() {
                read_vars.insert(text_of(key));
            }
        }
    }
    let listed: BTreeSet<String> = listed.into_iter().map(str::to_owned).collect();
    assert!(!read_vars.is_empty());
    let missing: Vec<_> = read_vars.difference(&listed).collect();
    assert!(missing.is_empty(), "deploy/env.example does not list {missing:?}");
}

#[test]
fn compose_redis_keeps_an_append_only_file_and_never_evicts() {
    let compose = yaml("deploy/compose.yaml");
    let command = strings(&compose["services"]["redis"]["command"]).join(" ");
    for setting in
        ["--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction", "--requirepass"]
    {
        assert!(command.contains(setting), "{setting} missing from the Redis command: {command}");
    }
    assert!(text_of(&compose["services"]["redis"]["image"]).starts_with("redis:7"));
}

#[test]
fn prometheus_scrapes_the_admin_port_of_every_api_node_and_grafana_loads_the_dashboard() {
    let compose = yaml("deploy/compose.yaml");
    let api_targets: BTreeSet<String> = sba_services(&compose)
        .iter()
        .filter(|(_, (command, _))| command == &["serve"])
        .map(|(name, (_, service))| {
            format!("{name}:{}", text_of(&service["environment"]["SBA_SERVER__ADMIN_PORT"]))
        })
        .collect();
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(job["job_name"].as_str(), Some("sba-api"), "the alerts select job=\"sba-api\"");
    let targets: BTreeSet<String> = strings(&job["static_configs"][0]["targets"]).into_iter().collect();
    assert_eq!(targets, api_targets);
    assert_eq!(strings(&prometheus["rule_files"]), ["alerts.yml"]);

    let grafana = &compose["services"]["grafana"];
    let mounts = strings(&grafana["volumes"]);
    assert!(
        mounts.contains(&"./grafana/sba.json:/etc/grafana/dashboards/sba.json:ro".to_owned()),
        "{mounts:?}"
    );
    let provider = yaml("deploy/grafana/provisioning/dashboards/sba.yml");
    assert_eq!(provider["providers"][0]["options"]["path"].as_str(), Some("/etc/grafana/dashboards"));
    let source = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let uid = source["datasources"][0]["uid"].as_str().unwrap();
    let dashboard = dashboard();
    for panel in dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], uid, "{}", panel["title"]);
    }
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile_instructions() -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            current.push_str(start);
        } else {
            current.push_str(line);
            instructions.push(std::mem::take(&mut current));
        }
    }
    instructions
}

#[test]
fn the_dockerfile_copies_files_that_exist_from_stages_it_defines() {
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains('*'))
        .map(|l| l.trim().trim_end_matches('/').to_owned())
        .collect();
    let mut stages = Vec::new();
    let mut copies = 0;
    for instruction in dockerfile_instructions() {
        let words: Vec<&str> = instruction.split_whitespace().collect();
        match words[0] {
            "FROM" => {
                assert_eq!(words.get(2).map(|w| w.to_ascii_uppercase()), Some("AS".into()), "{instruction}");
                stages.push(words[3].to_owned());
            }
            "COPY" => {
                copies += 1;
                let from = words.iter().find_map(|w| w.strip_prefix("--from="));
                let paths: Vec<&str> = words[1..].iter().copied().filter(|w| !w.starts_with("--")).collect();
                let (sources, _destination) = paths.split_at(paths.len() - 1);
                if let Some(stage) = from {
                    assert!(stages.iter().any(|s| s == stage), "{instruction}: no earlier stage {stage}");
                    continue;
                }
                for source in sources {
                    assert!(repo_path(source).exists(), "{instruction}: {source} is not in the repository");
                    let excluded =
                        ignored.iter().any(|i| source == i || source.starts_with(&format!("{i}/")));
                    assert!(
                        !excluded,
                        "{instruction}: .dockerignore leaves {source} out of the build context"
                    );
                }
            }
            _ => {}
        }
    }
    assert_eq!(stages, ["builder", "runtime"]);
    assert!(copies >= 4);
    let instructions = dockerfile_instructions().join("\n");
    for expected in [
        "-p sba-delivery --bin sba",
        "ENTRYPOINT [\"sba\"]",
        "CMD [\"serve\"]",
        "CMD [\"sba\", \"healthcheck\"]",
        "USER 10001:10001",
        "EXPOSE 8080",
    ] {
        assert!(instructions.contains(expected), "the Dockerfile lacks {expected}");
    }
    let manifest = read("crates/delivery/Cargo.toml");
    assert!(
        manifest.contains("name = \"sba-delivery\"") && manifest.contains("name = \"sba\""),
        "{manifest}"
    );
}

const LIVENESS: &[&str] = &["healthcheck"];
const READINESS: &[&str] = &["healthcheck", "--ready"];

/// `sba healthcheck` with `args` and `PORT=port`, off the runtime that serves the app.
async fn healthcheck(args: &'static [&'static str], port: u16) -> Output {
    let env = vec![("PORT".to_owned(), port.to_string())];
    tokio::task::spawn_blocking(move || sba(args, &env)).await.unwrap()
}

#[tokio::test]
async fn sba_healthcheck_exits_0_while_the_server_answers_and_1_when_nothing_listens() {
    let mut app = spawn_app(Store::Sqlite).await;
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    for args in [LIVENESS, READINESS] {
        let output = healthcheck(args, port).await;
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", process_text(&output));
    }
    app.stop();

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = healthcheck(LIVENESS, closed).await;
    assert_eq!(output.status.code(), Some(1), "{}", process_text(&output));
    assert!(process_text(&output).contains("/healthz"), "{}", process_text(&output));
}

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/sba.json")).unwrap()
}

/// Every Prometheus query of the alert rules and of the dashboard, with where it is.
fn queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for group in yaml("deploy/prometheus/alerts.yml")["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            queries.push((format!("alert {}", text_of(&rule["alert"])), text_of(&rule["expr"])));
        }
    }
    for panel in dashboard()["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((format!("panel {}", panel["title"]), target["expr"].as_str().unwrap().to_owned()));
        }
    }
    queries
}

/// The label names of a `{name="value", ...}` block at the start of `text` (matchers with
/// `=`, `!=`, `=~`, `!~`; values quoted, with escapes), and the rest of `text` after it.
fn label_block(text: &str) -> (BTreeSet<String>, &str) {
    let mut names = BTreeSet::new();
    let mut rest = text.strip_prefix('{').unwrap();
    loop {
        rest = rest.trim_start_matches([' ', ',', '\n']);
        if let Some(after) = rest.strip_prefix('}') {
            return (names, after);
        }
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap();
        names.insert(rest[..name_end].to_owned());
        let value = rest[name_end..].trim_start_matches([' ', '=', '!', '~']).strip_prefix('"').unwrap();
        let mut escaped = false;
        let close = value
            .char_indices()
            .find(|&(_, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            })
            .unwrap()
            .0;
        rest = &value[close + 1..];
    }
}

/// The `sba_*` metrics `query` selects, each with the label names it matches on.
fn selected(query: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut selected = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("sba_") {
        let preceded_by_word =
            rest[..at].chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let (name, after) = tail.split_at(end);
        rest = after;
        if preceded_by_word {
            continue;
        }
        let labels = if after.starts_with('{') {
            let (labels, after_block) = label_block(after);
            rest = after_block;
            labels
        } else {
            BTreeSet::new()
        };
        selected.push((name.to_owned(), labels));
    }
    selected
}

/// Every series name of a Prometheus text page (`x`, `x_sum`, `x_count` for a summary)
/// with the label names its series carry.
fn exported(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in page.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let end = line.find(['{', ' ']).unwrap();
        let labels = if line[end..].starts_with('{') { label_block(&line[end..]).0 } else { BTreeSet::new() };
        exported.entry(line[..end].to_owned()).or_default().extend(labels);
    }
    exported
}

/// Metrics a node registers only when something goes wrong (or under load this test does
/// not make), so no healthy node exports them: each must at least be registered in the
/// source, under this exact name.
const FAILURE_ONLY: &[(&str, &str)] = &[
    ("sba_ratelimit_fallback_active", "set when the limiter's Redis breaker opens"),
    ("sba_ratelimit_redis_errors_total", "a failed Redis limiter decision"),
    ("sba_events_publish_failures_total", "a failed live publication"),
    ("sba_events_republished_total", "a publication retried after a failure"),
    ("sba_audit_write_failures_total", "an audit entry that could not be stored"),
    ("sba_ws_coalesced_deltas_total", "a client behind its high-water mark"),
    ("sba_ws_throttled_total", "a tenant over its broadcast rate"),
];

/// Whether `name` is registered by a `metrics::counter!`/`gauge!`/`histogram!` of the crates'
/// sources (the quoted name appears in a source file).
fn registered_in_source(name: &str) -> bool {
    fn walk(dir: &Path, needle: &str) -> bool {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, needle)
            } else {
                path.extension().is_some_and(|e| e == "rs")
                    && std::fs::read_to_string(&path).unwrap().contains(needle)
            }
        })
    }
    ["crates/application/src", "crates/infrastructure/src", "crates/delivery/src"]
        .iter()
        .any(|dir| walk(&repo_path(dir), &format!("\"{name}\"")))
}

/// Drives what makes a node register its metrics: a run, an ingest with a delta the
/// worker skips (unknown step), a WebSocket subscriber that receives the events and closes,
/// and a readiness probe (the worker of the test stores the events meanwhile).
async fn drive_traffic(app: &TestApp) {
    let run = stream::new_run(app).await;
    let mut client = stream::connect(app, &run.user).await;
    client.subscribe(&run.channel(), None).await;
    let mut events = stream::opening();
    events.push(stream::delta("d1", "s1", "hello"));
    events.push(stream::delta("d2", "no-such-step", "skipped by the worker"));
    let last = stream::ingest(app, &run, &events).await;
    client.events_through(last).await;
    client.send_raw(Message::Close(None)).await;
    client.closed().await;
    json_of(app.get_anonymous("/readyz").await, 200).await;
}

#[tokio::test]
async fn alerts_and_dashboard_query_only_metrics_and_labels_a_node_exports() {
    let app = spawn_app_with(
        Store::Postgres,
        &[("REDIS_URL", &redis_url()), ("SBA_WORKER__POLL_INTERVAL", "10ms")],
    )
    .await;
    // A worker in a consumer group of its own (the `persisters` group is every test's).
    let partitions = app.settings.events.partitions;
    let admin = admin_client().await;
    let group = new_queue_group(&admin, partitions).await;
    let worker = Worker::build_in_group(&app.settings, &group).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    drive_traffic(&app).await;

    let wanted: BTreeMap<String, BTreeSet<String>> = queries()
        .iter()
        .flat_map(|(_, query)| selected(query))
        .filter(|(name, _)| !FAILURE_ONLY.iter().any(|(f, _)| f == name))
        .fold(BTreeMap::new(), |mut wanted, (name, labels)| {
            wanted.entry(name).or_default().extend(labels);
            wanted
        });
    // Some series appear only once the connection's close or the worker's pass is recorded.
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let page = app.get_anonymous("/metrics").await.text().await.unwrap();
        let names = exported(&page);
        if wanted.keys().all(|name| names.contains_key(name)) || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.send(()).unwrap();
    running.await.unwrap();
    drop_queue_group(&admin, &group, partitions).await;

    let exported = exported(&page);
    for (name, labels) in &wanted {
        let Some(has) = exported.get(name) else {
            panic!("{name} is queried but the node does not export it; it exports:\n{page}")
        };
        let unknown: Vec<_> = labels.difference(has).collect();
        assert!(unknown.is_empty(), "{name} is queried with labels {unknown:?} it does not have ({has:?})");
    }
    let queried: BTreeSet<String> =
        queries().iter().flat_map(|(_, q)| selected(q)).map(|(name, _)| name).collect();
    for (name, why) in FAILURE_ONLY {
        assert!(queried.contains(*name), "{name} is listed as failure-only but nothing queries it");
        assert!(registered_in_source(name), "{name} ({why}) is not registered anywhere in the sources");
    }

    // Every metric the node exports is explained in the operations doc (a summary's `_sum`
    // and `_count` series belong to it).
    let operations = read("docs/operations.md");
    let undocumented: BTreeSet<&str> = exported
        .keys()
        .filter(|name| name.starts_with("sba_"))
        .map(|name| {
            let base = name.strip_suffix("_sum").or_else(|| name.strip_suffix("_count"));
            base.filter(|base| exported.contains_key(*base)).unwrap_or(name)
        })
        .filter(|name| {
            !operations.contains(&format!("`{name}`")) && !operations.contains(&format!("`{name}{{"))
        })
        .collect();
    assert!(undocumented.is_empty(), "exported but not described in docs/operations.md: {undocumented:?}");
}

#[test]
fn the_query_parsers_find_metrics_and_their_labels() {
    let query =
        r#"sum by (route) (rate(sba_http_requests_total{status=~"5..", route!~"/a|/b{x}"}[5m])) / sba_x"#;
    assert_eq!(
        selected(query),
        [
            ("sba_http_requests_total".to_owned(), BTreeSet::from(["status".to_owned(), "route".to_owned()])),
            ("sba_x".to_owned(), BTreeSet::new()),
        ]
    );
    let page = "# TYPE a counter\na_total{route=\"/v1/runs/{run_id}\",status=\"200\"} 3\nb_sum 1.5\n";
    assert_eq!(
        exported(page),
        BTreeMap::from([
            ("a_total".to_owned(), BTreeSet::from(["route".to_owned(), "status".to_owned()])),
            ("b_sum".to_owned(), BTreeSet::new()),
        ])
    );
    let env = BTreeMap::from([("A", "1"), ("EMPTY", "")]);
    assert_eq!(interpolate("x${A}y$${B:-d}${EMPTY:-e}${B:-f}", &env), "x1y${B:-d}ef");
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation but `-` and `_` dropped,
/// spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook_heading_in_the_operations_doc() {
    let mut in_code = false;
    let anchors: BTreeSet<String> = read("docs/operations.md")
        .lines()
        .filter(|line| {
            in_code ^= line.starts_with("```");
            !in_code && line.starts_with('#')
        })
        .map(anchor)
        .collect();
    assert!(anchors.contains("runbook-redis-loss"), "{anchors:?}");
    let mut alerts = 0;
    for group in yaml("deploy/prometheus/alerts.yml")["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            alerts += 1;
            let name = text_of(&rule["alert"]);
            let severity = text_of(&rule["labels"]["severity"]);
            assert!(["critical", "warning", "info"].contains(&severity.as_str()), "{name}: {severity}");
            assert!(!text_of(&rule["annotations"]["summary"]).is_empty(), "{name} has no summary");
            let url = text_of(&rule["annotations"]["runbook_url"]);
            let target = url.strip_prefix("docs/operations.md#").unwrap_or_else(|| panic!("{name}: {url}"));
            assert!(anchors.contains(target), "{name}: no heading #{target} in docs/operations.md");
        }
    }
    assert!(alerts >= 10);
    assert_eq!(anchor("### `event_bus`: live events between nodes"), "event_bus-live-events-between-nodes");
}
