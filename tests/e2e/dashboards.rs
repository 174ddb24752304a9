//! The Grafana dashboards and provisioning: every panel query, expanded the
//! way Grafana's PostgreSQL datasource expands it, runs on faasight over the
//! Postgres wire on `faasight generate` data (and the TraceQL panel through
//! the Tempo API); the dashboards are what scripts/dashboards.py writes; the
//! Dockerfile passes hadolint; the `alerts` table shows the rules' alerts.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::Value;

use crate::support::{TestServer, client_script, generate, python, repo_root, run_json, run_ok};

#[test]
fn every_dashboard_query_runs_on_faasight_as_grafana_expands_it() {
    let root = repo_root();
    // The data ends at the current hour so that the shipped rules (which
    // look at the last days from now()) see it.
    let until = Utc::now()
        .duration_trunc(TimeDelta::hours(1))
        .expect("hour");
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    generate(
        &data,
        &[
            "--invocations",
            "30000",
            "--functions",
            "12",
            "--days",
            "2",
            "--trace-share",
            "0.3",
            "--seed",
            "5",
            "--until",
            &until.to_rfc3339(),
        ],
    );
    let rules = root.join("rules");
    let server = TestServer::builder()
        .data_dir(&data)
        .args(&["--rules-dir", rules.to_str().expect("utf-8")])
        .start();

    // The shipped rules raise alerts on this data; the `alerts` table shows
    // the same subjects as the API. Rules are evaluated on their own
    // schedules, so compare a SQL read taken between two identical API reads.
    // The API lists labels; the table shows them as `k=v, k=v` (sorted).
    let api_subject = |a: &Value| {
        let labels = a["labels"].as_object()?;
        let pairs: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        Some(format!("{} {}", a["rule"].as_str()?, pairs.join(", ")))
    };
    let sql_subject = |r: &Value| {
        Some(format!(
            "{} {}",
            r["rule"].as_str()?,
            r["subject"].as_str()?
        ))
    };
    let sorted = |mut v: Vec<String>| {
        v.sort_unstable();
        v
    };
    let api_alerts = || {
        let (status, body) = server.get("/api/v1/alerts");
        assert_eq!(status, 200, "{body}");
        let doc: Value = serde_json::from_str(&body).expect("alerts JSON");
        let alerts = doc["alerts"].as_array().cloned().unwrap_or_default();
        sorted(alerts.iter().filter_map(api_subject).collect())
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let (api, rows) = loop {
        let before = api_alerts();
        let rows = server.sql(
            "SELECT rule, state, subject, summary, savings_usd_month, since FROM alerts ORDER BY rule, subject",
        );
        let after = api_alerts();
        if (!before.is_empty() && before == after) || Instant::now() > deadline {
            break (after, rows);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(!api.is_empty(), "the shipped rules found nothing");
    assert_eq!(
        sorted(rows.iter().filter_map(sql_subject).collect()),
        api,
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r["since"].is_string()
        && r["summary"].as_str().is_some_and(|s| !s.is_empty())));

    // Every dashboard query, as Grafana sends it, over the last 24 hours.
    let from = until - TimeDelta::hours(24);
    let report = run_json(
        Command::new(python())
            .arg(client_script("grafana_check.py"))
            .args(["--pg", &server.pg, "--api"])
            .arg(format!("http://{}", server.api))
            .args(["--from", &from.to_rfc3339(), "--to", &until.to_rfc3339()])
            .arg("--dashboards")
            .arg(root.join("dashboards")),
    );
    let names: Vec<&str> = report["dashboards"]
        .as_array()
        .expect("dashboards")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        names,
        [
            "cold-starts.json",
            "cost-explorer.json",
            "function-detail.json",
            "overview.json",
            "traces.json"
        ]
    );
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(0),
        "{}",
        serde_json::to_string_pretty(&report["problems"]).unwrap_or_default()
    );
    assert_eq!(
        report["empty"].as_array().map(Vec::len),
        Some(0),
        "panels without rows: {}",
        report["empty"]
    );
    let panels = report["panels"].as_u64().expect("panels");
    let queries = report["queries"].as_u64().expect("queries");
    assert!(panels >= 35, "{panels} panels");
    // Each SQL target runs 4 times (2 selections × 2 intervals).
    assert!(
        queries >= 4 * (panels - 1),
        "{queries} queries for {panels} panels"
    );
    let sample = report["sample"].to_string();
    assert!(
        !sample.contains("$__") && sample.contains("BETWEEN '"),
        "macros expanded: {sample}"
    );
}

#[test]
fn dashboards_are_generated_and_the_dockerfile_lints() {
    let root = repo_root();
    run_ok(
        Command::new(python())
            .arg(root.join("scripts/dashboards.py"))
            .arg("--check"),
    );
    // hadolint comes from PyPI into the venv (scripts/test.sh).
    run_ok(Command::new(python().with_file_name("hadolint")).arg(root.join("Dockerfile")));
    // The build stage builds what CI builds, the way CI builds it.
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let ci = std::fs::read_to_string(root.join("scripts/test.sh")).expect("test.sh");
    let build = ci
        .lines()
        .find(|l| l.starts_with("cargo build --release"))
        .expect("scripts/test.sh builds the release binary");
    assert!(
        dockerfile.contains(build),
        "the Dockerfile does not run CI's `{build}`"
    );
    for needle in [
        "EXPOSE 4317 4318 8080 5433",
        "USER faasight",
        "/healthz",
        "ENTRYPOINT [\"faasight\"]",
        "CMD [\"serve\"]",
        "0.0.0.0:5433",
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks {needle}");
    }
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}
