//! Invocation records from REPORT lines in OTLP logs and from handler spans,
//! coalesced by the `invocations` view.

use std::process::Command;

use crate::support::{TestServer, client_script, python, run_json};

#[test]
fn report_lines_and_handler_spans_merge_into_one_invocation() {
    let mut server = TestServer::start();
    let trace_ids = run_json(
        Command::new(python())
            .arg(client_script("send_lambda.py"))
            .args([server.http_url().as_str(), "checkout"]),
    );
    let check = |server: &TestServer| {
        let rows = server.sql(
            "SELECT request_id, trace_id, function_version, provider, region, account_id, trigger, cold_start, init_duration_ms, \
             duration_ms, billed_duration_ms, memory_size_mb, max_memory_used_mb, architecture, status \
             FROM invocations WHERE function_name = 'checkout' ORDER BY request_id",
        );
        assert_eq!(rows.len(), 3, "{rows:?}");
        for (i, r) in rows.iter().enumerate() {
            let rid = format!("checkout-req-{i}");
            assert_eq!(r["request_id"], rid.as_str());
            assert_eq!(r["trace_id"], trace_ids[&rid], "the span's trace id");
            assert_eq!(r["function_version"], "7");
            assert_eq!(
                (
                    r["provider"].as_str(),
                    r["region"].as_str(),
                    r["account_id"].as_str()
                ),
                (Some("aws"), Some("eu-west-1"), Some("123456789012"))
            );
            assert_eq!(r["trigger"], "http");
            assert_eq!(r["cold_start"], i == 0);
            // Lambda's own duration wins over the span's.
            assert_eq!(r["duration_ms"].as_f64(), Some(100.5 + i as f64));
            assert_eq!(r["billed_duration_ms"].as_i64(), Some(101 + i as i64));
            assert_eq!(r["memory_size_mb"], 512);
            assert_eq!(r["max_memory_used_mb"], 80);
            assert_eq!(r["architecture"], "arm64");
            assert_eq!(r["status"], if i == 2 { "timeout" } else { "ok" });
        }
        assert_eq!(rows[0]["init_duration_ms"].as_f64(), Some(200.25));
        assert!(rows[1]["init_duration_ms"].is_null());
        let rate = server.sql("SELECT avg(CASE WHEN cold_start THEN 1.0 ELSE 0.0 END) AS rate FROM invocations WHERE function_name = 'checkout'");
        assert!((rate[0]["rate"].as_f64().unwrap_or(0.0) - 1.0 / 3.0).abs() < 1e-9);
        // Raw records: one per source, and the platform lines stay logs.
        let sources = server.sql(
            "SELECT source, count(*) AS n FROM invocation_records GROUP BY source ORDER BY source",
        );
        assert_eq!(
            sources,
            vec![
                serde_json::json!({"source": "report", "n": 6}),
                serde_json::json!({"source": "span", "n": 3})
            ]
        );
        assert_eq!(
            server.count("SELECT count(*) AS n FROM logs WHERE body LIKE 'REPORT RequestId:%'"),
            3
        );
    };
    check(&server);
    // After a clean stop and a restart, nothing is duplicated.
    server.terminate();
    let server = server.restart();
    check(&server);
}

fn post_invocations(server: &TestServer, body: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/invocations", server.http_url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("send");
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_str(&resp.text().expect("body")).expect("json answer"),
    )
}

#[test]
fn invocations_endpoint_stores_valid_rows_and_reports_the_rest() {
    let server = TestServer::start();
    let (status, answer) = post_invocations(
        &server,
        r#"[{"time":"2026-11-28T10:00:00Z","function_name":"api-fn","request_id":"a1","duration_ms":12.5,"billed_duration_ms":13,"memory_size_mb":128,"architecture":"x86_64","status":"ok","cold_start":true,"init_duration_ms":150.0},
            {"time":1764324000000,"function_name":"api-fn","request_id":"a2","duration_ms":40,"status":"error","error_type":"Runtime.Unhandled"},
            {"time":"yesterday","function_name":"api-fn","request_id":"a3"},
            {"time":1764324000000,"request_id":"a4"}]"#,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2);
    let rejected = answer["rejected"].as_array().expect("rejected");
    assert_eq!(
        rejected
            .iter()
            .map(|r| r["index"].as_i64().unwrap_or(-1))
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("function_name")
    );
    // NDJSON works too.
    let (status, answer) = post_invocations(
        &server,
        "{\"time\":1764324001000,\"function_name\":\"api-fn\",\"request_id\":\"a5\",\"duration_ms\":1.2}\n",
    );
    assert_eq!((status, answer["accepted"].as_i64()), (200, Some(1)));
    // Undecodable bodies and all-invalid bodies store nothing.
    let (status, answer) = post_invocations(
        &server,
        r#"[{"time":1764324000000,"function_name":"api-fn""#,
    );
    assert_eq!(status, 400, "{answer}");
    let (status, _) =
        post_invocations(&server, r#"[{"function_name":"api-fn","request_id":"zz"}]"#);
    assert_eq!(status, 400);
    let rows = server.sql("SELECT request_id, status, cold_start, billed_duration_ms FROM invocations WHERE function_name = 'api-fn' ORDER BY request_id");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows[0],
        serde_json::json!({"request_id": "a1", "status": "ok", "cold_start": true, "billed_duration_ms": 13})
    );
    assert_eq!(rows[1]["status"], "error");
    // Billed duration derived with the 2025+ rule (1 ms rounding) when absent.
    assert_eq!(rows[1]["billed_duration_ms"], 40);
    assert_eq!(rows[2]["billed_duration_ms"], 2);
}
