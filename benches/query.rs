//! Query benchmark: the standard questions on `faasight generate` data,
//! through the real server over HTTP and the Postgres wire, against DuckDB
//! reading the same Parquet files (benches/query_duckdb.py), same machine,
//! same run. Report: benches/query-report.md.
//!
//! `cargo bench --bench query`; settings by environment:
//! `FAASIGHT_BENCH_INVOCATIONS` (default 10,000,000), `FAASIGHT_BENCH_DATA`
//! (a data directory to reuse; default target/bench-data/invocations-N,
//! generated when missing), `FAASIGHT_BENCH_RUNS` (hot runs, default 5),
//! `FAASIGHT_BENCH_PYTHON` (default .venv/bin/python).
//!
//! Then, on a fresh server with no data: what a runaway query costs
//! everyone else (query/src/coop.rs) — ingest acknowledgement latency alone
//! and while two nested-loop joins of a million left rows run into
//! `--query-timeout`, when their `408` comes, and what a legitimate
//! nested-loop join of 20,000 × 20,000 rows takes.
//!
//! Last, what a query of deeply chained operators costs to answer, up to
//! the limit of `faasight_query::safety::MAX_CHAINED_OPERATORS` (planning
//! grows with the square of the depth and the query timeout cannot stop
//! it). `FAASIGHT_BENCH_NESTING_ONLY=1` runs only that part.

mod support;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

const UNTIL: &str = "2026-11-28T00:00:00Z";

/// (name, SQL run by faasight and by DuckDB alike).
const QUERIES: &[(&str, &str)] = &[
    (
        "cold-start rate per function per hour, 7 days",
        "SELECT function_name, date_trunc('hour', time) AS hour, \
         avg(CASE WHEN cold_start THEN 1.0 ELSE 0.0 END) AS cold_start_rate \
         FROM invocations WHERE time >= TIMESTAMP '2026-11-21T00:00:00Z' GROUP BY 1, 2",
    ),
    (
        "cost per function per day",
        "SELECT function_name, date_trunc('day', time) AS day, sum(cost_usd) AS cost \
         FROM invocations GROUP BY 1, 2",
    ),
    (
        "p99 duration per function",
        "SELECT function_name, percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99 \
         FROM invocations GROUP BY 1",
    ),
    (
        "top 10 functions by cost",
        "SELECT function_name, sum(cost_usd) AS cost FROM invocations \
         GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
    ),
    (
        "one function, last hour",
        "SELECT count(*) AS n, avg(duration_ms) AS avg_ms FROM invocations \
         WHERE function_name = 'api-orders' AND time >= TIMESTAMP '2026-11-27T23:00:00Z'",
    ),
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `sql` through the HTTP API: status, milliseconds to the whole
/// answer, and the answer.
fn timed_query(
    client: &reqwest::blocking::Client,
    api: &str,
    sql: &str,
    timeout_secs: u64,
) -> (u16, f64, Vec<u8>) {
    let started = Instant::now();
    let resp = client
        .post(format!("http://{api}/api/v1/query"))
        .timeout(std::time::Duration::from_secs(timeout_secs))
        .json(&serde_json::json!({ "sql": sql, "format": "json" }))
        .send()
        .expect("query");
    let status = resp.status().as_u16();
    let body = resp.bytes().expect("answer").to_vec();
    (status, started.elapsed().as_secs_f64() * 1000.0, body)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let invocations: u64 = env_or("FAASIGHT_BENCH_INVOCATIONS", 10_000_000);
    let runs: usize = env_or("FAASIGHT_BENCH_RUNS", 5);
    if std::env::var_os("FAASIGHT_BENCH_NESTING_ONLY").is_some() {
        nesting(&root.join("target/bench-data/nesting"), runs);
        return;
    }
    let data = std::env::var_os("FAASIGHT_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            root.join("target/bench-data")
                .join(format!("invocations-{invocations}"))
        });
    let python = std::env::var_os("FAASIGHT_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));

    if !data.join("invocations").is_dir() {
        // Missing, or from before the coalesced layout: made afresh (a
        // second generate into the same directory would add to it).
        let _ = std::fs::remove_dir_all(&data);
        support::generate(&data, invocations, 1, UNTIL, &[]);
    }
    let bytes: u64 = walk(&data.join("invocation_records"));
    println!(
        "data: {} ({invocations} invocations, invocation_records {:.1} MiB, coalesced invocations {:.1} MiB)",
        data.display(),
        bytes as f64 / (1 << 20) as f64,
        walk(&data.join("invocations")) as f64 / (1 << 20) as f64
    );

    let mut server = support::Serve::start(&data, &["--query-timeout", "10m"]);
    let (api, pg) = (server.addr("api"), server.addr("pg"));

    // HTTP: the first run on the fresh server is "cold", then hot runs.
    let client = reqwest::blocking::Client::new();
    let http = |sql: &str| -> (f64, usize) {
        let (status, ms, body) = timed_query(&client, &api, sql, 900);
        assert_eq!(status, 200, "{sql}");
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("json");
        (ms, rows.len())
    };
    let mut ours = Vec::new();
    for (name, sql) in QUERIES {
        let (cold, rows) = http(sql);
        let hot = support::median((0..runs).map(|_| http(sql).0).collect());
        ours.push((name, cold, hot, rows));
    }

    let input: Vec<serde_json::Value> = QUERIES
        .iter()
        .map(|(name, sql)| serde_json::json!({ "name": name, "duckdb": sql, "faasight": sql }))
        .collect();
    let mut child = Command::new(&python)
        .arg(root.join("benches/query_duckdb.py"))
        .arg(&data)
        .arg(&pg)
        .arg(runs.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("query_duckdb.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(&input).expect("json").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("duckdb output");
    let _ = server.child.kill();
    let _ = server.child.wait();
    assert!(out.status.success(), "query_duckdb.py failed");
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("duckdb json");

    println!(
        "\n| query | faasight HTTP cold / hot ms | faasight pg hot ms | DuckDB raw merge cold / hot ms | DuckDB on coalesced cold / hot ms | hot ratio HTTP / DuckDB raw | hot ratio HTTP / DuckDB coalesced | rows |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, cold, hot, rows) in &ours {
        let d = &theirs[**name];
        let f = |k: &str| d[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {name} | {cold:.0} / {hot:.0} | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2}x | {:.2}x | {rows} (DuckDB {} / {}, pg {}) |",
            f("pg_hot_ms"),
            f("duckdb_cold_ms"),
            f("duckdb_hot_ms"),
            f("coalesced_cold_ms"),
            f("coalesced_hot_ms"),
            hot / f("duckdb_hot_ms"),
            hot / f("coalesced_hot_ms"),
            d["duckdb_rows"],
            d["coalesced_rows"],
            d["pg_rows"],
        );
    }

    isolation(&root.join("target/bench-data/isolation"), runs);
    nesting(&root.join("target/bench-data/nesting"), runs);
}

/// Answer time over HTTP (median of `runs`) of three shapes of chained
/// operators at rising depth, on a fresh server with a few spans.
fn nesting(dir: &std::path::Path, runs: usize) {
    let _ = std::fs::remove_dir_all(dir);
    let mut server = support::Serve::start(dir, &[]);
    let (api, otlp) = (server.addr("api"), server.addr("otlp_http"));
    let client = reqwest::blocking::Client::new();
    let span = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": "bench", "startTimeUnixNano": "1764331200000000000",
        "endTimeUnixNano": "1764331200100000000"}]}]}]});
    let resp = client
        .post(format!("http://{otlp}/v1/traces"))
        .json(&span)
        .send()
        .expect("ingest");
    assert!(resp.status().is_success(), "ingest: {}", resp.status());
    let query = |sql: &str| -> (u16, f64) {
        let (status, ms, _) = timed_query(&client, &api, sql, 600);
        (status, ms)
    };
    // (shape, SQL with `n` chained operators)
    type Shape = (&'static str, fn(usize) -> String);
    let shapes: [Shape; 3] = [
        ("1 + 1 + … (folded to a constant)", |n| {
            format!("SELECT {} AS x", vec!["1"; n + 1].join(" + "))
        }),
        ("duration_ms + duration_ms + … (per row)", |n| {
            format!(
                "SELECT sum(duration_ms{}) AS x FROM spans",
                " + duration_ms".repeat(n)
            )
        }),
        ("SELECT 1 UNION ALL SELECT 1 …", |n| {
            format!(
                "SELECT count(*) AS x FROM ({})",
                vec!["SELECT 1 AS one"; n + 1].join(" UNION ALL ")
            )
        }),
    ];
    let limit = faasight_query::safety::MAX_CHAINED_OPERATORS;
    println!(
        "\n| chained operators | {} |",
        shapes.map(|(name, _)| name).join(" | ")
    );
    println!("|---|---|---|---|");
    for n in [limit / 4, limit / 2, limit, limit + 1] {
        let cells: Vec<String> = shapes
            .iter()
            .map(|(_, sql)| {
                let sql = sql(n);
                let (status, _) = query(&sql);
                if status != 200 {
                    return format!("refused ({status})");
                }
                let ms = support::median((0..runs).map(|_| query(&sql).1).collect());
                format!("{ms:.0} ms")
            })
            .collect();
        println!("| {n} | {} |", cells.join(" | "));
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// Milliseconds at the `q` quantile (0..=1) of `v`.
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Ingest latency alone and beside two runaway nested-loop joins; the
/// joins' answers; a legitimate nested-loop join's time.
fn isolation(dir: &std::path::Path, runs: usize) {
    const RUNAWAY: &str = "SELECT count(*) FROM generate_series(1, 1000000) a \
                           JOIN generate_series(1, 10000000) b ON a.value + b.value < 0";
    const LEGIT: &str = "SELECT count(*) FROM generate_series(1, 20000) a \
                         JOIN generate_series(1, 20000) b ON a.value + b.value < 1000";
    let _ = std::fs::remove_dir_all(dir);
    let mut server = support::Serve::start(dir, &["--query-timeout", "2s"]);
    let (api, otlp) = (server.addr("api"), server.addr("otlp_http"));
    let client = reqwest::blocking::Client::new();
    let span = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": "bench", "startTimeUnixNano": "1764331200000000000",
        "endTimeUnixNano": "1764331200100000000"}]}]}]});
    let ingest = || -> f64 {
        let started = Instant::now();
        let resp = client
            .post(format!("http://{otlp}/v1/traces"))
            .json(&span)
            .send()
            .expect("ingest");
        assert!(resp.status().is_success(), "ingest: {}", resp.status());
        started.elapsed().as_secs_f64() * 1000.0
    };
    let query = |sql: &str| -> (u16, f64) {
        let started = Instant::now();
        let resp = reqwest::blocking::Client::new()
            .post(format!("http://{api}/api/v1/query"))
            .timeout(std::time::Duration::from_secs(600))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .expect("query");
        (
            resp.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0,
        )
    };

    let alone: Vec<f64> = (0..40).map(|_| ingest()).collect();
    let (beside, answers) = std::thread::scope(|scope| {
        let runaways: Vec<_> = (0..2).map(|_| scope.spawn(|| query(RUNAWAY))).collect();
        let mut beside = Vec::new();
        while runaways.iter().any(|t| !t.is_finished()) {
            beside.push(ingest());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let answers: Vec<(u16, f64)> = runaways
            .into_iter()
            .map(|t| t.join().expect("runaway"))
            .collect();
        (beside, answers)
    });
    let (status, _) = query(LEGIT);
    assert_eq!(status, 200, "the 20,000 x 20,000 join");
    let legit = support::median((0..runs).map(|_| query(LEGIT).1).collect());
    let _ = server.child.kill();
    let _ = server.child.wait();
    let _ = std::fs::remove_dir_all(dir);

    println!("\n| runaway isolation (--query-timeout 2s) | figure |\n|---|---|");
    println!(
        "| ingest ack alone, p50 / max ms ({} requests) | {:.1} / {:.1} |",
        alone.len(),
        quantile(alone.clone(), 0.5),
        quantile(alone, 1.0)
    );
    if beside.is_empty() {
        println!("| ingest ack beside two runaway joins | none sent |");
    } else {
        println!(
            "| ingest ack beside two runaway joins, p50 / max ms ({} requests) | {:.1} / {:.1} |",
            beside.len(),
            quantile(beside.clone(), 0.5),
            quantile(beside, 1.0)
        );
    }
    for (status, ms) in answers {
        println!("| runaway join answered | {status} after {ms:.0} ms |");
    }
    println!("| nested-loop join 20,000 x 20,000, hot median ms | {legit:.0} |");
}

fn walk(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}
