//! Rules: parsing, conditions, templates, the alert lifecycle, messages and
//! delivery back-off, without I/O.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::condition::{Condition, Value};
use super::load::{Rule, parse_file};
use super::notify::delivery::{backoff, retry_after};
use super::notify::{MessageContext, SecretUrl, slack};
use super::state::{AlertState, Observation, StateDoc, StateStore, Status};
use super::template::{Template, dollars, duration_ms, percent};

const RULE: &str = r#"
rules:
  - name: memory_overprovisioned
    description: Right-size it.
    every: 5m
    for: 30m
    severity: warning
    sql: SELECT function_name, 0.3 AS value, 12.5 AS savings_usd_month FROM invocations
    condition: value < 0.5
    labels: { team: platform }
    message: "{{function_name}} uses {{value | percent}}; save {{savings_usd_month | dollars}} a month"
    notify: [slack]
"#;

fn rule() -> Rule {
    parse_file(Path::new("memory.yaml"), RULE).expect("valid")[0].clone()
}

fn num(v: f64) -> Value {
    Value::Number(v)
}

#[test]
fn rule_files_parse_with_defaults() {
    let r = rule();
    assert_eq!(r.every, Duration::from_secs(300));
    assert_eq!(r.for_, Duration::from_secs(1800));
    assert_eq!(r.repeat_interval, Duration::from_secs(4 * 3600));
    assert_eq!(r.labels["team"], "platform");
    assert_eq!(r.notify, ["slack"]);
}

#[test]
fn rule_file_errors_name_file_rule_and_reason() {
    let bad = |body: &str| {
        let text = format!("rules:\n  - {body}\n");
        parse_file(Path::new("bad.yaml"), &text)
            .expect_err(&text)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let base = "sql: SELECT 1 AS value\n    message: m";
    for (body, needle) in [
        (
            format!("name: Bad-Name\n    {base}"),
            "rule Bad-Name: name must be",
        ),
        (
            format!("name: a\n    every: soon\n    {base}"),
            "every: \"soon\" is not a duration",
        ),
        (
            format!("name: a\n    every: 10ms\n    {base}"),
            "at least 1s",
        ),
        (
            format!("name: a\n    condition: value <\n    {base}"),
            "condition:",
        ),
        (
            format!("name: a\n    condition: value ~ 3\n    {base}"),
            "unexpected '~'",
        ),
        (
            "name: a\n    sql: DROP TABLE spans\n    message: m".to_string(),
            "sql:",
        ),
        (
            "name: a\n    sql: SELECT 1\n    message: \"{{x | shout}}\"".to_string(),
            "unknown filter",
        ),
        (
            "name: a\n    sql: SELECT 1\n    message: \"{{x\"".to_string(),
            "unclosed",
        ),
        (
            format!("name: a\n    severity: fatal\n    {base}"),
            "bad.yaml",
        ),
        (format!("name: a\n    colour: red\n    {base}"), "colour"),
    ] {
        let e = bad(&body);
        assert!(
            e.contains(needle),
            "{body:?}: {e:?} should mention {needle:?}"
        );
        assert!(e.starts_with("bad.yaml"), "{e}");
    }
    assert!(parse_file(Path::new("x.yaml"), "rules: [").is_err());
    assert!(parse_file(Path::new("x.yaml"), "just text").is_err());
}

#[test]
fn conditions_compare_and_combine() {
    let c = Condition::parse("value < 0.5 && (savings_usd_month >= 10 || team == 'core')")
        .expect("valid");
    let row = |v: f64, s: f64, team: &str| {
        let team = team.to_string();
        move |k: &str| match k {
            "value" => num(v),
            "savings_usd_month" => num(s),
            "team" => Value::Text(team.clone()),
            _ => Value::Null,
        }
    };
    assert!(c.eval(&row(0.3, 12.0, "x")));
    assert!(c.eval(&row(0.3, 1.0, "core")));
    assert!(!c.eval(&row(0.3, 1.0, "x")));
    assert!(!c.eval(&row(0.7, 100.0, "core")));
    // Null never satisfies a comparison.
    assert!(
        !Condition::parse("value != 1")
            .expect("valid")
            .eval(&|_| Value::Null)
    );
    assert_eq!(
        c.columns().into_iter().collect::<Vec<_>>(),
        ["savings_usd_month", "team", "value"]
    );
    for bad in [
        "",
        "value",
        "value <",
        "(value < 1",
        "value < 1 &&",
        "1 < value",
        "value < 'x",
        "value < 1e999",
    ] {
        assert!(Condition::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn templates_format_figures() {
    let t = Template::parse("{{f}}: {{r | percent}}, {{d | dollars}}, {{ms | duration}}, {{x | round}}, {{n | int}}, {{missing}}")
        .expect("valid");
    let out = t.render(&|k| match k {
        "f" => Value::Text("checkout".into()),
        "r" => num(0.4213),
        "d" => num(1234.567),
        "ms" => num(1530.0),
        "x" => num(1.23456),
        "n" => num(41.6),
        _ => Value::Null,
    });
    assert_eq!(out, "checkout: 42.1%, $1,234.57, 1.53 s, 1.23, 42, n/a");
    assert_eq!(percent(0.000_224_6), "0.022%");
    assert_eq!(percent(0.004), "0.4%");
    assert_eq!(percent(0.0), "0%");
    assert_eq!(percent(1.0), "100%");
    assert_eq!(dollars(0.004), "$0.004");
    assert_eq!(dollars(12.5), "$12.50");
    assert_eq!(dollars(-3.456), "-$3.46");
    assert_eq!(duration_ms(850.0), "850 ms");
    assert_eq!(duration_ms(210_000.0), "3.5 min");
    assert_eq!(
        t.columns().into_iter().collect::<Vec<_>>(),
        ["d", "f", "missing", "ms", "n", "r", "x"]
    );
}

fn obs(function: &str, value: f64) -> Observation {
    let mut labels = BTreeMap::new();
    labels.insert("function_name".to_string(), function.to_string());
    Observation {
        key: format!("memory_overprovisioned|function_name={function}"),
        labels,
        value: Some(value),
        savings_usd_month: Some(12.5),
        message: format!("{function} is oversized"),
    }
}

const MIN: i64 = 60_000_000;

#[test]
fn lifecycle_pending_firing_repeat_resolved() {
    let r = rule(); // for: 30m, repeat: 4h
    let mut doc = StateDoc::default();
    // t=0: condition true → pending, nothing sent.
    assert!(doc.apply(&r, vec![obs("a", 0.3)], 0).is_empty());
    assert_eq!(
        doc.alerts.values().next().map(|a| a.state),
        Some(AlertState::Pending)
    );
    // Still pending at 29 minutes.
    assert!(doc.apply(&r, vec![obs("a", 0.3)], 29 * MIN).is_empty());
    // Fires once at 30 minutes.
    let t = doc.apply(&r, vec![obs("a", 0.3)], 30 * MIN);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].status, Status::Firing);
    // No repeat while firing within the repeat interval…
    for m in [35, 60, 120, 269] {
        assert!(
            doc.apply(&r, vec![obs("a", 0.3)], m * MIN).is_empty(),
            "minute {m}"
        );
    }
    // …then one reminder at 4 hours after the last message.
    let t = doc.apply(&r, vec![obs("a", 0.3)], 270 * MIN);
    assert_eq!(t.len(), 1);
    // Condition false → resolved once, then gone.
    let t = doc.apply(&r, vec![], 280 * MIN);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].status, Status::Resolved);
    assert!(doc.alerts.is_empty());
    assert!(doc.apply(&r, vec![], 290 * MIN).is_empty());
}

#[test]
fn a_pending_alert_that_clears_says_nothing_and_rules_are_separate() {
    let r = rule();
    let mut doc = StateDoc::default();
    doc.apply(&r, vec![obs("a", 0.3), obs("b", 0.2)], 0);
    // b clears before `for` elapses: silently dropped; a stays pending.
    assert!(doc.apply(&r, vec![obs("a", 0.3)], 10 * MIN).is_empty());
    assert_eq!(doc.alerts.len(), 1);
    // Another rule's evaluation does not resolve this rule's alerts.
    let mut other = r.clone();
    other.name = "other".into();
    assert!(doc.apply(&other, vec![], 11 * MIN).is_empty());
    assert_eq!(doc.alerts.len(), 1);
    // A rule that disappeared loses its alerts without messages.
    doc.retain_rules(&["other".to_string()]);
    assert!(doc.alerts.is_empty());
}

/// Every rule evaluates and saves on its own task, so saves run at once:
/// they take turns (none fails on, or renames, another's temporary file)
/// and the file ends with the latest state, not an older copy written last.
#[test]
fn saves_at_once_take_turns_and_the_latest_state_is_kept() {
    use super::notify::delivery::Deliverer;
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let deliverer = Arc::new(Deliverer {
        doc: Arc::new(parking_lot::Mutex::new(StateDoc::default())),
        store: StateStore::new(dir.path()),
        metrics: Arc::default(),
        wake: Arc::default(),
        client: reqwest::Client::new(),
        board: Arc::default(),
    });
    let savers: Vec<_> = (0..4)
        .map(|_| {
            let d = Arc::clone(&deliverer);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    d.doc.lock().next_delivery_id += 1;
                    d.persist().expect("saved");
                }
            })
        })
        .collect();
    for s in savers {
        s.join().expect("saver");
    }
    let (saved, warning) = StateStore::new(dir.path()).load().expect("load");
    assert!(warning.is_none(), "{warning:?}");
    assert_eq!(saved.next_delivery_id, 200);
}

#[test]
fn state_survives_a_restart_and_damage_is_moved_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::new(dir.path());
    let mut doc = StateDoc::default();
    let mut r = rule();
    r.for_ = Duration::ZERO;
    doc.apply(&r, vec![obs("a", 0.3)], 0);
    doc.enqueue(
        "slack",
        &r.name,
        Status::Firing,
        serde_json::json!({"text": "x"}),
        0,
    );
    store.save(&doc).expect("save");
    let (loaded, warning) = store.load().expect("load");
    assert_eq!(loaded, doc);
    assert!(warning.is_none());
    // After the restart the firing alert does not fire again.
    let mut loaded = loaded;
    assert!(loaded.apply(&r, vec![obs("a", 0.3)], MIN).is_empty());

    std::fs::write(dir.path().join("alerts/state.json"), b"{not json").expect("write");
    let (empty, warning) = store.load().expect("load");
    assert_eq!(empty, StateDoc::default());
    assert!(warning.expect("reported").contains("state.json.corrupt"));
    assert!(dir.path().join("alerts/state.json.corrupt").exists());
}

#[test]
fn slack_messages_group_and_cap() {
    let mut r = rule();
    r.for_ = Duration::ZERO;
    let mut doc = StateDoc::default();
    let many: Vec<Observation> = (0..14).map(|i| obs(&format!("fn{i:02}"), 0.3)).collect();
    let transitions = doc.apply(&r, many, 0);
    assert_eq!(transitions.len(), 14);
    let ctx = MessageContext {
        grafana_url: Some("http://grafana:3000/".into()),
    };
    let m = slack::message(&r.name, Status::Firing, &transitions, &ctx);
    let blocks = m["blocks"].as_array().expect("blocks");
    assert!(
        blocks[0]["text"]["text"]
            .as_str()
            .expect("header")
            .contains("WARNING · memory_overprovisioned (14)")
    );
    let sections = blocks.iter().filter(|b| b["type"] == "section").count();
    assert_eq!(sections, 10, "at most 10 alerts listed");
    let text = m.to_string();
    assert!(text.contains("…and 4 more"));
    assert!(text.contains("$12.50 / month"));
    assert!(text.contains("Right-size it."));
    assert!(text.contains("http://grafana:3000/d/faasight-overview"));
    assert!(
        m["text"]
            .as_str()
            .expect("fallback")
            .contains("$175.00 / month")
    );
    let resolved = slack::message(
        &r.name,
        Status::Resolved,
        &transitions[..1],
        &MessageContext::default(),
    );
    assert!(resolved.to_string().contains("RESOLVED"));
}

#[test]
fn retry_after_and_backoff_are_bounded() {
    assert_eq!(retry_after(Some("3")), Duration::from_secs(3));
    assert_eq!(retry_after(None), Duration::from_secs(1));
    assert_eq!(retry_after(Some("0")), Duration::from_secs(1));
    assert_eq!(retry_after(Some("999999")), Duration::from_secs(3600));
    assert_eq!(retry_after(Some("soon")), Duration::from_secs(1));
    assert_eq!(backoff(0), Duration::from_secs(1));
    assert_eq!(backoff(3), Duration::from_secs(8));
    assert_eq!(backoff(40), Duration::from_secs(300));
}

#[test]
fn webhook_urls_never_print() {
    let url =
        SecretUrl::new("https://hooks.slack.com/services/T000/B000/SECRET".into()).expect("valid");
    assert_eq!(format!("{url:?}"), "SecretUrl(***)");
    assert!(SecretUrl::new("ftp://x".into()).is_err());
}
