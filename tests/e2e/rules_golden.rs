//! The shipped rules on a small hand-made data set: which functions each
//! rule flags (and which it must not), with the dollar figures worked out by
//! hand from the us-east-1 list prices. Data goes in through the real
//! binary; `faasight rules eval` runs the shipped `rules/` on it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{BIN, TestServer, repo_root, run_ok};

/// us-east-1 x86_64 and arm64 first-tier GB-second prices, request price.
const X86: f64 = 0.0000166667;
const ARM: f64 = 0.0000133334;
const REQ: f64 = 0.0000002;

#[allow(clippy::too_many_arguments)]
fn records(
    out: &mut Vec<Value>,
    function: &str,
    n: usize,
    memory: i64,
    used: i64,
    billed: i64,
    status: &str,
    cold_init: Option<f64>,
    time_ms: i64,
) {
    for i in 0..n {
        out.push(json!({
            "time": time_ms + i as i64, "function_name": function,
            "request_id": format!("{function}-{status}-{i}"), "provider": "aws",
            "region": "us-east-1", "architecture": "x86_64", "duration_ms": billed as f64,
            "billed_duration_ms": billed, "memory_size_mb": memory, "max_memory_used_mb": used,
            "status": status, "cold_start": cold_init.is_some(), "init_duration_ms": cold_init,
        }));
    }
}

/// `faasight rules eval` of the shipped `rules/` on a data directory.
fn eval_shipped_rules(data: &Path) -> Vec<Value> {
    let out = run_ok(
        Command::new(BIN)
            .args(["rules", "eval"])
            .arg(repo_root().join("rules"))
            .arg("--data-dir")
            .arg(data),
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The findings by (rule, function).
fn by_subject(found: &[Value]) -> BTreeMap<(String, String), &Value> {
    found
        .iter()
        .map(|f| {
            let rule = f["rule"].as_str().expect("rule").to_string();
            let function = f["labels"]["function_name"]
                .as_str()
                .expect("function")
                .to_string();
            ((rule, function), f)
        })
        .collect()
}

/// Wall-clock time in epoch milliseconds (the rules look back from now).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1e-6)
}

#[test]
fn shipped_rules_flag_the_right_functions_with_the_right_dollars() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = TestServer::builder().data_dir(&data).start();
    let hour_ago = now_ms() - 3_600_000;
    let mut v = Vec::new();
    records(&mut v, "big", 100, 1024, 200, 1000, "ok", None, hour_ago);
    records(&mut v, "tight", 100, 512, 400, 1000, "ok", None, hour_ago);
    records(
        &mut v, "heavy", 100, 1024, 900, 800_000, "ok", None, hour_ago,
    );
    records(&mut v, "leaky", 2, 512, 512, 3000, "oom", None, hour_ago);
    records(
        &mut v,
        "javafn",
        1000,
        3008,
        2000,
        5100,
        "ok",
        Some(5000.0),
        hour_ago,
    );
    records(
        &mut v, "flaky", 100, 3008, 2500, 60_000, "error", None, hour_ago,
    );
    records(
        &mut v,
        "flaky",
        100,
        3008,
        2500,
        60_000,
        "ok",
        None,
        hour_ago + 1000,
    );
    let (status, body) = server.post_json("/v1/invocations", &[], &Value::Array(v).to_string());
    assert_eq!(status, 200, "{body}");
    server.terminate();

    let found = eval_shipped_rules(&data);
    let by_subject = by_subject(&found);
    let subjects: Vec<(&str, &str)> = by_subject
        .keys()
        .map(|(r, f)| (r.as_str(), f.as_str()))
        .collect();
    assert_eq!(
        subjects,
        [
            ("arm64_savings", "heavy"),
            ("cold_start_cost", "javafn"),
            ("failed_invocation_cost", "flaky"),
            ("high_cold_start_rate", "javafn"),
            ("memory_near_limit", "leaky"),
            ("memory_overprovisioned", "big"),
            ("oom_kills", "leaky"),
        ],
        "{found:#?}"
    );
    let get = |rule: &str, f: &str| by_subject[&(rule.to_string(), f.to_string())];
    let month = 30.0 / 7.0;
    let check = |rule: &str, f: &str, value: f64, savings: Option<f64>| {
        let s = get(rule, f);
        let got = s["value"].as_f64().expect("value");
        assert!(close(got, value), "{rule}/{f}: value {got} vs {value}");
        match savings {
            Some(want) => {
                let got = s["savings_usd_month"].as_f64().expect("savings");
                assert!(close(got, want), "{rule}/{f}: savings {got} vs {want}");
            }
            None => assert!(s["savings_usd_month"].is_null(), "{rule}/{f}: {s}"),
        }
    };
    // big: 1 GB → recommended ceil(200 × 1.3 / 64) × 64 = 320 MB; 100 × 1 s,
    // same duration: (1 − 0.3125) GB-s × X86 each (the request price cancels).
    check(
        "memory_overprovisioned",
        "big",
        200.0 / 1024.0,
        Some(100.0 * 0.6875 * X86 * month),
    );
    assert_eq!(
        get("memory_overprovisioned", "big")["labels"]["memory_size_mb"],
        "1024"
    );
    assert!(
        get("memory_overprovisioned", "big")["message"]
            .as_str()
            .expect("m")
            .contains("at 320 MB")
    );
    // heavy: 100 × 800 s × 1 GB, x86 → arm64.
    let x86_cost = 800.0 * X86 + REQ;
    check(
        "arm64_savings",
        "heavy",
        800.0 * (X86 - ARM) / x86_cost,
        Some(100.0 * 800.0 * (X86 - ARM) * month),
    );
    // javafn: 1000 cold starts × 5 s init × 2.9375 GB, billed since 2025-08-01.
    let init = 1000.0 * 5.0 * (3008.0 / 1024.0) * X86 * month;
    check("cold_start_cost", "javafn", init, Some(init));
    check("high_cold_start_rate", "javafn", 1.0, None);
    // flaky: 100 of 200 failed, each 60 s × 2.9375 GB.
    check(
        "failed_invocation_cost",
        "flaky",
        0.5,
        Some(100.0 * (60.0 * (3008.0 / 1024.0) * X86 + REQ) * month),
    );
    // leaky: 2 out-of-memory kills in 24 h at 3 s × 0.5 GB, × 30 days.
    check(
        "oom_kills",
        "leaky",
        2.0,
        Some(2.0 * (3.0 * 0.5 * X86 + REQ) * 30.0),
    );
    check("memory_near_limit", "leaky", 1.0, None);
}

/// One invocation record as `POST /v1/invocations` takes it.
#[allow(clippy::too_many_arguments)]
fn invocation(
    function: &str,
    id: String,
    time_ms: i64,
    version: &str,
    architecture: &str,
    memory: i64,
    used: i64,
    billed: i64,
    status: &str,
) -> Value {
    json!({
        "time": time_ms, "function_name": function, "request_id": id,
        "function_version": version, "provider": "aws", "region": "us-east-1",
        "architecture": architecture, "duration_ms": billed as f64,
        "billed_duration_ms": billed, "memory_size_mb": memory,
        "max_memory_used_mb": used, "status": status, "cold_start": false,
    })
}

/// A server span of `function` with client children of the given
/// durations, as OTLP/JSON resource spans.
fn handler_trace(function: &str, trace: usize, start_ns: i64, ms: i64, calls: &[i64]) -> Value {
    let trace_id = format!("{:032x}", 0xabc0_0000_u64 as usize + trace);
    let root = format!("{:016x}", 0x1000 + trace);
    let mut spans = vec![json!({
        "traceId": trace_id, "spanId": root, "name": "handler", "kind": 2,
        "startTimeUnixNano": start_ns.to_string(),
        "endTimeUnixNano": (start_ns + ms * 1_000_000).to_string(),
    })];
    for (i, call) in calls.iter().enumerate() {
        spans.push(json!({
            "traceId": trace_id, "spanId": format!("{:016x}", 0x9000_0000 + trace * 16 + i),
            "parentSpanId": root, "name": "GET downstream", "kind": 3,
            "startTimeUnixNano": (start_ns + 1_000_000).to_string(),
            "endTimeUnixNano": (start_ns + 1_000_000 + call * 1_000_000).to_string(),
        }));
    }
    json!({
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": function}},
            {"key": "faas.name", "value": {"stringValue": function}},
        ]},
        "scopeSpans": [{"scope": {"name": "golden"}, "spans": spans}],
    })
}

#[test]
fn the_other_shipped_rules_flag_spikes_regressions_timeouts_loops_and_waiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = TestServer::builder().data_dir(&data).start();
    let now_ms = now_ms();
    let (hour, day) = (3_600_000_i64, 86_400_000_i64);
    let mut v = Vec::new();
    // spiky (arm64, 10 GB, 15 min each): one a day for the 7 days before
    // the last 24 hours, then 20 in the last hour.
    for i in 0..7 {
        v.push(invocation(
            "spiky",
            format!("spiky-week-{i}"),
            now_ms - day * 3 / 2 - i * day,
            "1",
            "arm64",
            10240,
            9000,
            900_000,
            "ok",
        ));
    }
    for i in 0..20 {
        v.push(invocation(
            "spiky",
            format!("spiky-today-{i}"),
            now_ms - hour + i,
            "1",
            "arm64",
            10240,
            9000,
            900_000,
            "ok",
        ));
    }
    // steady: the same every day, no spike.
    for i in 0..8 {
        v.push(invocation(
            "steady",
            format!("steady-{i}"),
            now_ms - hour - i * day,
            "1",
            "arm64",
            10240,
            9000,
            900_000,
            "ok",
        ));
    }
    // versioned: version 1 (1 s) ten days ago, version 2 (1.5 s) now.
    for i in 0..60 {
        v.push(invocation(
            "versioned",
            format!("v1-{i}"),
            now_ms - 10 * day + i,
            "1",
            "x86_64",
            1024,
            700,
            1000,
            "ok",
        ));
        v.push(invocation(
            "versioned",
            format!("v2-{i}"),
            now_ms - hour + i,
            "2",
            "x86_64",
            1024,
            700,
            1500,
            "ok",
        ));
        // evenly: a new version at the same cost.
        v.push(invocation(
            "evenly",
            format!("e1-{i}"),
            now_ms - 10 * day + i,
            "1",
            "x86_64",
            1024,
            700,
            1000,
            "ok",
        ));
        v.push(invocation(
            "evenly",
            format!("e2-{i}"),
            now_ms - hour + i,
            "2",
            "x86_64",
            1024,
            700,
            1050,
            "ok",
        ));
    }
    // slowpoke: 2 of 52 invocations time out at 3 s.
    for i in 0..50 {
        v.push(invocation(
            "slowpoke",
            format!("slow-ok-{i}"),
            now_ms - hour + i,
            "1",
            "arm64",
            128,
            100,
            500,
            "ok",
        ));
    }
    for i in 0..2 {
        v.push(invocation(
            "slowpoke",
            format!("slow-to-{i}"),
            now_ms - hour + 100 + i,
            "1",
            "arm64",
            128,
            100,
            3000,
            "timeout",
        ));
    }
    let (status, body) = server.post_json("/v1/invocations", &[], &Value::Array(v).to_string());
    assert_eq!(status, 200, "{body}");

    // Spans: looper runs 4 times in one trace (and once in another);
    // waiter waits 900 of 1000 ms on a call in each of 20 traces; busy
    // waits 100 ms of 1000.
    let start_ns = (now_ms - 30 * 60_000) * 1_000_000;
    let mut resource_spans = Vec::new();
    for hop in 0..4 {
        let mut t = handler_trace("looper", 1, start_ns + hop * 1_000_000_000, 100, &[]);
        let span = &mut t["scopeSpans"][0]["spans"][0];
        span["spanId"] = json!(format!("{:016x}", 0x5000 + hop));
        resource_spans.push(t);
    }
    resource_spans.push(handler_trace("looper", 2, start_ns, 100, &[]));
    for trace in 0..20 {
        resource_spans.push(handler_trace("waiter", 100 + trace, start_ns, 1000, &[900]));
        resource_spans.push(handler_trace("busy", 200 + trace, start_ns, 1000, &[100]));
    }
    let (status, body) = server.post_json(
        "/v1/traces",
        &[],
        &json!({ "resourceSpans": resource_spans }).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    server.terminate();

    let found = eval_shipped_rules(&data);
    let by_subject = by_subject(&found);
    let subjects: Vec<(&str, &str)> = by_subject
        .keys()
        .map(|(r, f)| (r.as_str(), f.as_str()))
        .collect();
    assert_eq!(
        subjects,
        [
            ("cost_spike", "spiky"),
            ("recursive_invocation_loop", "looper"),
            ("timeout_risk", "slowpoke"),
            ("version_cost_regression", "versioned"),
            ("waiting_on_downstream", "waiter"),
        ],
        "{found:#?}"
    );
    let get = |rule: &str, f: &str| by_subject[&(rule.to_string(), f.to_string())];
    let value = |rule: &str, f: &str| get(rule, f)["value"].as_f64().expect("value");

    // spiky: 20 invocations today against a daily average of one.
    let arm = 900.0 * 10.0 * ARM + REQ;
    assert!(close(value("cost_spike", "spiky"), 20.0));
    let msg = get("cost_spike", "spiky")["message"]
        .as_str()
        .expect("message");
    assert!(
        msg.contains(&format!("${:.2}", 20.0 * arm)) && msg.contains("20"),
        "{msg}"
    );
    // versioned: 1.5 GB-s against 1 GB-s per invocation, 60 a week.
    let (c1, c2) = (X86 + REQ, 1.5 * X86 + REQ);
    assert!(close(
        value("version_cost_regression", "versioned"),
        c2 / c1
    ));
    let s = get("version_cost_regression", "versioned");
    assert!(close(
        s["savings_usd_month"].as_f64().expect("savings"),
        (c2 - c1) * 60.0 * 30.0 / 7.0
    ));
    assert_eq!(s["labels"]["version"], "2");
    assert_eq!(s["labels"]["previous_version"], "1");
    // slowpoke: two timeouts at 3 s.
    assert!(close(value("timeout_risk", "slowpoke"), 2.0));
    assert!(
        get("timeout_risk", "slowpoke")["message"]
            .as_str()
            .expect("message")
            .contains("at about 3 s"),
        "{}",
        get("timeout_risk", "slowpoke")["message"]
    );
    // looper: four server spans in one trace.
    assert!(close(value("recursive_invocation_loop", "looper"), 4.0));
    // waiter: 900 of 1000 ms waiting.
    assert!(close(value("waiting_on_downstream", "waiter"), 0.9));
}

/// us-east-1 x86_64 provisioned concurrency and provisioned duration prices.
const PC: f64 = 0.0000041667;
const PC_DURATION: f64 = 0.0000097222;

/// An OTLP/JSON metrics request: `(name, function, points)` where a point is
/// a gauge value (metric stream = false) or a summary's (sum, count).
/// `(metric name, function, as a metric stream summary, points)`.
type Series<'a> = (&'a str, &'a str, bool, &'a [(f64, u64)]);

fn pc_metrics(now_ns: i64, series: &[Series<'_>]) -> Value {
    let metrics: Vec<Value> = series
        .iter()
        .map(|(name, function, stream, points)| {
            let points: Vec<Value> = points
                .iter()
                .enumerate()
                .map(|(i, (v, count))| {
                    let time = (now_ns - i as i64 * 60_000_000_000).to_string();
                    if *stream {
                        json!({"timeUnixNano": time, "count": count.to_string(), "sum": v,
                               "quantileValues": [{"quantile": 0.0, "value": 0.0},
                                                  {"quantile": 1.0, "value": v}],
                               "attributes": [
                                 {"key": "Namespace", "value": {"stringValue": "AWS/Lambda"}},
                                 {"key": "Dimensions", "value": {"kvlistValue": {"values": [
                                   {"key": "FunctionName", "value": {"stringValue": function}},
                                   {"key": "Resource", "value": {"stringValue": format!("{function}:live")}}]}}}]})
                    } else {
                        json!({"timeUnixNano": time, "asDouble": v,
                               "attributes": [{"key": "faas.name", "value": {"stringValue": function}}]})
                    }
                })
                .collect();
            if *stream {
                json!({"name": format!("amazonaws.com/AWS/Lambda/{name}"), "summary": {"dataPoints": points}})
            } else {
                json!({"name": name, "gauge": {"dataPoints": points}})
            }
        })
        .collect();
    json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "cloud.provider", "value": {"stringValue": "aws"}}]},
        "scopeMetrics": [{"metrics": metrics}]}]})
}

#[test]
fn idle_provisioned_concurrency_is_priced_from_lambda_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = TestServer::builder().data_dir(&data).start();
    let now_ms = now_ms();
    let hour_ago = now_ms - 3_600_000;
    let mut v = Vec::new();
    records(&mut v, "reserved", 20, 1024, 300, 100, "ok", None, hour_ago);
    records(&mut v, "standby", 20, 512, 300, 100, "ok", None, hour_ago);
    records(&mut v, "busy", 20, 1024, 300, 100, "ok", None, hour_ago);
    let (status, body) = server.post_json("/v1/invocations", &[], &Value::Array(v).to_string());
    assert_eq!(status, 200, "{body}");
    // reserved (metric stream summaries): utilization averages 0.3 and 0.2
    // → 0.25, executions 3 and 2 → 2.5, so 10 instances are allocated.
    // standby (gauges): 0.5 used of 4 instances. busy: 0.8 of 10.
    const UTILIZATION: &str = "ProvisionedConcurrencyUtilization";
    const EXECUTIONS: &str = "ProvisionedConcurrentExecutions";
    #[rustfmt::skip]
    let series: [Series<'_>; 6] = [
        (UTILIZATION, "reserved", true, &[(1.2, 4), (0.8, 4)]),
        (EXECUTIONS, "reserved", true, &[(12.0, 4), (8.0, 4)]),
        ("aws.lambda.provisioned_concurrency_utilization", "standby", false, &[(0.5, 1), (0.5, 1)]),
        ("aws.lambda.provisioned_concurrent_executions", "standby", false, &[(2.0, 1), (2.0, 1)]),
        (UTILIZATION, "busy", true, &[(3.2, 4)]),
        (EXECUTIONS, "busy", true, &[(32.0, 4)]),
    ];
    let request = pc_metrics((now_ms - 1_800_000) * 1_000_000, &series);
    let (status, body) = server.post_json("/v1/metrics", &[], &request.to_string());
    assert_eq!(status, 200, "{body}");
    server.terminate();

    let found = eval_shipped_rules(&data);
    let idle: BTreeMap<(String, String), &Value> = by_subject(&found)
        .into_iter()
        .filter(|((rule, _), _)| rule == "idle_provisioned_concurrency")
        .collect();
    let functions: Vec<&str> = idle.keys().map(|(_, f)| f.as_str()).collect();
    // busy is above the break-even (~60%): provisioned is cheaper there.
    assert_eq!(functions, ["reserved", "standby"], "{found:#?}");
    // A month of `allocated` × GB provisioned; saving = provisioned charge +
    // provisioned duration of the used share − the same share on demand.
    let saving = |allocated: f64, gb: f64, u: f64| {
        let gb_s = allocated * gb * 2_592_000.0;
        gb_s * PC + u * gb_s * PC_DURATION - u * gb_s * X86
    };
    for (function, allocated, gb, u) in [("reserved", 10.0, 1.0, 0.25), ("standby", 4.0, 0.5, 0.5)]
    {
        let f = idle[&(
            "idle_provisioned_concurrency".to_string(),
            function.to_string(),
        )];
        let value = f["value"].as_f64().expect("value");
        assert!(close(value, u), "{function}: utilization {value}");
        let got = f["savings_usd_month"].as_f64().expect("savings");
        let want = saving(allocated, gb, u);
        assert!(close(got, want), "{function}: savings {got} vs {want}");
        let message = f["message"].as_str().expect("message");
        assert!(
            message.contains(&format!("about {allocated} instances")),
            "{message}"
        );
    }
    // reserved: 10 × 2,592,000 GB-s × (PC − 0.25 × (X86 − PC_DURATION)) ≈ $63.
    assert!((saving(10.0, 1.0, 0.25) - 63.0005).abs() < 0.001);
}

/// `faasight generate` gives its provisioned functions Lambda's provisioned
/// concurrency metrics, and the shipped rule turns the over-allocated ones
/// into findings: every function with the metrics is flagged exactly when
/// its utilization is under the break-even, with the allocation the
/// metrics imply.
#[test]
fn generated_provisioned_functions_get_metrics_the_idle_rule_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    crate::support::generate(
        &data,
        &[
            "--invocations",
            "30000",
            "--functions",
            "30",
            "--days",
            "7",
            "--seed",
            "1",
        ],
    );
    let out = run_ok(
        Command::new(BIN)
            .args(["query", "--format", "json", "--data-dir"])
            .arg(&data)
            .arg(
                "SELECT function_name, count(*) AS points,
                   avg(CASE WHEN name LIKE '%Utilization' THEN \"sum\" / \"count\" END) AS utilization,
                   avg(CASE WHEN name LIKE '%Executions' THEN \"sum\" / \"count\" END) AS executions
                 FROM metrics GROUP BY function_name ORDER BY function_name",
            ),
    );
    let series: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        !series.is_empty(),
        "no provisioned function in the data set"
    );
    let mut expected = Vec::new();
    for s in &series {
        let function = s["function_name"].as_str().expect("function");
        // 5-minute points of 167 whole hours and the current one up to now
        // (its periods that have ended), for two metrics.
        let points = s["points"].as_u64().expect("points");
        assert!((2 * 167 * 12..=2 * 168 * 12).contains(&points), "{s}");
        let u = s["utilization"].as_f64().expect("utilization");
        let allocated = s["executions"].as_f64().expect("executions") / u;
        assert!(
            (allocated - allocated.round()).abs() < 1e-6 && (1.0..=8.0).contains(&allocated),
            "{s}"
        );
        if u < 0.6 {
            expected.push((function.to_string(), allocated.round()));
        }
    }
    let found = eval_shipped_rules(&data);
    let mut flagged: Vec<(String, f64)> = found
        .iter()
        .filter(|f| f["rule"] == "idle_provisioned_concurrency")
        .map(|f| {
            let function = f["labels"]["function_name"].as_str().expect("function");
            assert!(
                f["savings_usd_month"].as_f64().expect("savings") >= 1.0,
                "{f}"
            );
            let message = f["message"].as_str().expect("message");
            let allocated: f64 = message
                .split("about ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no allocation in {message:?}"));
            (function.to_string(), allocated)
        })
        .collect();
    flagged.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(flagged, expected, "{found:#?}");
}
