//! Alerts end to end: a rule fires on data posted to the real binary and a
//! local HTTP server stands in for Slack. The alert is delivered once, after
//! a 429 with `Retry-After` (and not sooner), is not repeated while firing
//! nor re-sent after a restart, resolves when new data makes the condition
//! false, and the webhook URL never appears in the server's output. A
//! generic JSON webhook gets the same transitions as Alertmanager-style
//! payloads.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestServer, client_script, python};

const SECRET: &str = "XyZsecretToken42";

struct FakeSlack {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl FakeSlack {
    fn start(dir: &std::path::Path, name: &str) -> FakeSlack {
        let log = dir.join(format!("{name}.jsonl"));
        let mut child = Command::new(python())
            .arg(client_script("fake_slack.py"))
            .args(["--log", log.to_str().expect("utf-8")])
            .args(["--path", &format!("/services/T0/B0/{SECRET}")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start fake slack");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        FakeSlack {
            child,
            port: line.trim().parse().expect("port number"),
            log,
        }
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.requests();
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn invocation(status: &str, request_id: &str) -> Value {
    json!({
        "time": chrono_now_ms(), "function_name": "checkout", "request_id": request_id,
        "provider": "aws", "region": "us-east-1", "architecture": "x86_64",
        "duration_ms": 1000.0, "billed_duration_ms": 1000, "memory_size_mb": 1024,
        "max_memory_used_mb": 100, "status": status
    })
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn delivered(r: &[Value], marker: &str) -> usize {
    r.iter()
        .filter(|x| x["status"] == 200 && x["body"].to_string().contains(marker))
        .count()
}

/// The shipped rules (`./rules`) on a fresh data directory: every rule
/// evaluates at once on its own task and saves the alert state, and the
/// start logs no error (the saves used to trip over each other's temporary
/// file: "could not save the alert state … No such file or directory").
#[test]
fn the_shipped_rules_start_on_a_fresh_data_directory_without_errors() {
    let rules = crate::support::repo_root().join("rules");
    let server = TestServer::builder()
        .args(&["--rules-dir", rules.to_str().expect("utf-8")])
        .start();
    let loaded = server.wait_for_log("rules loaded");
    let count: f64 = loaded
        .split("rules=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("rules=N in the log");
    assert!(count >= 10.0, "{count} rules");
    crate::support::wait_until("every rule to evaluate", || {
        server
            .metric("faasight_rule_evaluations_total")
            .is_some_and(|n| n >= count)
    });
    let log = server.log();
    assert!(!log.contains(" ERROR "), "{log}");
    // Nothing to recommend on no data: a total of 0, not -0.
    let (status, recs) = server.get("/api/v1/recommendations");
    assert_eq!(status, 200, "{recs}");
    assert!(recs.contains(r#""total_savings_usd_month":0.0"#), "{recs}");
    let state = std::fs::read(server.data_dir.join("alerts/state.json")).expect("state");
    serde_json::from_slice::<Value>(&state).expect("the saved state is JSON");
}

#[test]
fn slack_gets_one_message_per_state_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slack = FakeSlack::start(dir.path(), "slack");
    // A generic JSON webhook (Alertmanager-like), its URL read from a file.
    let hook = FakeSlack::start(dir.path(), "hook");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("rules dir");
    std::fs::write(
        rules.join("failing.yaml"),
        r#"rules:
  - name: failing_functions
    description: More failed than successful invocations; look at the errors.
    every: 1s
    for: 0s
    severity: critical
    sql: |
      SELECT function_name,
        sum(CASE WHEN status <> 'ok' THEN 1 ELSE -1 END) AS value,
        sum(CASE WHEN status <> 'ok' THEN cost_usd ELSE 0 END) * 1000000 AS savings_usd_month
      FROM invocations GROUP BY function_name
    condition: value > 0
    message: "{{function_name}} is failing ({{savings_usd_month | dollars}} a month)"
    notify: [slack, hook]
"#,
    )
    .expect("rule file");
    let config = dir.path().join("faasight.toml");
    std::fs::write(
        &config,
        format!(
            "grafana_url = \"http://grafana.example:3000\"\n\n[[notifiers]]\nname = \"slack\"\nkind = \"slack\"\nwebhook_url_env = \"SLACK_WEBHOOK_URL\"\n\n[[notifiers]]\nname = \"hook\"\nkind = \"webhook\"\nwebhook_url_file = \"{}\"\n",
            dir.path().join("hook-url").display()
        ),
    )
    .expect("config");
    let url = format!("http://127.0.0.1:{}/services/T0/B0/{SECRET}", slack.port);
    std::fs::write(
        dir.path().join("hook-url"),
        format!("http://127.0.0.1:{}/services/T0/B0/{SECRET}\n", hook.port),
    )
    .expect("hook url file");
    let data = dir.path().join("data");
    let mut server = TestServer::builder()
        .data_dir(&data)
        .args(&[
            "--config",
            config.to_str().expect("utf-8"),
            "--rules-dir",
            rules.to_str().expect("utf-8"),
        ])
        .env("SLACK_WEBHOOK_URL", &url)
        .start();
    server.wait_for_log("rules loaded");

    let (status, body) = server.post_json(
        "/v1/invocations",
        &[],
        &json!([invocation("error", "r1")]).to_string(),
    );
    assert_eq!(status, 200, "{body}");

    // First attempt: 429 with Retry-After: 2; the retry comes no sooner.
    let r = slack.wait_for("the firing message", |r| {
        delivered(r, "checkout is failing") == 1
    });
    assert_eq!(r[0]["status"], 429, "{r:?}");
    assert_eq!(r[1]["status"], 200);
    let gap = r[1]["time"].as_f64().expect("t") - r[0]["time"].as_f64().expect("t");
    assert!(gap >= 1.95, "retried after {gap:.2} s, before Retry-After");
    let msg = &r[1]["body"];
    assert_eq!(r[1]["content_type"], "application/json");
    assert!(
        msg["text"]
            .as_str()
            .is_some_and(|t| t.contains("failing_functions")),
        "{msg}"
    );
    let blocks = msg["blocks"].to_string();
    assert!(
        blocks.contains("CRITICAL · failing_functions (1)"),
        "{blocks}"
    );
    assert!(blocks.contains("*Function*\\ncheckout"), "{blocks}");
    assert!(blocks.contains("/ month"), "{blocks}");
    assert!(
        blocks.contains("http://grafana.example:3000/d/faasight-overview"),
        "{blocks}"
    );
    assert!(blocks.contains("look at the errors"), "{blocks}");

    // The API shows the firing alert; nothing more is sent while it fires.
    let alerts: Value = reqwest::blocking::get(format!("http://{}/api/v1/alerts", server.api))
        .expect("alerts")
        .json()
        .expect("json");
    let a = &alerts["alerts"][0];
    assert_eq!(a["rule"], "failing_functions");
    assert_eq!(a["state"], "firing");
    assert_eq!(a["labels"]["function_name"], "checkout");
    assert_eq!(a["value"], 1.0);
    let recs: Value =
        reqwest::blocking::get(format!("http://{}/api/v1/recommendations", server.api))
            .expect("recommendations")
            .json()
            .expect("json");
    assert_eq!(recs["recommendations"][0]["rule"], "failing_functions");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(slack.requests().len(), 2, "no repeat while firing");
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", server.api))
        .expect("metrics")
        .text()
        .expect("text");
    // The webhook got the same alert as an Alertmanager-style payload,
    // also after its own 429.
    let h = hook.wait_for("the webhook's firing payload", |r| {
        delivered(r, "checkout is failing") == 1
    });
    assert_eq!(h[0]["status"], 429, "{h:?}");
    let payload = &h[1]["body"];
    assert_eq!(payload["status"], "firing", "{payload}");
    assert_eq!(payload["receiver"], "hook");
    assert_eq!(payload["groupLabels"]["alertname"], "failing_functions");
    let alert = &payload["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "failing_functions");
    assert_eq!(alert["labels"]["function_name"], "checkout");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["values"]["value"], 1.0);
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("checkout is failing")),
        "{alert}"
    );
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    // One message per notifier, each sent once after one retry.
    assert!(
        metrics.contains("faasight_alerts_sent_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("faasight_alert_delivery_retries_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("faasight_alerts_firing 1"), "{metrics}");

    // A restart does not announce the firing alert again.
    server.terminate();
    let log_before = server.log();
    let server = server.restart();
    server.wait_for_log("rules loaded");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        slack.requests().len(),
        2,
        "nothing re-sent after the restart"
    );

    // Two successes make the condition false: one resolved message.
    let (status, _) = server.post_json(
        "/v1/invocations",
        &[],
        &json!([invocation("ok", "r2"), invocation("ok", "r3")]).to_string(),
    );
    assert_eq!(status, 200);
    let r = slack.wait_for("the resolved message", |r| delivered(r, "RESOLVED") == 1);
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(
        r[2]["body"]
            .to_string()
            .contains("Resolved: checkout is failing")
    );
    let h = hook.wait_for("the webhook's resolved payload", |r| {
        r.iter()
            .any(|x| x["status"] == 200 && x["body"]["status"] == "resolved")
    });
    let resolved = &h.last().expect("payload")["body"];
    assert_eq!(resolved["alerts"][0]["status"], "resolved");
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(slack.requests().len(), 3, "resolved once");
    assert_eq!(hook.requests().len(), 3, "the webhook too");
    let alerts: Value = reqwest::blocking::get(format!("http://{}/api/v1/alerts", server.api))
        .expect("alerts")
        .json()
        .expect("json");
    assert_eq!(alerts["alerts"], json!([]));

    // The URL's secret never shows in the server's output, metrics or API.
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", server.api))
        .expect("metrics")
        .text()
        .expect("text");
    for (what, text) in [
        ("log before restart", log_before),
        ("log", server.log()),
        ("metrics", metrics),
    ] {
        assert!(!text.contains(SECRET), "{what} shows the webhook URL");
    }
    assert!(r.iter().all(|x| x["path_ok"] == true));
    assert!(hook.requests().iter().all(|x| x["path_ok"] == true));
}

#[test]
fn broken_rules_stop_the_start_and_rules_check_names_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("rules dir");
    std::fs::write(
        rules.join("bad.yaml"),
        "rules:\n  - name: no_such_column\n    sql: SELECT function_name, count(*) AS value FROM invocations GROUP BY function_name\n    condition: value > 0\n    message: \"{{nope}}\"\n  - name: bad_table\n    sql: SELECT * FROM nowhere\n    message: x\n",
    )
    .expect("rule file");
    let out = Command::new(crate::support::BIN)
        .args(["rules", "check", rules.to_str().expect("utf-8")])
        .output()
        .expect("rules check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml: rule no_such_column: message uses {{nope}}"),
        "{err}"
    );
    assert!(err.contains("bad.yaml: rule bad_table: sql:"), "{err}");
    assert!(err.contains("nowhere"), "{err}");

    // The shipped rules pass.
    let out = Command::new(crate::support::BIN)
        .args([
            "rules",
            "check",
            crate::support::repo_root()
                .join("rules")
                .to_str()
                .expect("utf-8"),
        ])
        .output()
        .expect("rules check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: 13 rules in 4 files"));

    // serve refuses to start with the broken file, naming it.
    let out = crate::support::serve_command(&dir.path().join("data"))
        .args(["--rules-dir", rules.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rule no_such_column"));
}
