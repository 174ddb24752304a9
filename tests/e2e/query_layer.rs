//! The query layer on `faasight generate` data: determinism, DuckDB as an
//! independent oracle for counts, cost and cold-start rates, the functions
//! API, and a price catalog override that re-prices history.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::sql_golden::same_value;
use crate::support::{self, TestServer, client_script, python, repo_root, run_json, serve_command};

const UNTIL: &str = "2026-11-28T12:00:00Z";

fn generate(dir: &Path, invocations: u64, seed: u64) -> String {
    let (invocations, seed) = (invocations.to_string(), seed.to_string());
    support::generate(
        dir,
        &[
            "--invocations",
            &invocations,
            "--functions",
            "12",
            "--days",
            "2",
            "--seed",
            &seed,
            "--until",
            UNTIL,
        ],
    )
}

/// Every Parquet file's bytes by table/partition (file names carry a random
/// suffix; contents must not differ).
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for table in ["invocation_records", "spans"] {
        let root = dir.join(table);
        for date in std::fs::read_dir(&root).expect("table dir").flatten() {
            for hour in std::fs::read_dir(date.path()).expect("date dir").flatten() {
                for file in std::fs::read_dir(hour.path()).expect("hour dir").flatten() {
                    let name = file.file_name().to_string_lossy().to_string();
                    let flush = name.split('-').next().unwrap_or_default().to_string();
                    let key = format!(
                        "{table}/{}/{}/{flush}",
                        date.file_name().to_string_lossy(),
                        hour.file_name().to_string_lossy()
                    );
                    out.insert(key, std::fs::read(file.path()).expect("read parquet"));
                }
            }
        }
    }
    out
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn generated_data_is_deterministic_and_duckdb_agrees() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let summary = generate(&a, 20_000, 11);
    assert!(summary.contains("generated 20000 invocations"), "{summary}");
    generate(&b, 20_000, 11);
    let (ca, cb) = (contents(&a), contents(&b));
    assert!(ca.len() > 40, "one file per table and hour: {}", ca.len());
    assert!(ca == cb, "the same seed must give the same files");
    let other = tmp.path().join("c");
    generate(&other, 20_000, 12);
    assert!(contents(&other) != ca, "another seed gives other data");

    let server = TestServer::builder().data_dir(&a).start();
    assert_eq!(server.count("SELECT count(*) FROM invocations"), 20_000);
    // The model's promises: several architectures, regions, cold starts,
    // errors, timeouts and multi-function traces.
    let shape = &server.sql(
        "SELECT count(DISTINCT architecture) AS archs, count(DISTINCT region) AS regions,
                sum(CASE WHEN cold_start THEN 1 ELSE 0 END) AS cold,
                sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors,
                count(DISTINCT memory_size_mb) AS memory_sizes,
                min(time) AS first, max(time) AS last
         FROM invocations",
    )[0];
    assert_eq!(shape["archs"], 2, "{shape}");
    assert!(shape["regions"].as_i64() >= Some(2), "{shape}");
    assert!(shape["cold"].as_i64() > Some(20), "{shape}");
    assert!(shape["errors"].as_i64() > Some(0), "{shape}");
    assert!(shape["memory_sizes"].as_i64() >= Some(3), "{shape}");
    assert!(shape["last"].as_str() <= Some(UNTIL), "{shape}");
    let traces = &server.sql(
        "SELECT count(*) AS traces FROM (
           SELECT trace_id FROM invocations WHERE trace_id IS NOT NULL
           GROUP BY trace_id HAVING count(DISTINCT function_name) >= 2) t",
    )[0];
    assert!(traces["traces"].as_i64() > Some(10), "{traces}");
    assert!(server.count("SELECT count(*) FROM spans") > 0);

    let ours = server.sql(
        "SELECT function_name, count(*) AS invocations, sum(billed_duration_ms) AS billed_ms,
                avg(CASE WHEN cold_start THEN 1.0 ELSE 0.0 END) AS cold_start_rate,
                sum(cost_usd) AS cost_usd,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_duration_ms,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_duration_ms
         FROM invocations GROUP BY function_name ORDER BY function_name",
    );
    let oracle = run_json(
        Command::new(python())
            .arg(client_script("duckdb_invocations.py"))
            .arg(&a),
    );
    let oracle = oracle.as_array().expect("oracle rows");
    assert_eq!(ours.len(), oracle.len(), "function count");
    for (o, d) in ours.iter().zip(oracle) {
        let f = o["function_name"].as_str().unwrap_or_default();
        assert_eq!(d["function_name"], f);
        for (col, rel) in [
            ("invocations", 0.0),
            ("billed_ms", 0.0),
            ("cold_start_rate", 1e-12),
            ("cost_usd", 1e-9),
            // DataFusion interpolates percentiles with a 1e-6 fraction.
            ("p50_duration_ms", 1e-6),
            ("p99_duration_ms", 1e-4),
        ] {
            let (x, y) = (
                o[col].as_f64().unwrap_or(f64::NAN),
                d[col].as_f64().unwrap_or(f64::NAN),
            );
            assert!(close(x, y, rel), "{f} {col}: faasight {x} vs DuckDB {y}");
        }
    }

    // GET /api/v1/functions gives function_stats' numbers for the range.
    let since = "2026-11-27T12:00:00Z";
    let (status, body) = server.get(&format!("/api/v1/functions?since={since}&until={UNTIL}"));
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).expect("json");
    let api_rows = api["functions"].as_array().expect("functions");
    let sql = server.sql(&format!(
        "SELECT * FROM function_stats('{since}', '{UNTIL}') ORDER BY cost_usd DESC NULLS LAST, function_name"
    ));
    // Same rows; sums may differ in the last bits (parallel aggregation order).
    assert_eq!(api_rows.len(), sql.len());
    for (a, q) in api_rows.iter().zip(&sql) {
        let (a, q) = (a.as_object().expect("row"), q.as_object().expect("row"));
        assert_eq!(a.len(), q.len());
        for (k, v) in q {
            assert!(same_value(&a[k], v), "{k}: api {} vs sql {v}", a[k]);
        }
    }
    assert!(api_rows.len() >= 5, "{body}");
    let total: i64 = api_rows
        .iter()
        .filter_map(|r| r["invocations"].as_i64())
        .sum();
    assert_eq!(
        total,
        server.count(&format!(
            "SELECT count(*) FROM invocations WHERE time >= '{since}' AND time < '{UNTIL}'"
        ))
    );
    let (status, body) = server.get("/api/v1/functions?since=yesterday%27;DROP");
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.get(&format!("/api/v1/functions?since={UNTIL}&until={since}"));
    assert_eq!(status, 400, "{body}");
}

#[test]
fn a_pricing_file_reprices_history_and_a_bad_one_stops_the_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fixture = std::fs::read_to_string(repo_root().join("tests/golden/invocations.ndjson"))
        .expect("fixture");
    let data = tmp.path().join("data");
    let sql = "SELECT request_id, cost_usd, cost_estimated FROM invocations WHERE request_id IN ('c-1', 'p-1') ORDER BY 1";
    let before = {
        let server = TestServer::builder().data_dir(&data).start();
        let (status, body) = server.post_json("/v1/invocations", &[], &fixture);
        assert_eq!(status, 200, "{body}");
        server.sql(sql)
    };
    let c1 = before[0]["cost_usd"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (c1 - (0.2e-6 + 0.101 * 0.0000166667)).abs() < 1e-15,
        "{before:?}"
    );
    assert_eq!(before[1]["cost_estimated"], true);
    // A corrected us-east-1 price from 2026-11-01, and a price for the
    // region that was unknown.
    let pricing = tmp.path().join("prices.toml");
    std::fs::write(
        &pricing,
        r#"
[[aws.prices]]
regions = ["us-east-1", "mars-north-1"]
effective_from = "2026-11-01"
source = "test: corrected price"
requests_per_million = 0.25
x86_64 = [{ price = 0.00002 }]
arm64 = [{ price = 0.000016 }]
"#,
    )
    .expect("write pricing");
    let server = TestServer::builder()
        .data_dir(&data)
        .args(&["--pricing", &pricing.display().to_string()])
        .start();
    let after = server.sql(sql);
    let want = 0.25e-6 + 0.101 * 0.00002;
    let got = after[0]["cost_usd"].as_f64().unwrap_or(f64::NAN);
    assert!((got - want).abs() < 1e-15, "c-1 re-priced: {got} vs {want}");
    assert_eq!(after[1]["cost_estimated"], false, "{after:?}");
    drop(server);

    std::fs::write(&pricing, "[[aws.prices]]\nregions = []\n").expect("write bad pricing");
    let out = serve_command(&tmp.path().join("other"))
        .arg("--pricing")
        .arg(&pricing)
        .output()
        .expect("serve with a bad catalog");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("prices.toml"), "{err}");
}
