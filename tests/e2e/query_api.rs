//! SQL over HTTP and from `faasight query`: formats, refusals, limits.

use std::process::Command;
use std::time::Duration;

use crate::sql_golden::pg_query;
use crate::support::{BIN, PUBLIC_TABLES, TestServer, cli_query, generate};

fn send_spans(server: &TestServer, n: usize) {
    let spans: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "traceId": format!("{:032x}", i + 1), "spanId": format!("{:016x}", i + 1),
                "name": format!("op-{}", i % 3), "kind": 2,
                "startTimeUnixNano": "1764331200000000000", "endTimeUnixNano": "1764331200100000000",
                "attributes": [{"key": "http.route", "value": {"stringValue": "/r"}}]
            })
        })
        .collect();
    let body = serde_json::json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "q"}}]}, "scopeSpans": [{"spans": spans}]}]});
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/traces", server.http_url()))
        .json(&body)
        .send()
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
}

#[test]
fn formats_refusals_and_the_cli_agree() {
    let mut server = TestServer::start();
    send_spans(&server, 30);
    let sql = "SELECT name, count(*) AS n FROM spans GROUP BY name ORDER BY name";
    let rows = server.sql(sql);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0], serde_json::json!({"name": "op-0", "n": 10}));

    let (status, csv) = server.query_raw(sql, "csv");
    assert_eq!(status, 200);
    assert_eq!(csv, "name,n\nop-0,10\nop-1,10\nop-2,10\n");
    let (status, nd) = server.query_raw(sql, "ndjson");
    assert_eq!(status, 200);
    assert_eq!(nd.lines().count(), 3);
    let (status, csv) = server.query_raw("SELECT attributes FROM spans LIMIT 1", "csv");
    assert_eq!(status, 200, "maps render in CSV: {csv}");
    assert!(csv.contains("http.route"));
    let resp = reqwest::blocking::Client::new()
        .post(format!("http://{}/api/v1/query", server.api))
        .json(&serde_json::json!({"sql": sql, "format": "arrow"}))
        .send()
        .expect("arrow");
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = resp.bytes().expect("body");
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .expect("arrow stream");
    let n: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(n, 3);

    // information_schema lists the tables.
    let tables = server.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name");
    let names: Vec<&str> = tables
        .iter()
        .filter_map(|r| r["table_name"].as_str())
        .collect();
    assert_eq!(names, PUBLIC_TABLES);

    // Unsafe statements are refused and create nothing.
    let target = server.data_dir.join("../copied.csv");
    let unsafe_sql = [
        format!("COPY (SELECT 1) TO '{}'", target.display()),
        "DROP TABLE spans".to_string(),
        "CREATE TABLE t AS SELECT 1".to_string(),
        format!(
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{}'",
            target.display()
        ),
        "INSERT INTO spans SELECT * FROM spans".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "SELECT * FROM '/etc/passwd'".to_string(),
        "SELECT 1; DROP TABLE spans".to_string(),
        "not sql at all".to_string(),
    ];
    for sql in &unsafe_sql {
        let (status, body) = server.query_raw(sql, "json");
        assert_eq!(status, 400, "{sql} was not refused: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    assert!(!target.exists());
    assert_eq!(server.count("SELECT count(*) AS n FROM spans"), 30);
    // A request body past the 2 MiB limit: a JSON 413 the client reads
    // whole, and the server answers the next query.
    let huge = format!("SELECT 1 /* {} */", "x".repeat(16 << 20));
    let (status, body) = server.query_raw(&huge, "json");
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("exceeds the limit of 2097152 bytes"),
        "{body}"
    );

    // The CLI on the same directory, beside the running server, sees the
    // same rows (committed files plus the WAL), and after a clean stop too.
    let data_dir = server.data_dir.clone();
    let cli = |format: &str| cli_query(&data_dir, format, sql);
    let json: Vec<serde_json::Value> = serde_json::from_str(&cli("json")).expect("cli json");
    assert_eq!(json, rows);
    server.terminate();
    let json: Vec<serde_json::Value> = serde_json::from_str(&cli("json")).expect("cli json");
    assert_eq!(json, rows);
    assert!(cli("table").contains("| op-1 | 10 |"));
    let out = Command::new(BIN)
        .args(["query", "--data-dir", "/nonexistent/faasight", "SELECT 1"])
        .output()
        .expect("cli");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no data directory"));
}

/// Runs `sql` over HTTP on a thread while `spans` spans are sent: ingest
/// must answer while the query runs. The query's status and body.
fn query_while_ingesting(server: &TestServer, sql: &str, spans: usize) -> (u16, String) {
    let url = format!("http://{}/api/v1/query", server.api);
    let body = serde_json::json!({ "sql": sql });
    let query = std::thread::spawn(move || {
        let resp = reqwest::blocking::Client::new()
            .post(url)
            .json(&body)
            .send()
            .expect("runaway query");
        (resp.status().as_u16(), resp.text().expect("body"))
    });
    std::thread::sleep(Duration::from_millis(300));
    send_spans(server, spans);
    query.join().expect("query thread")
}

#[test]
fn runaway_query_stops_at_the_timeout_while_ingest_goes_on() {
    let server = TestServer::builder()
        .args(&["--query-timeout", "1s"])
        .start();
    send_spans(&server, 200);
    // 200^4 combinations through a nested-loop join whose filter rejects
    // every one: the join loops over its repartitioned input without
    // producing a row, so it stops only where that input yields.
    let (status, body) = query_while_ingesting(
        &server,
        "SELECT count(*) FROM spans a, spans b, spans c, spans d \
         WHERE a.name || b.name || c.name || d.name LIKE '%zz%'",
        10,
    );
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("timeout"), "{body}");
    // The query really stopped: its join state is given back (a join that
    // never yields keeps running, and holding it, for minutes).
    assert_eq!(server.query_memory_after_settling(), 0);
    assert_eq!(server.count("SELECT count(*) AS n FROM spans"), 210);

    // A join without an equality condition passes over its whole left side
    // (a million rows here) for every probe batch without returning: it
    // held the runtime, ingest included, until it finished (past the
    // client's timeout; figures in benches/query-report.md).
    let (status, body) = query_while_ingesting(
        &server,
        "SELECT count(*) FROM generate_series(1, 1000000) a \
         JOIN generate_series(1, 10000000) b ON a.value + b.value < 0",
        5,
    );
    assert_eq!(status, 408, "{body}");
    assert_eq!(server.query_memory_after_settling(), 0);
    assert_eq!(server.count("SELECT count(*) AS n FROM spans"), 215);
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("faasight_queries_timed_out_total 2"),
        "{metrics}"
    );
}

/// `faasight generate` of `invocations` over `functions` functions in the
/// day before 2026-11-20, from `seed`, into `data`.
fn generate_day(data: &std::path::Path, invocations: u32, functions: u32, seed: u32) {
    let (invocations, functions, seed) = (
        invocations.to_string(),
        functions.to_string(),
        seed.to_string(),
    );
    generate(
        data,
        &[
            "--invocations",
            &invocations,
            "--functions",
            &functions,
            "--days",
            "1",
            "--seed",
            &seed,
            "--until",
            "2026-11-20T00:00:00Z",
        ],
    );
}

#[test]
fn a_query_over_its_memory_limit_fails_clearly_and_the_others_still_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    generate_day(&data, 20000, 5, 3);
    let server = TestServer::builder()
        .data_dir(&data)
        .args(&["--query-max-memory", "8MiB"])
        .start();
    // An aggregate that cannot spill, holding ~20k × 420 bytes (> 8 MiB).
    let heavy = "SELECT cardinality(array_agg(concat(request_id, repeat('x', 400)))) AS n FROM invocation_records";
    let (status, body) = server.query_raw(heavy, "json");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("memory limit of 8.0 MiB") && body.contains("--query-max-memory"),
        "{body}"
    );
    let over_pg = pg_query(&server.pg, &[(heavy.to_string(), vec![])], false);
    // 53200: out_of_memory.
    assert_eq!(over_pg[0]["sqlstate"], "53200", "{}", over_pg[0]);
    // The same aggregate over fewer rows fits, and so do ordinary queries:
    // the failed query gave its memory back.
    let light = server.sql(
        "SELECT cardinality(array_agg(concat(request_id, repeat('x', 400)))) AS n \
         FROM (SELECT request_id FROM invocation_records LIMIT 1000)",
    );
    assert_eq!(light[0]["n"], 1000);
    assert_eq!(server.count("SELECT count(*) AS n FROM invocations"), 20000);
}

/// An exact percentile over more values than `--query-max-memory` holds
/// in one phase starts over in DataFusion's two phases, and answers as
/// `faasight query` does with the default limit.
#[test]
fn a_percentile_over_more_values_than_the_memory_limit_still_answers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    generate_day(&data, 20000, 10, 4);
    // 20,000 invocations × 75 = 1.5M values, 12 MB as doubles, in 750
    // groups: the one phase needs ~15.5 MiB, the two phases fit in 14 MiB
    // (the partial aggregates emit early, the final ones spill). No ORDER
    // BY: a sort at the top would need a spill reservation of its own.
    let sql = "SELECT function_name, k, \
               percentile_cont(0.9) WITHIN GROUP (ORDER BY duration_ms + k) AS p, count(*) AS n \
               FROM invocations CROSS JOIN (SELECT value AS k FROM generate_series(1, 75)) \
               GROUP BY 1, 2";
    let sorted = |rows: Vec<serde_json::Value>| {
        let mut rows: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        rows.sort_unstable();
        rows
    };
    let expected = sorted(serde_json::from_str(&cli_query(&data, "json", sql)).expect("json"));
    assert_eq!(expected.len(), 750);

    let server = TestServer::builder()
        .data_dir(&data)
        .args(&["--query-max-memory", "14MiB"])
        .start();
    assert_eq!(sorted(server.sql(sql)), expected);
    let analyzed = server.sql(&format!("EXPLAIN ANALYZE {sql}"));
    let plan = serde_json::Value::Array(analyzed).to_string();
    assert!(plan.contains("two_phase_restarts=1"), "{plan}");
}

#[test]
fn results_over_the_row_or_byte_limit_are_refused_on_http_and_pg_wire() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    generate_day(&data, 2000, 3, 5);
    let server = TestServer::builder()
        .data_dir(&data)
        .args(&[
            "--query-max-rows",
            "500",
            "--query-max-result-bytes",
            "64KiB",
        ])
        .start();
    let too_many_rows = "SELECT request_id FROM invocation_records LIMIT 600";
    // 100 rows of 1000 bytes: under the row limit, over 64 KiB.
    let too_many_bytes = "SELECT repeat('x', 1000) AS pad FROM invocation_records LIMIT 100";
    // 50 rows of 1000 bytes fit.
    let fits = "SELECT repeat('x', 1000) AS pad FROM invocation_records LIMIT 50";

    let (status, body) = server.query_raw(too_many_rows, "json");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("result exceeds 500 rows"), "{body}");
    for format in ["json", "csv", "arrow"] {
        let (status, body) = server.query_raw(too_many_bytes, format);
        assert_eq!(status, 400, "{format}: {body}");
        assert!(
            body.contains("result exceeds 64.0 KiB (--query-max-result-bytes)"),
            "{format}: {body}"
        );
    }
    let rows = server.sql(fits);
    assert_eq!(rows.len(), 50);
    assert!(
        rows.iter()
            .all(|r| r["pad"].as_str().map(str::len) == Some(1000))
    );

    let results = pg_query(
        &server.pg,
        &[
            (too_many_rows.to_string(), vec![]),
            (too_many_bytes.to_string(), vec![]),
            (fits.to_string(), vec![]),
            ("SELECT count(*) AS n FROM invocations".to_string(), vec![]),
        ],
        false,
    );
    assert_eq!(results[0]["sqlstate"], "54000", "{}", results[0]);
    assert!(
        results[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("500 rows")),
        "{}",
        results[0]
    );
    assert_eq!(results[1]["sqlstate"], "54000", "{}", results[1]);
    assert!(
        results[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("64.0 KiB")),
        "{}",
        results[1]
    );
    assert_eq!(results[2]["rows"].as_array().map(Vec::len), Some(50));
    // The session survives its refused queries.
    assert_eq!(results[3]["rows"], serde_json::json!([[2000]]));
}

/// A percentile per group where almost every row is its own group: past
/// 100,000 rows the partial aggregate passes rows on as state, and
/// DataFusion's own `percentile_cont` panicked there (query/src/percentile.rs).
#[test]
fn a_percentile_over_as_many_groups_as_rows_answers_on_http_and_pg_wire() {
    let server = TestServer::start();
    // (v × 7919) mod 300007 is a different key for each v ≤ 300,000, in no
    // order, so each group's median is its one value.
    let sql = "SELECT count(*) AS n, sum(p) AS total FROM (
                 SELECT (value * 7919) % 300007 AS k,
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(value AS DOUBLE)) AS p
                 FROM generate_series(1, 300000) GROUP BY k) t";
    let rows = server.sql(sql);
    assert_eq!(rows[0]["n"], 300_000, "{rows:?}");
    assert_eq!(
        rows[0]["total"].as_f64(),
        Some(45_000_150_000.0),
        "{rows:?}"
    );
    let results = pg_query(&server.pg, &[(sql.to_string(), vec![])], false);
    assert_eq!(
        results[0]["rows"],
        serde_json::json!([[300000, 45000150000.0]]),
        "{}",
        results[0]
    );
}

/// Transparent huge pages make a query that grows its memory stall in page
/// faults (benches/query-report.md): the server turns them off for itself,
/// unless mimalloc's own `MIMALLOC_ALLOW_THP` says otherwise.
#[test]
fn the_server_runs_without_transparent_huge_pages_unless_allowed() {
    let own = crate::support::status_field("/proc/self/status", "THP_enabled")
        .expect("this kernel reports THP_enabled (Linux 5.0 or later)");
    let server = TestServer::start();
    assert_eq!(server.status_field("THP_enabled").as_deref(), Some("0"));
    // It still answers queries.
    assert_eq!(
        server.sql("SELECT 1 AS one"),
        vec![serde_json::json!({"one": 1})]
    );
    drop(server);

    let allowed = TestServer::builder().env("MIMALLOC_ALLOW_THP", "1").start();
    assert_eq!(
        allowed.status_field("THP_enabled"),
        Some(own),
        "with MIMALLOC_ALLOW_THP the process keeps what it inherited"
    );
}

/// Under heavy ingest each flush frees a few hundred MiB that mimalloc would
/// hand back to the kernel after 1 s, to fault in again: `faasight serve`
/// runs with a 5 s purge delay (src/main.rs). It re-executes itself in
/// place with `MIMALLOC_PURGE_DELAY` set (the same process, so a supervisor
/// sees one), unless the variable is set already; mimalloc itself reports
/// the value it runs with.
#[test]
fn the_server_runs_with_a_five_second_purge_delay_unless_set() {
    // The serving process (the pid the test spawned) has the value in its
    // environment, and mimalloc reports running with it.
    let runs_with = |server: &TestServer, ms: &str| {
        assert_eq!(
            server.environ_var("MIMALLOC_PURGE_DELAY").as_deref(),
            Some(ms)
        );
        let option = format!("option 'purge_delay': {ms}");
        let log = server.wait_for_log(&option);
        assert!(log.contains(&option), "{log}");
        log
    };
    let server = TestServer::builder()
        .env_remove("MIMALLOC_PURGE_DELAY")
        .env("MIMALLOC_VERBOSE", "1")
        .start();
    runs_with(&server, "5000");
    // The same arguments reached the second run: it listens and answers.
    assert_eq!(
        server.sql("SELECT 1 AS one"),
        vec![serde_json::json!({"one": 1})]
    );
    drop(server);

    let chosen = TestServer::builder()
        .env("MIMALLOC_PURGE_DELAY", "250")
        .env("MIMALLOC_VERBOSE", "1")
        .start();
    let log = runs_with(&chosen, "250");
    assert!(!log.contains("'purge_delay': 5000"), "{log}");
}

/// An expression nested past what DataFusion's recursion survives is
/// refused with a clear error over HTTP, the Postgres wire and the CLI, and
/// the server goes on. (Before, `SELECT 1 + 1 + …` of 2,000 terms overflowed
/// a worker's stack and aborted the whole server.) Queries at the limit, of
/// several shapes, run on the server's own threads.
#[test]
fn expressions_nested_too_deeply_are_refused_and_the_server_goes_on() {
    let server = TestServer::start();
    send_spans(&server, 3);
    let chain = |n: usize, term: &str, op: &str| vec![term; n].join(op);
    // 500 operators each, the most allowed.
    let mut nested = "1".to_string();
    for _ in 0..10 {
        nested = format!("({} + {nested})", chain(49, "1", " + "));
    }
    let at_limit = [
        (format!("SELECT {} AS x", chain(501, "1", " + ")), 501.0),
        // Not foldable: evaluated row by row.
        (
            format!(
                "SELECT sum(duration_ms{}) AS x FROM spans",
                " + duration_ms".repeat(500)
            ),
            3.0 * 100.0 * 501.0,
        ),
        (
            format!(
                "SELECT count(*) AS x FROM spans WHERE {} OR name = 'op-1'",
                chain(249, "name = 'none'", " OR ")
            ),
            1.0,
        ),
        (
            format!(
                "SELECT count(*) AS x FROM ({})",
                chain(501, "SELECT 1 AS one", " UNION ALL ")
            ),
            501.0,
        ),
        (format!("SELECT {nested} AS x"), 10.0 * 49.0 + 1.0),
    ];
    for (sql, want) in &at_limit {
        let rows = server.sql(sql);
        assert_eq!(rows[0]["x"].as_f64(), Some(*want), "{}", &sql[..80]);
    }
    // A long IN list is one operator, however long.
    let ids: Vec<String> = (0..20_000).map(|i| format!("'op-{i}'")).collect();
    let listed = server.count(&format!(
        "SELECT count(*) AS n FROM spans WHERE name IN ({})",
        ids.join(", ")
    ));
    assert_eq!(listed, 3);

    let one_past = format!("SELECT {} AS x", chain(502, "1", " + "));
    // 60,000 terms: under the 128 KiB one argument may take, for the CLI.
    let huge = format!("SELECT {} AS x", chain(60_000, "1", "+"));
    for sql in [&one_past, &huge] {
        let (status, body) = server.query_raw(sql, "json");
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("nests too deeply"), "{body}");
    }
    let results = pg_query(
        &server.pg,
        &[
            (huge.clone(), vec![]),
            ("SELECT count(*) AS n FROM spans".to_string(), vec![]),
        ],
        false,
    );
    // 54001: statement_too_complex.
    assert_eq!(results[0]["sqlstate"], "54001", "{}", results[0]);
    assert_eq!(results[1]["rows"], serde_json::json!([[3]]));
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);

    // The CLI refuses it too, with an error rather than an abort.
    let out = Command::new(BIN)
        .args(["query", "--data-dir"])
        .arg(&server.data_dir)
        .arg(&huge)
        .output()
        .expect("faasight query");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nests too deeply"), "{stderr}");
}

/// A query DataFusion panics on (its `repeat` past 2 GiB of text in one
/// batch) fails with an error over HTTP and the Postgres wire, and the
/// server and the session go on. Before, DataFusion re-raised its task's
/// panic in the request handler: HTTP clients got the connection closed
/// without an answer, psql lost its connection.
#[test]
fn a_query_datafusion_panics_on_fails_with_an_error_and_the_server_goes_on() {
    // Limits raised so that `repeat` is let build its 3 GB (the default
    // per-query limit refuses it before it starts, see the next test).
    let server = TestServer::builder()
        .args(&["--query-memory-limit", "8GiB", "--query-max-memory", "8GiB"])
        .start();
    send_spans(&server, 3);
    // 30 rows of 100 MB: the batch's text passes i32 offsets.
    let panics = "SELECT sum(length(repeat('x', 100000000 + value - value))) AS n \
                  FROM generate_series(1, 30)";
    let (status, body) = server.query_raw(panics, "json");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("the query failed inside DataFusion") && body.contains("offset overflow"),
        "{body}"
    );
    assert_eq!(server.count("SELECT count(*) AS n FROM spans"), 3);

    let results = pg_query(
        &server.pg,
        &[
            (panics.to_string(), vec![]),
            ("SELECT count(*) AS n FROM spans".to_string(), vec![]),
        ],
        false,
    );
    // XX000: internal_error.
    assert_eq!(results[0]["sqlstate"], "XX000", "{}", results[0]);
    assert!(
        results[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("failed inside DataFusion")),
        "{}",
        results[0]
    );
    assert_eq!(results[1]["rows"], serde_json::json!([[3]]));
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("faasight_queries_failed_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// A function asked for more than the query may hold (`range`,
/// `array_repeat`, `repeat`, `generate_series` over timestamps) is refused
/// before it builds anything, over HTTP, the Postgres wire and the CLI.
/// Before, DataFusion built whatever it was asked for outside its memory
/// pool: `array_repeat(1, 300000000)` took 2.4 GB, and a larger count had
/// the kernel kill the server.
#[test]
fn a_function_asked_to_build_more_than_the_memory_limit_is_refused() {
    let server = TestServer::builder()
        .args(&["--query-max-memory", "64MiB"])
        .start();
    send_spans(&server, 3);
    // Values computed from constants are built while the query is planned
    // and held to 16 MiB; others to the query's limit.
    let constants = "from constants, more than the 16.0 MiB a value computed while the query \
                     is planned may take";
    let query_limit = "in one call, more than the query's memory limit of 64.0 MiB \
                       (--query-max-memory)";
    for (sql, function, limit) in [
        (
            "SELECT cardinality(array_repeat(1, 300000000)) AS n",
            "array_repeat",
            constants,
        ),
        (
            "SELECT cardinality(range(1, 300000000)) AS n",
            "range",
            constants,
        ),
        (
            "SELECT length(repeat('ab', 200000000)) AS n",
            "repeat",
            constants,
        ),
        (
            "SELECT count(*) AS n FROM (SELECT unnest(generate_series(\
             now() - INTERVAL '1 day', now(), INTERVAL '1 microsecond')))",
            "generate_series",
            constants,
        ),
        (
            "SELECT cardinality(range(1, 3000000 + value - value)) AS n \
             FROM generate_series(1, 10)",
            "range",
            query_limit,
        ),
        // Per row within the limit, over it for the batch.
        (
            "SELECT sum(length(repeat('x', 10000000 + value - value))) AS n \
             FROM generate_series(1, 10)",
            "repeat",
            query_limit,
        ),
    ] {
        let (status, body) = server.query_raw(sql, "json");
        assert_eq!(status, 400, "{sql}: {body}");
        assert!(
            body.contains(&format!("{function}() was asked to build")) && body.contains(limit),
            "{sql}: {body}"
        );
    }
    // Growth by nesting: each of these took the server past 3 GB, the
    // first past 24 GB (killed by the kernel), before functions were held
    // to the limit at every level. `value - value` keeps the planner from
    // computing the values first.
    let ten_mb = "(SELECT repeat('x', 10000000 + value - value) AS s FROM generate_series(1, 1))";
    for (sql, error) in [
        (
            "SELECT length(replace(replace(repeat('x', 1000000), 'x', repeat('y', 1000)), \
             'y', repeat('z', 1000))) AS n"
                .to_string(),
            "replace() was asked to build",
        ),
        (
            format!(
                "SELECT length(encode(encode(encode(encode(s, 'hex'), 'hex'), 'hex'), 'hex')) \
                 AS n FROM {ten_mb}"
            ),
            "encode() built",
        ),
        (
            format!(
                "SELECT length(l || l || l || l || l || l || l) AS n \
                 FROM (SELECT arrow_cast(s, 'LargeUtf8') AS l FROM {ten_mb})"
            ),
            "the || operator was asked to build",
        ),
        (
            "WITH RECURSIVE t(s, n) AS (SELECT 'x', 0 UNION ALL SELECT s || s, n + 1 FROM t \
             WHERE n < 40) SELECT max(length(s)) AS n FROM t"
                .to_string(),
            "the || operator was asked to build",
        ),
        (
            format!("SELECT length(concat(s, s, s, s, s, s, s)) AS n FROM {ten_mb}"),
            "concat() was asked to build",
        ),
        (
            "SELECT length(regexp_replace(repeat('ab', 300000), '(b)', \
             concat('<\\1>', repeat('y', 1000)), 'g')) AS n"
                .to_string(),
            "regexp_replace() was asked to build",
        ),
    ] {
        let (status, body) = server.query_raw(&sql, "json");
        assert_eq!(status, 400, "{sql}: {body}");
        assert!(
            body.contains(error) && (body.contains(query_limit) || body.contains(constants)),
            "{sql}: {body}"
        );
    }
    // A constant repeated for every row: 300 rows of 8 MB took 5.8 GB, and
    // 3,000 would take 24 GB.
    let (status, body) = server.query_raw(
        "SELECT sum(cardinality(r)) AS n \
         FROM (SELECT range(1, 1000000) AS r, value FROM generate_series(1, 300))",
        "json",
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("a constant of 7.6 MiB repeated for each of 300 rows")
            && body.contains("more than the query's memory limit of 64.0 MiB"),
        "{body}"
    );
    // Held a core for 32 s, past the query timeout, and kept other
    // queries waiting.
    let (status, body) = server.query_raw(
        "SELECT levenshtein(repeat('x', 200000), repeat('y', 200000)) AS n",
        "json",
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("levenshtein() was asked to compare 40000000000 pairs"),
        "{body}"
    );
    // Within the limit, the same functions answer.
    let within = server.sql(
        "SELECT cardinality(range(1, 1000001)) AS a, length(repeat('ab', 1000000)) AS b, \
         cardinality(array_repeat(7, 5)) AS c, \
         length(replace(repeat('ab', 1000000), 'b', 'xyz')) AS d, \
         length(s || s || s) AS e, levenshtein('kitten', 'sitting') AS f \
         FROM (SELECT repeat('q', 1000000) AS s)",
    );
    assert_eq!(within[0]["a"], 1_000_000);
    assert_eq!(within[0]["b"], 2_000_000);
    assert_eq!(within[0]["c"], 5);
    assert_eq!(within[0]["d"], 4_000_000);
    assert_eq!(within[0]["e"], 3_000_000);
    assert_eq!(within[0]["f"], 3);
    let peak = server.peak_rss_mib();
    assert!(peak < 1024.0, "peak RSS {peak:.0} MiB");

    let results = pg_query(
        &server.pg,
        &[
            (
                "SELECT cardinality(array_repeat(1, 300000000))".to_string(),
                vec![],
            ),
            // The operator, rewritten on this session's plans too.
            (
                format!(
                    "SELECT length(l || l || l || l || l || l || l) AS n \
                     FROM (SELECT arrow_cast(s, 'LargeUtf8') AS l FROM {ten_mb})"
                ),
                vec![],
            ),
            ("SELECT count(*) AS n FROM spans".to_string(), vec![]),
        ],
        false,
    );
    for (result, error) in [
        (&results[0], "array_repeat() was asked to build"),
        (&results[1], "the || operator was asked to build"),
    ] {
        assert!(
            result["error"].as_str().is_some_and(|e| e.contains(error)),
            "{result}"
        );
        // 53200: out_of_memory.
        assert_eq!(result["sqlstate"], "53200", "{result}");
    }
    assert_eq!(results[2]["rows"], serde_json::json!([[3]]));

    let cli = Command::new(BIN)
        .args(["query", "--data-dir"])
        .arg(&server.data_dir)
        .arg("SELECT cardinality(range(1, 3000000000)) AS n")
        .output()
        .expect("faasight query");
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(1), "{cli:?}");
    assert!(stderr.contains("range() was asked to build"), "{stderr}");
    assert_eq!(server.count("SELECT count(*) AS n FROM spans"), 3);
}
