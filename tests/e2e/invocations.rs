//! Invocation records from REPORT lines in OTLP logs and from handler spans,
//! coalesced by the `invocations` view.

use std::process::Command;

use crate::support::{TestServer, client_script, python, run_json, wait_until};

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
    server.post_json("/v1/invocations", &[], body)
}

#[test]
fn invocations_endpoint_stores_valid_rows_and_reports_the_rest() {
    let mut server = TestServer::start();
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
    let check = |server: &TestServer| {
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
    };
    check(&server);
    // The rows come back from the WAL after a crash, once.
    server.kill9();
    let server = server.restart();
    check(&server);
}

const TELEMETRY_BATCH: &str = r#"[
  {"time":"2026-10-08T07:30:27.768Z","type":"platform.initStart","record":{"initializationType":"on-demand","phase":"init","runtimeVersion":"nodejs:22.mainline.v122","functionName":"tenner-notifier","functionVersion":"$LATEST","instanceMaxMemory":268435456}},
  {"time":"2026-10-08T07:30:28.235Z","type":"platform.start","record":{"requestId":"79b5e81f-9cdd-4145-b1f6-7c50ef8a2a36","version":"$LATEST","tracing":{"spanId":"54565fb41ac79632","type":"X-Amzn-Trace-Id","value":"Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=1"}}},
  {"time":"2026-10-08T07:30:29.443Z","type":"function","record":{"timestamp":"2026-10-08T07:30:29.443Z","level":"ERROR","requestId":"79b5e81f-9cdd-4145-b1f6-7c50ef8a2a36","message":"boom"}},
  {"time":"2026-10-08T07:30:29.470Z","type":"platform.report","record":{"requestId":"79b5e81f-9cdd-4145-b1f6-7c50ef8a2a36","metrics":{"durationMs":1233.96,"billedDurationMs":1698,"memorySizeMB":256,"maxMemoryUsedMB":123,"initDurationMs":463.512},"status":"success"}},
  {"time":"2026-10-08T07:30:42.149Z","type":"platform.report","record":{"requestId":"f0c9f58b-8ebe-4e84-a656-95eb6eee865a","metrics":{"durationMs":1072.145,"billedDurationMs":1073,"memorySizeMB":256,"maxMemoryUsedMB":125},"status":"success"}},
  {"time":"2026-10-08T07:31:50.562Z","type":"platform.runtimeDone","record":{"requestId":"aec7a529-47f9-4090-be01-c9ed91bf83cf","status":"timeout","metrics":{"durationMs":5001.182,"producedBytes":0}}},
  {"time":"2026-10-08T07:31:50.581Z","type":"platform.report","record":{"requestId":"aec7a529-47f9-4090-be01-c9ed91bf83cf","metrics":{"durationMs":5000.0,"billedDurationMs":5000,"memorySizeMB":256,"maxMemoryUsedMB":94},"status":"timeout"}},
  {"time":"2026-10-08T07:31:50.600Z","type":"platform.brandNewEvent","record":{"x":1}}
]"#;

fn post_telemetry(server: &TestServer, query: &str, body: &str) -> (u16, serde_json::Value) {
    server.post_json(&format!("/v1/lambda/telemetry?{query}"), &[], body)
}

#[test]
fn telemetry_api_batches_become_invocations_and_logs() {
    let mut server = TestServer::start();
    // Malformed batches are refused whole and store nothing.
    for (query, body) in [
        ("", TELEMETRY_BATCH),
        (
            "function_name=tenner-notifier&architecture=sparc",
            TELEMETRY_BATCH,
        ),
        ("function_name=tenner-notifier", r#"{"not":"an array"}"#),
        (
            "function_name=tenner-notifier",
            r#"[{"time":"2026-10-08T07:30:28Z","type":"platform.report","record":{"metrics":{}}}]"#,
        ),
        ("function_name=tenner-notifier", "[{\"time\":"),
    ] {
        let (status, answer) = post_telemetry(&server, query, body);
        assert_eq!(status, 400, "{query} {body}: {answer}");
        assert!(answer["error"].is_string());
    }
    assert_eq!(
        server.count("SELECT count(*) AS n FROM invocation_records"),
        0
    );

    let q = "function_name=tenner-notifier&function_version=%24LATEST&region=eu-central-1&account_id=825765399535&architecture=arm64";
    let (status, answer) = post_telemetry(&server, q, TELEMETRY_BATCH);
    assert_eq!(status, 200, "{answer}");
    let check = |server: &TestServer| {
        let rows = server.sql(
            "SELECT request_id, trace_id, cold_start, init_duration_ms, duration_ms, billed_duration_ms, memory_size_mb, \
             max_memory_used_mb, architecture, region, runtime, status FROM invocations WHERE function_name = 'tenner-notifier' ORDER BY time",
        );
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(
            rows[0]["request_id"],
            "79b5e81f-9cdd-4145-b1f6-7c50ef8a2a36"
        );
        assert_eq!(rows[0]["trace_id"], "62e900b2710d76f009d6e7785905449a");
        assert_eq!(rows[0]["cold_start"], true);
        assert_eq!(rows[0]["init_duration_ms"].as_f64(), Some(463.512));
        assert_eq!(rows[0]["duration_ms"].as_f64(), Some(1233.96));
        assert_eq!(rows[0]["billed_duration_ms"], 1698);
        assert_eq!(
            (
                rows[0]["memory_size_mb"].as_i64(),
                rows[0]["max_memory_used_mb"].as_i64()
            ),
            (Some(256), Some(123))
        );
        assert_eq!(
            (rows[0]["architecture"].as_str(), rows[0]["region"].as_str()),
            (Some("arm64"), Some("eu-central-1"))
        );
        assert_eq!(rows[0]["runtime"], "nodejs:22.mainline");
        assert_eq!(rows[0]["status"], "ok");
        assert_eq!(rows[1]["cold_start"], false);
        assert_eq!(rows[1]["billed_duration_ms"], 1073);
        assert_eq!(rows[2]["status"], "timeout");
        assert_eq!(rows[2]["duration_ms"].as_f64(), Some(5000.0));
        let logs = server.sql("SELECT body, severity_text, request_id, function_name FROM logs WHERE function_name = 'tenner-notifier'");
        assert_eq!(
            logs,
            vec![
                serde_json::json!({"body": "boom", "severity_text": "ERROR", "request_id": "79b5e81f-9cdd-4145-b1f6-7c50ef8a2a36", "function_name": "tenner-notifier"})
            ]
        );
    };
    check(&server);
    server.kill9();
    let server = server.restart();
    check(&server);
}

fn firehose_record(payload: &serde_json::Value) -> String {
    use base64::Engine;
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(payload.to_string().as_bytes()).expect("gzip");
    base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"))
}

fn post_firehose(
    server: &TestServer,
    key: &str,
    request_id: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let headers = [
        ("x-amz-firehose-request-id", request_id),
        ("x-amz-firehose-access-key", key),
    ];
    server.post_json("/v1/firehose", &headers, body)
}

#[test]
fn firehose_deliveries_of_cloudwatch_logs_become_invocations() {
    let mut server = TestServer::builder()
        .args(&["--firehose-access-key", "s3cr3t-key"])
        .start();
    let data = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/lambda/fh-fn",
        "logStream": "2026/11/28/[$LATEST]94fa867e5374431291a7fc14e2f56ae7", "subscriptionFilters": ["all"],
        "logEvents": [
            {"id": "1", "timestamp": 1764324000000i64, "message": "START RequestId: fh-1 Version: $LATEST\n"},
            {"id": "2", "timestamp": 1764324000100i64, "message": "REPORT RequestId: fh-1\tDuration: 46.84 ms\tBilled Duration: 47 ms \tMemory Size: 192 MB\tMax Memory Used: 72 MB\tInit Duration: 120.5 ms\t\n"},
            {"id": "3", "timestamp": 1764324001000i64, "message": "2026-11-28T10:00:01.000Z f2704689-7aa3-4af3-ac88-857c01c4bd45 Task timed out after 3.00 seconds"},
            {"id": "4", "timestamp": 1764324001001i64, "message": "REPORT RequestId: f2704689-7aa3-4af3-ac88-857c01c4bd45\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\tMemory Size: 192 MB\tMax Memory Used: 80 MB\t"},
            // The JSON log format's platform record.
            {"id": "5", "timestamp": 1764324002000i64, "message": "{\"time\":\"2026-11-28T10:00:02.000Z\",\"type\":\"platform.report\",\"record\":{\"requestId\":\"9a0c4b1e-0000-4000-8000-000000000001\",\"metrics\":{\"durationMs\":12.25,\"billedDurationMs\":13,\"memorySizeMB\":192,\"maxMemoryUsedMB\":60},\"status\":\"success\"}}"}
        ]
    });
    let control = serde_json::json!({"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "", "logStream": "", "subscriptionFilters": [], "logEvents": [{"id": "", "timestamp": 1764324000000i64, "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}]});
    let body = serde_json::json!({"requestId": "body-id", "timestamp": 1764324002000i64,
        "records": [{"data": firehose_record(&data)}, {"data": firehose_record(&control)}]})
    .to_string();

    // A wrong key is refused with the Firehose error shape, and the key is
    // never printed.
    let (status, answer) = post_firehose(&server, "wrong", "req-401", &body);
    assert_eq!(status, 401);
    assert_eq!(answer["requestId"], "req-401");
    assert!(answer["errorMessage"].is_string() && answer["timestamp"].is_i64());
    // A malformed delivery stores nothing.
    let (status, answer) = post_firehose(
        &server,
        "s3cr3t-key",
        "req-bad",
        r#"{"requestId":"x","records":[{"data":"not base64!"}]}"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["requestId"], "req-bad");
    assert_eq!(server.count("SELECT count(*) AS n FROM logs"), 0);

    let (status, answer) = post_firehose(&server, "s3cr3t-key", "req-ok", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["requestId"], "req-ok");
    assert!(answer.get("errorMessage").is_none());
    let check = |server: &TestServer| {
        let rows = server.sql("SELECT request_id, cold_start, init_duration_ms, duration_ms, billed_duration_ms, memory_size_mb, status FROM invocations WHERE function_name = 'fh-fn' ORDER BY time");
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(
            rows[2],
            serde_json::json!({"request_id": "9a0c4b1e-0000-4000-8000-000000000001", "cold_start": false, "init_duration_ms": null, "duration_ms": 12.25, "billed_duration_ms": 13, "memory_size_mb": 192, "status": "ok"})
        );
        assert_eq!(
            rows[0],
            serde_json::json!({"request_id": "fh-1", "cold_start": true, "init_duration_ms": 120.5, "duration_ms": 46.84, "billed_duration_ms": 47, "memory_size_mb": 192, "status": "ok"})
        );
        assert_eq!(rows[1]["status"], "timeout");
        // The control message is skipped; the five lines are logs rows.
        assert_eq!(
            server.count("SELECT count(*) AS n FROM logs WHERE function_name = 'fh-fn'"),
            5
        );
        assert_eq!(server.count("SELECT count(*) AS n FROM logs"), 5);
    };
    check(&server);
    server.kill9();
    let server = server.restart();
    check(&server);
    assert!(!server.log().contains("s3cr3t-key"));
}

/// Every real line of `shared/reference/lambda-samples.txt` (copied to
/// `tests/e2e/fixtures/`) delivered as CloudWatch log events of one function:
/// the view must give exactly these invocations.
#[test]
fn the_shared_samples_give_exact_invocations() {
    let server = TestServer::start();
    let text = std::fs::read_to_string(
        crate::support::repo_root().join("tests/e2e/fixtures/lambda-samples.txt"),
    )
    .expect("fixture");
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, l)| serde_json::json!({"id": i.to_string(), "timestamp": 1764324000000i64 + i as i64, "message": l.replace("\\t", "\t")}))
        .collect();
    let data = serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/lambda/samples",
        "logStream": "s", "subscriptionFilters": ["f"], "logEvents": events});
    let body = serde_json::json!({"requestId": "samples", "timestamp": 1, "records": [{"data": firehose_record(&data)}]}).to_string();
    let (status, answer) = post_firehose(&server, "", "samples", &body);
    assert_eq!(status, 200, "{answer}");
    let rows = server.sql(
        "SELECT request_id, function_version, trace_id, cold_start, init_duration_ms, duration_ms, billed_duration_ms, \
         memory_size_mb, max_memory_used_mb, status FROM invocations WHERE function_name = 'samples' ORDER BY request_id",
    );
    let got: std::collections::BTreeMap<String, serde_json::Value> = rows
        .into_iter()
        .map(|r| (r["request_id"].as_str().unwrap_or_default().to_string(), r))
        .collect();
    let n = serde_json::Value::Null;
    // request id → (version, trace id, cold, init, duration, billed, memory, max memory, status)
    type V = serde_json::Value;
    type Expected<'a> = (&'a str, V, V, bool, V, V, V, V, V, &'a str);
    let expected: Vec<Expected> = vec![
        (
            "c793869b-ee49-115b-a5b6-4fd21e8dedac",
            "$LATEST".into(),
            n.clone(),
            true,
            166.62.into(),
            128.83.into(),
            200.into(),
            128.into(),
            74.into(),
            "ok",
        ),
        (
            "4ce9340a-b765-490f-ad8a-02ab3415e2bf",
            n.clone(),
            n.clone(),
            false,
            n.clone(),
            26.73.into(),
            27.into(),
            128.into(),
            75.into(),
            "ok",
        ),
        (
            "bf5f58db-ef7d-4cb2-b3c6-266eba1bbedb",
            n.clone(),
            n.clone(),
            true,
            265.72.into(),
            395.99.into(),
            662.into(),
            512.into(),
            301.into(),
            "ok",
        ),
        (
            "b771fecc-1b53-4faf-922d-1d74357b1676",
            n.clone(),
            n.clone(),
            true,
            511.25.into(),
            306.34.into(),
            610.into(),
            3009.into(),
            155.into(),
            "ok",
        ),
        (
            "24addd09-6e64-49fb-b187-94ba9b60b59a",
            n.clone(),
            "66d978e556c7378e556e94b5461da07c".into(),
            true,
            325.93.into(),
            127.1.into(),
            154.into(),
            2048.into(),
            212.into(),
            "ok",
        ),
        (
            "f2704689-7aa3-4af3-ac88-857c01c4bd45",
            n.clone(),
            n.clone(),
            false,
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            "timeout",
        ),
        (
            "4725a167-21a7-5731-99c2-c3d0e3dfd770",
            n.clone(),
            n.clone(),
            false,
            n.clone(),
            180000.0.into(),
            180000.into(),
            1280.into(),
            1201.into(),
            "timeout",
        ),
        (
            "327ec045-e1e7-45f8-8369-c7950e1a5f6f",
            n.clone(),
            n.clone(),
            false,
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            "timeout",
        ),
        (
            "806ab12b-e660-4a4a-8d9a-eee01e457f98",
            n.clone(),
            n.clone(),
            true,
            551.73.into(),
            376256.59.into(),
            376257.into(),
            10239.into(),
            10239.into(),
            "oom",
        ),
        (
            "43e50939ce8c",
            n.clone(),
            n.clone(),
            false,
            n.clone(),
            3296.38.into(),
            3297.into(),
            128.into(),
            128.into(),
            "oom",
        ),
        (
            "79b5e81f-9cdd-4145-b1f6-7c50ef8a2a36",
            "$LATEST".into(),
            n.clone(),
            true,
            463.512.into(),
            1233.96.into(),
            1698.into(),
            256.into(),
            123.into(),
            "ok",
        ),
        (
            "f0c9f58b-8ebe-4e84-a656-95eb6eee865a",
            n.clone(),
            n.clone(),
            false,
            n.clone(),
            1072.145.into(),
            1073.into(),
            256.into(),
            125.into(),
            "ok",
        ),
        (
            "aec7a529-47f9-4090-be01-c9ed91bf83cf",
            n.clone(),
            n.clone(),
            false,
            n.clone(),
            5000.0.into(),
            5000.into(),
            128.into(),
            94.into(),
            "timeout",
        ),
        (
            "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa",
            "$LATEST".into(),
            "62e900b2710d76f009d6e7785905449a".into(),
            false,
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            "ok",
        ),
    ];
    assert_eq!(
        got.len(),
        expected.len(),
        "{:?}",
        got.keys().collect::<Vec<_>>()
    );
    for (rid, version, trace, cold, init, duration, billed, mem, max_mem, status) in expected {
        let r = got
            .get(rid)
            .unwrap_or_else(|| panic!("no invocation {rid}"));
        // A timeout-only line has no duration: the billed duration stays unknown.
        let billed = if duration.is_null() {
            n.clone()
        } else {
            billed
        };
        assert_eq!(
            (
                &r["function_version"],
                &r["trace_id"],
                r["cold_start"].as_bool(),
                &r["init_duration_ms"],
                &r["duration_ms"],
                &r["billed_duration_ms"],
                &r["memory_size_mb"],
                &r["max_memory_used_mb"],
                r["status"].as_str()
            ),
            (
                &version,
                &trace,
                Some(cold),
                &init,
                &duration,
                &billed,
                &mem,
                &max_mem,
                Some(status)
            ),
            "{rid}"
        );
    }
}

/// OTLP/JSON traces of handler spans from one instance of a Cloud Run
/// function that, like many instrumentations, set no `faas.coldstart`:
/// `(request id, start second, faas.coldstart)`.
fn instance_spans(instance: &str, spans: &[(&str, i64, Option<bool>)]) -> String {
    let base_ns: i64 = 1_764_403_200_000_000_000; // 2025-11-29T08:00:00Z
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .enumerate()
        .map(|(i, (rid, second, cold))| {
            let start = base_ns + second * 1_000_000_000;
            let mut attributes = vec![
                serde_json::json!({"key": "faas.invocation_id", "value": {"stringValue": rid}}),
                serde_json::json!({"key": "faas.trigger", "value": {"stringValue": "http"}}),
            ];
            if let Some(c) = cold {
                attributes
                    .push(serde_json::json!({"key": "faas.coldstart", "value": {"boolValue": c}}));
            }
            serde_json::json!({
                "traceId": format!("{:032x}", 0xabc000 + second * 16 + i as i64),
                "spanId": format!("{:016x}", 0x100 + second * 16 + i as i64),
                "name": "POST /", "kind": 2,
                "startTimeUnixNano": start.to_string(),
                "endTimeUnixNano": (start + 80_000_000).to_string(),
                "attributes": attributes,
            })
        })
        .collect();
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "quote"}},
            {"key": "faas.name", "value": {"stringValue": "quote"}},
            {"key": "faas.instance", "value": {"stringValue": instance}},
            {"key": "cloud.provider", "value": {"stringValue": "gcp"}},
            {"key": "cloud.region", "value": {"stringValue": "us-central1"}}]},
        "scopeSpans": [{"spans": spans}]}]})
    .to_string()
}

fn cold_starts(server: &TestServer) -> Vec<(String, Option<bool>)> {
    server
        .sql("SELECT request_id, cold_start FROM invocations ORDER BY request_id")
        .iter()
        .map(|r| {
            (
                r["request_id"].as_str().expect("id").to_string(),
                r["cold_start"].as_bool(),
            )
        })
        .collect()
}

#[test]
fn the_first_invocation_of_an_instance_is_a_cold_start_across_restarts() {
    let mut server = TestServer::builder()
        .args(&["--flush-interval", "1h"])
        .start();
    let post = |server: &TestServer, body: String| {
        let (status, body) = server.post_json("/v1/traces", &[], &body);
        assert_eq!(status, 200, "{body}");
    };
    // One request: the earlier of instance a's two invocations is its
    // first, whatever the order the spans come in.
    post(
        &server,
        instance_spans("a", &[("r2", 5, None), ("r1", 1, None)]),
    );
    // Later requests: a is known; b is new; c said it was warm itself.
    post(&server, instance_spans("a", &[("r3", 9, None)]));
    post(&server, instance_spans("b", &[("r4", 10, None)]));
    post(&server, instance_spans("c", &[("r5", 11, Some(false))]));
    post(&server, instance_spans("c", &[("r6", 12, None)]));
    let expected = |ids: &[(&str, bool)]| -> Vec<(String, Option<bool>)> {
        ids.iter().map(|(r, c)| (r.to_string(), Some(*c))).collect()
    };
    let before = expected(&[
        ("r1", true),
        ("r2", false),
        ("r3", false),
        ("r4", true),
        ("r5", false),
        ("r6", false),
    ]);
    assert_eq!(cold_starts(&server), before);

    // kill -9: everything is in the WAL only; replay gives the same flags
    // and remembers the instances.
    server = server.restart();
    assert_eq!(cold_starts(&server), before);
    post(&server, instance_spans("a", &[("r7", 20, None)]));
    post(&server, instance_spans("d", &[("r8", 21, None)]));

    // A clean stop flushes (and saves the map); the next start reads the
    // Parquet files and the saved map, not the WAL.
    server.terminate();
    let data_dir = server.data_dir.clone();
    assert!(data_dir.join("instances.json").exists());
    server = server.restart();
    post(&server, instance_spans("d", &[("r9", 30, None)]));
    post(&server, instance_spans("e", &[("r10", 31, None)]));
    let mut after = before.clone();
    after.extend(expected(&[
        ("r7", false),
        ("r8", true),
        ("r9", false),
        ("r10", true),
    ]));
    after.sort();
    assert_eq!(cold_starts(&server), after);
    let rate = server
        .sql("SELECT count(*) FILTER (WHERE cold_start) AS cold, count(*) AS n FROM invocations");
    assert_eq!(rate[0]["cold"], 4);
    assert_eq!(rate[0]["n"], 10);
}

/// A flush that cannot save the instance map fails before its checkpoint:
/// its rows stay buffered and in the WAL, so after a kill -9 the replay
/// still knows the instance and its next invocation is warm. Once the map
/// can be written, the next flush saves it and the rows, once each.
#[test]
fn a_flush_that_cannot_save_the_instance_map_keeps_the_wal_that_knows_the_instances() {
    let mut server = TestServer::builder()
        .args(&["--flush-interval", "1s"])
        .start();
    // The map is written as `instances.json.tmp` and renamed: a directory
    // in that place makes the save fail, and nothing else.
    let blocker = server.data_dir.join("instances.json.tmp");
    std::fs::create_dir(&blocker).expect("blocker");
    let (status, body) =
        server.post_json("/v1/traces", &[], &instance_spans("a", &[("r1", 1, None)]));
    assert_eq!(status, 200, "{body}");
    wait_until("a flush to try", || {
        server
            .metric("faasight_flush_failures_total")
            .unwrap_or(0.0)
            >= 1.0
            || server.metric("faasight_flushed_rows_total").unwrap_or(0.0) >= 1.0
    });
    let log = server.wait_for_log("could not save the instance map");
    assert!(log.contains("instances.json"), "{log}");
    assert_eq!(server.metric("faasight_flushed_rows_total"), Some(0.0));
    assert_eq!(cold_starts(&server), [("r1".to_string(), Some(true))]);

    server.kill9();
    std::fs::remove_dir(&blocker).expect("unblock");
    server = server.restart();
    let (status, body) =
        server.post_json("/v1/traces", &[], &instance_spans("a", &[("r2", 5, None)]));
    assert_eq!(status, 200, "{body}");
    let expected = vec![
        ("r1".to_string(), Some(true)),
        ("r2".to_string(), Some(false)),
    ];
    assert_eq!(cold_starts(&server), expected);
    wait_until("the rows to be flushed", || {
        server.metric("faasight_flushed_rows_total").unwrap_or(0.0) >= 2.0
    });
    assert_eq!(server.metric("faasight_flush_failures_total"), Some(0.0));
    let saved = std::fs::read_to_string(server.data_dir.join("instances.json")).expect("map");
    assert!(saved.contains(r#""quote","a""#), "{saved}");
    assert_eq!(cold_starts(&server), expected);
    assert_eq!(server.count("SELECT count(*) FROM spans"), 2);
}

/// A CloudWatch metric stream delivered by Firehose, in both output formats
/// (JSON lines; OpenTelemetry 1.0 length-delimited protobuf, built here with
/// the `opentelemetry-proto` types a stream's records decode to), lands in
/// `metrics` with each point's function.
#[test]
fn firehose_deliveries_of_metric_streams_become_metrics() {
    use base64::Engine;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        Metric, ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint, metric,
        summary_data_point::ValueAtQuantile,
    };
    use prost::Message;

    let server = TestServer::start();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let json_record = [
        ("ProvisionedConcurrencyUtilization", 0.75, 3.0),
        ("ProvisionedConcurrentExecutions", 7.5, 3.0),
    ]
    .iter()
    .map(|(name, sum, count)| {
        serde_json::json!({
            "metric_stream_name": "all", "account_id": "123456789012", "region": "us-east-1",
            "namespace": "AWS/Lambda", "metric_name": name,
            "dimensions": {"FunctionName": "reserved", "Resource": "reserved:live"},
            "timestamp": 1764403200000i64,
            "value": {"max": sum, "min": 0.0, "sum": sum, "count": count}, "unit": "None"
        })
        .to_string()
            + "\n"
    })
    .collect::<String>();
    let text = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let otlp_request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![text("cloud.provider", "aws")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "amazonaws.com/AWS/Lambda/ProvisionedConcurrencyUtilization".into(),
                    data: Some(metric::Data::Summary(Summary {
                        data_points: vec![SummaryDataPoint {
                            time_unix_nano: 1_764_403_260_000_000_000,
                            count: 2,
                            sum: 0.5,
                            quantile_values: vec![
                                ValueAtQuantile {
                                    quantile: 0.0,
                                    value: 0.2,
                                },
                                ValueAtQuantile {
                                    quantile: 1.0,
                                    value: 0.3,
                                },
                            ],
                            attributes: vec![KeyValue {
                                key: "Dimensions".into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                                        values: vec![text("FunctionName", "standby")],
                                    })),
                                }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = serde_json::json!({
        "requestId": "ms-1", "timestamp": 1764403300000i64,
        "records": [
            {"data": b64(json_record.as_bytes())},
            {"data": b64(&otlp_request.encode_length_delimited_to_vec())},
        ]
    });
    let (status, answer) = post_firehose(&server, "", "ms-1", &body.to_string());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["requestId"], "ms-1");
    let rows = server.sql(
        "SELECT function_name, name, \"sum\" / \"count\" AS avg, min, max FROM metrics \
         ORDER BY function_name, name",
    );
    assert_eq!(
        rows,
        serde_json::json!([
            {"function_name": "reserved", "name": "amazonaws.com/AWS/Lambda/ProvisionedConcurrencyUtilization",
             "avg": 0.25, "min": 0.0, "max": 0.75},
            {"function_name": "reserved", "name": "amazonaws.com/AWS/Lambda/ProvisionedConcurrentExecutions",
             "avg": 2.5, "min": 0.0, "max": 7.5},
            {"function_name": "standby", "name": "amazonaws.com/AWS/Lambda/ProvisionedConcurrencyUtilization",
             "avg": 0.25, "min": 0.2, "max": 0.3},
        ])
        .as_array()
        .expect("array")
        .clone()
    );
    // A record that is neither logs nor a metric stream refuses the
    // delivery and stores nothing.
    let bad = serde_json::json!({"requestId": "ms-2", "timestamp": 1, "records": [
        {"data": b64(json_record.as_bytes())}, {"data": b64(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1])}]});
    let (status, answer) = post_firehose(&server, "", "ms-2", &bad.to_string());
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("record 1")),
        "{answer}"
    );
    assert_eq!(server.count("SELECT count(*) AS n FROM metrics"), 3);
}
