//! The shipped rules on a small hand-made data set: which functions each
//! rule flags (and which it must not), with the dollar figures worked out by
//! hand from the us-east-1 list prices. Data goes in through the real
//! binary; `faasight rules eval` runs the shipped `rules/` on it.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{BIN, TestServer, repo_root};

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

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1e-6)
}

#[test]
fn shipped_rules_flag_the_right_functions_with_the_right_dollars() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = TestServer::builder().data_dir(&data).start();
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
        - 3_600_000;
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

    let out = Command::new(BIN)
        .args([
            "rules",
            "eval",
            repo_root().join("rules").to_str().expect("utf-8"),
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("rules eval");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    let by_subject: BTreeMap<(String, String), &Value> = found
        .iter()
        .map(|f| {
            let rule = f["rule"].as_str().expect("rule").to_string();
            let function = f["labels"]["function_name"]
                .as_str()
                .expect("function")
                .to_string();
            ((rule, function), f)
        })
        .collect();
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
