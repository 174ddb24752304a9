//! Trace benchmark: trace by id (faasight's trace view and Tempo's protobuf
//! trace-by-id, which Grafana uses) over 1,000 random ids, hot, and TraceQL
//! searches (selective and unselective), on `faasight generate` data with
//! every HTTP request traced (≥ 10M spans). Bytes read per lookup come from
//! the server's `/proc/<pid>/io` `rchar` (all bytes it read through
//! syscalls, page cache included) over the run. Report:
//! benches/traces-report.md.
//!
//! `cargo bench --bench traces`; settings by environment:
//! `FAASIGHT_BENCH_TRACE_INVOCATIONS` (default 7,500,000),
//! `FAASIGHT_BENCH_TRACE_DATA` (a data directory to reuse; default
//! target/bench-data/traces-N, generated when missing),
//! `FAASIGHT_BENCH_LOOKUPS` (default 1,000), `FAASIGHT_BENCH_RUNS` (search
//! runs, default 5).

mod support;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const UNTIL: &str = "2026-11-28T00:00:00Z";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// Bytes the process has read through syscalls so far.
fn rchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("rchar: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let invocations: u64 = env_or("FAASIGHT_BENCH_TRACE_INVOCATIONS", 7_500_000);
    let lookups: usize = env_or("FAASIGHT_BENCH_LOOKUPS", 1_000);
    let runs: usize = env_or("FAASIGHT_BENCH_RUNS", 5);
    let data = std::env::var_os("FAASIGHT_BENCH_TRACE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            root.join("target/bench-data")
                .join(format!("traces-{invocations}"))
        });
    if !data.join("spans").is_dir() {
        support::generate(&data, invocations, 2, UNTIL, &["--trace-share", "1.0"]);
    }
    let mut server = support::Serve::start(&data, &["--query-timeout", "10m"]);
    let api = server.addr("api");
    let pid = server.child.id();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(900))
        .build()
        .expect("client");
    let sql = |sql: &str| -> Vec<serde_json::Value> {
        client
            .post(format!("http://{api}/api/v1/query"))
            .json(&serde_json::json!({ "sql": sql, "format": "json" }))
            .send()
            .expect("query")
            .json()
            .expect("rows")
    };
    let counts = sql("SELECT count(*) AS spans, count(DISTINCT trace_id) AS traces FROM spans");
    println!("data: {} — {}", data.display(), counts[0]);

    // Ids: the roots whose span id starts with '0' (1/16 of them), every
    // k-th of those so they spread over the week.
    let rows = sql(
        "SELECT trace_id FROM spans WHERE parent_span_id IS NULL AND span_id < '1' ORDER BY time",
    );
    let step = (rows.len() / lookups).max(1);
    let ids: Vec<String> = rows
        .iter()
        .step_by(step)
        .take(lookups)
        .map(|r| r["trace_id"].as_str().expect("id").to_string())
        .collect();
    println!("{} trace ids sampled from {} roots", ids.len(), rows.len());

    let lookup = |path: &str, accept: &str| -> (Vec<f64>, u64) {
        let before = rchar(pid);
        let mut ms = Vec::with_capacity(ids.len());
        for id in &ids {
            let started = Instant::now();
            let resp = client
                .get(format!("http://{api}{path}{id}"))
                .header("accept", accept)
                .send()
                .expect("get");
            assert!(resp.status().is_success(), "{path}{id}: {}", resp.status());
            let _ = resp.bytes().expect("body");
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        (ms, (rchar(pid) - before) / ids.len() as u64)
    };
    // A first pass warms the file footers and the page cache ("hot" after).
    let (mut first, first_bytes) = lookup("/api/v1/traces/", "application/json");
    println!(
        "trace view, first pass: p50 {:.1} ms, p99 {:.1} ms, {:.0} KiB read per lookup",
        percentile(&mut first, 0.5),
        percentile(&mut first, 0.99),
        first_bytes as f64 / 1024.0
    );
    for (name, path, accept) in [
        (
            "trace view /api/v1/traces/{id}",
            "/api/v1/traces/",
            "application/json",
        ),
        (
            "Tempo /api/v2/traces/{id} protobuf",
            "/api/v2/traces/",
            "application/protobuf",
        ),
    ] {
        let (mut ms, bytes) = lookup(path, accept);
        println!(
            "{name}, hot: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {:.0} KiB read per lookup",
            percentile(&mut ms, 0.5),
            percentile(&mut ms, 0.99),
            percentile(&mut ms, 1.0),
            bytes as f64 / 1024.0
        );
    }

    let last_day = ("1795737600", "1795824000"); // 2026-11-27T00:00Z .. 2026-11-28T00:00Z
    for (name, q, range) in [
        (
            "selective, last 24 h",
            "{ resource.service.name = \"api-orders\" && status = error }",
            Some(last_day),
        ),
        (
            "selective, 7 days",
            "{ resource.service.name = \"api-orders\" && status = error }",
            None,
        ),
        (
            "unselective, last 24 h",
            "{ kind = server }",
            Some(last_day),
        ),
        ("unselective, 7 days", "{ kind = server }", None),
        (
            "duration, last 24 h",
            "{ kind = server && duration > 2s }",
            Some(last_day),
        ),
    ] {
        let mut ms = Vec::new();
        let mut found = 0;
        for _ in 0..runs {
            let mut params = vec![("q", q), ("limit", "20")];
            if let Some((s, e)) = range {
                params.push(("start", s));
                params.push(("end", e));
            }
            let url = reqwest::Url::parse_with_params(&format!("http://{api}/api/search"), &params)
                .expect("url");
            let started = Instant::now();
            let v: serde_json::Value = client
                .get(url)
                .send()
                .expect("search")
                .json()
                .expect("json");
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            found = v["traces"].as_array().map_or(0, Vec::len);
        }
        println!(
            "TraceQL {name} `{q}`: median {:.0} ms (min {:.0}, max {:.0}), {found} traces",
            percentile(&mut ms.clone(), 0.5),
            percentile(&mut ms.clone(), 0.0),
            percentile(&mut ms, 1.0)
        );
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
}
