//! The coalesced layout of `invocations`: settled hours merged on disk give
//! exactly the rows the merge of the raw records gives, and late records
//! (into hours already coalesced, across an hour boundary, for an invocation
//! already merged) are merged right away and coalesced again by the server.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{BIN, TestServer, generate, run_ok};

/// Every row of `invocations`, every column, as the CLI prints it.
const ALL_ROWS: &str = "SELECT * FROM invocations ORDER BY function_name, request_id";

/// (The data directory is given relative to the working directory, as a
/// user in the directory above it would.)
fn cli_csv(data: &Path, sql: &str) -> String {
    let out = run_ok(
        Command::new(BIN)
            .current_dir(data.parent().expect("parent"))
            .args(["query", "--format", "csv", "--data-dir"])
            .arg(data.file_name().expect("name"))
            .arg(sql),
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The coalesced files of each hour directory, by name.
fn coalesced_files(data: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(dates) = std::fs::read_dir(data.join("invocations")) else {
        return out;
    };
    for date in dates.flatten() {
        for hour in std::fs::read_dir(date.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(hour.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.insert(format!(
                    "{}/{}/{}",
                    date.file_name().to_string_lossy(),
                    hour.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                ));
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn coalesced_hours_equal_the_raw_merge_and_late_records_are_merged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let summary = generate(
        &data,
        &[
            "--invocations",
            "3000",
            "--functions",
            "6",
            "--days",
            "1",
            "--trace-share",
            "0.3",
            "--seed",
            "11",
            "--until",
            "2026-11-20T00:00:00Z",
        ],
    );
    // One day in the past: every hour is settled and coalesced.
    assert!(summary.contains("24 hours coalesced"), "{summary}");
    let files = coalesced_files(&data);
    assert_eq!(files.len(), 24, "{files:?}");
    assert!(files.iter().all(|f| f.contains("/coalesced-")), "{files:?}");

    // Oracle: the same directory without the coalesced files, where every
    // hour is merged from the raw records at query time. Every column of
    // every row must be the same.
    let raw_only = tmp.path().join("raw-only");
    copy_dir(&data, &raw_only);
    std::fs::remove_dir_all(raw_only.join("invocations")).expect("rm invocations");
    let coalesced_rows = cli_csv(&data, ALL_ROWS);
    let merged_rows = cli_csv(&raw_only, ALL_ROWS);
    assert_eq!(coalesced_rows.lines().count(), 3001, "header + 3000 rows");
    assert!(
        coalesced_rows == merged_rows,
        "coalesced and merged rows differ"
    );
    // Aggregates over a time range that cuts through hours agree too.
    let ranged = "SELECT function_name, count(*) AS n, sum(CASE WHEN cold_start THEN 1 ELSE 0 END) AS cold, \
                  sum(billed_duration_ms) AS billed, round(sum(cost_usd), 9) AS cost \
                  FROM invocations WHERE time >= '2026-11-19T05:30:00Z' AND time < '2026-11-19T17:15:00Z' \
                  GROUP BY function_name ORDER BY function_name";
    assert_eq!(cli_csv(&data, ranged), cli_csv(&raw_only, ranged));

    // The coalesced files declare their low-cardinality text columns as
    // dictionaries; the scan hands those over as such and decodes them
    // above, except where an aggregate only groups by them. Queries of
    // every shape give what the raw merge gives.
    let file = data
        .join("invocations")
        .join(files.first().expect("a file"));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).expect("open coalesced file"),
    )
    .expect("parquet");
    for (column, dictionary) in [
        ("function_name", true),
        ("region", true),
        ("status", true),
        ("request_id", false),
    ] {
        let field = reader.schema().field_with_name(column).expect("column");
        assert_eq!(
            matches!(
                field.data_type(),
                arrow::datatypes::DataType::Dictionary(..)
            ),
            dictionary,
            "{column}: {field:?}"
        );
    }
    for sql in [
        "SELECT * FROM invocations ORDER BY time DESC, request_id LIMIT 5",
        "SELECT function_name, region, architecture, status, count(*) AS n, \
         round(sum(cost_usd), 9) AS cost FROM invocations GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        "SELECT function_name, date_trunc('hour', time) AS hour, \
         avg(CASE WHEN cold_start THEN 1.0 ELSE 0.0 END) AS rate FROM invocations \
         WHERE time >= '2026-11-19T06:00:00Z' GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT count(*) AS n, round(sum(duration_ms), 3) AS d FROM invocations \
         WHERE function_name = (SELECT min(function_name) FROM invocations) AND region <> 'x'",
        "SELECT upper(function_name) AS f, max(trigger) AS t, count(DISTINCT runtime) AS r \
         FROM invocations GROUP BY 1 ORDER BY 1",
        "SELECT DISTINCT provider, account_id FROM invocations ORDER BY 1, 2",
        "SELECT function_name, percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99, \
         percentile_cont(0.5) WITHIN GROUP (ORDER BY init_duration_ms) AS init_p50, count(*) AS n \
         FROM invocations GROUP BY 1 ORDER BY 1",
    ] {
        assert_eq!(cli_csv(&data, sql), cli_csv(&raw_only, sql), "{sql}");
    }
    let grouped = cli_csv(
        &data,
        "EXPLAIN SELECT function_name, region, sum(cost_usd) FROM invocations GROUP BY 1, 2",
    );
    assert!(
        grouped.contains("RunGroupedAggregateExec") && !grouped.contains("DecodeExec"),
        "{grouped}"
    );
    // The exact percentile in one phase over the scan's dictionaries.
    let p99 = cli_csv(
        &data,
        "EXPLAIN SELECT function_name, percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) \
         FROM invocations GROUP BY 1",
    );
    assert!(
        p99.contains("RunGroupedAggregateExec: mode=Single")
            && !p99
                .lines()
                .any(|l| l.contains("mode=Partial") && l.contains("percentile_cont"))
            && !p99.contains("DecodeExec"),
        "{p99}"
    );
    let listed = cli_csv(&data, "EXPLAIN SELECT * FROM invocations LIMIT 1");
    assert!(listed.contains("DecodeExec"), "{listed}");

    let server = TestServer::builder().data_dir(&data).start();
    let count = |s: &TestServer| s.count("SELECT count(*) AS n FROM invocations");
    assert_eq!(count(&server), 3000);
    // A generated invocation of a coalesced hour, to get a late record.
    let known = server.sql(
        "SELECT function_name, request_id, time, status FROM invocations \
         WHERE time >= '2026-11-19T14:00:00Z' AND status = 'ok' ORDER BY time LIMIT 1",
    );
    let (known_fn, known_id) = (
        known[0]["function_name"]
            .as_str()
            .expect("function")
            .to_string(),
        known[0]["request_id"]
            .as_str()
            .expect("request")
            .to_string(),
    );

    // Late records: a new invocation whose START lies at 10:59:59.5 and whose
    // span-like record (trace id, cold start) lies in the next hour, and a
    // failure for the known invocation.
    let body = serde_json::json!([
        {"time": "2026-11-19T10:59:59.500Z", "function_name": "late-fn", "request_id": "late-1",
         "duration_ms": 900.0, "billed_duration_ms": 900, "memory_size_mb": 512,
         "architecture": "arm64", "region": "us-east-1", "status": "ok"},
        {"time": "2026-11-19T11:00:00.200Z", "function_name": "late-fn", "request_id": "late-1",
         "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "cold_start": true},
        {"time": known[0]["time"], "function_name": known_fn, "request_id": known_id,
         "status": "error", "error_type": "Runtime.Late"}
    ]);
    let (status, answer) = server.post_json("/v1/invocations", &[], &body.to_string());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 3, "{answer}");

    let check = |s: &TestServer| {
        assert_eq!(count(s), 3001, "one new invocation, no duplicate");
        let late = s.sql(
            "SELECT time, trace_id, cold_start, duration_ms, memory_size_mb, status, cost_usd \
             FROM invocations WHERE function_name = 'late-fn'",
        );
        assert_eq!(late.len(), 1, "{late:?}");
        assert_eq!(late[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(late[0]["cold_start"], true);
        assert_eq!(late[0]["memory_size_mb"], 512);
        assert!(
            late[0]["time"]
                .as_str()
                .is_some_and(|t| t.starts_with("2026-11-19T10:59:59.5")),
            "{late:?}"
        );
        // arm64 us-east-1: 900 ms × 0.5 GB × $0.0000133334 + $0.0000002.
        let cost = late[0]["cost_usd"].as_f64().expect("cost");
        assert!(
            (cost - (0.9 * 0.5 * 0.0000133334 + 0.0000002)).abs() < 1e-12,
            "{cost}"
        );
        let merged = s.sql(&format!(
            "SELECT status, error_type, duration_ms FROM invocations \
             WHERE function_name = '{known_fn}' AND request_id = '{known_id}'"
        ));
        assert_eq!(merged.len(), 1, "{merged:?}");
        assert_eq!(merged[0]["status"], "error");
        assert_eq!(merged[0]["error_type"], "Runtime.Late");
        assert!(merged[0]["duration_ms"].as_f64().is_some(), "{merged:?}");
        // Grouped by function over coalesced and merged hours together.
        let per_function =
            s.sql("SELECT function_name, count(*) AS n FROM invocations GROUP BY 1 ORDER BY 1");
        let total: i64 = per_function
            .iter()
            .map(|r| r["n"].as_i64().expect("n"))
            .sum();
        assert_eq!(total, 3001, "{per_function:?}");
        assert!(
            per_function
                .iter()
                .any(|r| r["function_name"] == "late-fn" && r["n"] == 1),
            "{per_function:?}"
        );
    };
    // Still in the buffer: those hours are merged from the raw records.
    check(&server);
    // The union of coalesced files and merged hours: the merge's function
    // names are encoded, the files' taken undecoded.
    let plan = server.sql("EXPLAIN SELECT function_name, count(*) FROM invocations GROUP BY 1");
    let plan = plan
        .iter()
        .map(|r| r["plan"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        plan.contains("UnionExec")
            && plan.contains("AS Dictionary(Int32, Utf8)")
            && !plan.contains("DecodeExec"),
        "{plan}"
    );

    // After a restart the server coalesces the hours the late records made
    // stale (10, 11 and their neighbours, and the known invocation's hour
    // with its neighbours) and answers the same from the new files.
    let server = server.restart();
    server.wait_for_log("invocations coalesced");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (_, metrics) = loop {
        let (status, metrics) = server.get("/metrics");
        assert_eq!(status, 200);
        let after = coalesced_files(&data);
        if after.difference(&files).count() >= 4 || Instant::now() > deadline {
            break (after, metrics);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let after = coalesced_files(&data);
    let new: Vec<&String> = after.difference(&files).collect();
    for hour in ["hour=09", "hour=10", "hour=11", "hour=12"] {
        assert!(
            new.iter()
                .any(|f| f.starts_with("date=2026-11-19/") && f.contains(hour)),
            "{hour} not coalesced again: {new:?}"
        );
    }
    assert!(
        metrics.contains("faasight_invocations_coalesced_hours 24"),
        "{metrics}"
    );
    check(&server);
    // The replaced files are still on disk (for queries planned before),
    // and not read twice.
    assert!(after.len() > 24);
    let all: Vec<Value> = server.sql(ALL_ROWS);
    assert_eq!(all.len(), 3001);
}
