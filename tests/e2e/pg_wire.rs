//! The Postgres wire protocol with real clients: psql and psycopg (bind
//! parameters, text and binary results), the catalog queries Grafana sends,
//! a password, and the query timeout cutting a runaway query while ingest
//! goes on.

use std::process::Command;

use serde_json::{Value, json};

use crate::sql_golden::{assert_same_rows, pg_query};
use crate::support::{PUBLIC_TABLES, TestServer, cli_query, repo_root};

fn fixture() -> String {
    std::fs::read_to_string(repo_root().join("tests/golden/invocations.ndjson")).expect("fixture")
}

fn loaded_server(args: &[&str]) -> TestServer {
    let server = TestServer::builder().args(args).start();
    let (status, body) = server.post_json("/v1/invocations", &[], &fixture());
    assert_eq!(status, 200, "{body}");
    server
}

/// Runs psql with `-At` (unaligned, tuples only) and returns stdout.
fn psql(addr: &str, password: Option<&str>, command: &str) -> (bool, String, String) {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut cmd = Command::new("psql");
    cmd.args([
        "-h",
        host,
        "-p",
        port,
        "-U",
        "postgres",
        "-d",
        "faasight",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
    ])
    .arg("-c")
    .arg(command)
    .env("PGCONNECT_TIMEOUT", "10");
    match password {
        Some(p) => cmd.env("PGPASSWORD", p),
        None => cmd.env_remove("PGPASSWORD"),
    };
    let out = cmd
        .output()
        .expect("psql is installed (scripts/test.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn psql_reads_tables_views_and_the_catalog() {
    let server = loaded_server(&[]);
    let sql = "SELECT function_name, count(*) AS n, sum(cost_usd) AS cost FROM invocations GROUP BY 1 ORDER BY 1";
    let (ok, out, err) = psql(&server.pg, None, sql);
    assert!(ok, "{err}");
    // The same numbers as HTTP, row by row.
    let http = server.sql(sql);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), http.len(), "{out}");
    assert_eq!(lines.len(), 5, "{out}");
    for (line, row) in lines.iter().zip(&http) {
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields[0], row["function_name"].as_str().unwrap_or_default());
        assert_eq!(fields[1].parse::<i64>().ok(), row["n"].as_i64(), "{line}");
        let psql_cost: f64 = fields[2].parse().unwrap_or(f64::NAN);
        let http_cost = row["cost"].as_f64().unwrap_or(f64::NAN);
        assert!((psql_cost - http_cost).abs() <= 1e-15, "{line} vs {row}");
    }

    let (ok, out, err) = psql(&server.pg, None, "\\dt");
    assert!(ok, "\\dt failed: {err}");
    for table in ["spans", "logs", "metrics", "invocation_records"] {
        assert!(
            out.contains(&format!("|{table}|")),
            "\\dt lacks {table}: {out}"
        );
    }
    let (ok, out, err) = psql(
        &server.pg,
        None,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), PUBLIC_TABLES);
    let (ok, out, err) = psql(
        &server.pg,
        None,
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'invocations' AND column_name IN ('time', 'cost_usd', 'cold_start') ORDER BY 1",
    );
    assert!(ok, "{err}");
    assert!(out.contains("cost_usd|"), "{out}");
    assert!(out.contains("time|"), "{out}");

    // Unsafe statements are refused and leave no file behind.
    let target =
        std::env::temp_dir().join(format!("faasight-psql-copy-{}.csv", std::process::id()));
    let (ok, _, err) = psql(
        &server.pg,
        None,
        &format!("COPY (SELECT 1) TO '{}'", target.display()),
    );
    assert!(!ok, "COPY must fail");
    assert!(err.contains("read-only"), "{err}");
    assert!(!target.exists());
    let (ok, _, err) = psql(&server.pg, None, "DROP TABLE spans");
    assert!(!ok && err.contains("read-only"), "{err}");
    assert_eq!(server.count("SELECT count(*) FROM spans"), 0);
    let (ok, _, _) = psql(&server.pg, None, "SELECT count(*) FROM spans");
    assert!(ok, "spans still there");
}

#[test]
fn psycopg_binds_parameters_and_grafana_catalog_queries_run() {
    let server = loaded_server(&[]);
    let sql = "SELECT function_name, request_id, billed_duration_ms, cost_usd, time \
               FROM invocations WHERE function_name = %s AND billed_duration_ms > %s ORDER BY time";
    let http = server.sql(
        "SELECT function_name, request_id, billed_duration_ms, cost_usd, time \
         FROM invocations WHERE function_name = 'checkout' AND billed_duration_ms > 150 ORDER BY time",
    );
    assert_eq!(http.len(), 3);
    let grafana_tables = r#"SELECT
        CASE WHEN quote_ident(table_schema) IN (
              SELECT CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
              FROM generate_series(
                  array_lower(string_to_array(current_setting('search_path'),','),1),
                  array_upper(string_to_array(current_setting('search_path'),','),1)
                ) as i,
                string_to_array(current_setting('search_path'),',') s)
          THEN quote_ident(table_name)
          ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
        END AS "table"
        FROM information_schema.tables
        WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog')
        ORDER BY 1"#;
    let grafana_columns = r#"SELECT quote_ident(column_name) AS "column", data_type AS "type"
        FROM information_schema.columns
        WHERE quote_ident(table_name) = 'invocations' ORDER BY 1"#;
    let queries = vec![
        (sql.to_string(), vec![json!("checkout"), json!(150)]),
        (
            "SELECT count(*) AS n FROM invocations WHERE time >= %s::timestamptz AND cold_start = %s"
                .to_string(),
            vec![json!("2026-11-27T00:00:00Z"), json!(true)],
        ),
        (grafana_tables.to_string(), vec![]),
        (grafana_columns.to_string(), vec![]),
        ("SELECT 1".to_string(), vec![]),
        (
            "SELECT version(), current_database(), current_schema()".to_string(),
            vec![],
        ),
    ];
    for binary in [false, true] {
        let results = pg_query(&server.pg, &queries, binary);
        assert_same_rows("bound parameters", &http, &results[0]);
        assert_eq!(results[1]["rows"], json!([[2]]), "{}", results[1]);
        let tables: Vec<&str> = results[2]["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r[0].as_str())
            // Grafana shows schema-qualified names when it cannot match the
            // search path; both forms name the table.
            .map(|t| t.strip_prefix("public.").unwrap_or(t))
            .collect();
        for t in ["invocations", "spans", "function_stats"] {
            assert!(
                tables.contains(&t),
                "grafana table list lacks {t}: {tables:?}"
            );
        }
        let columns = results[3]["rows"].as_array().expect("rows");
        assert!(
            columns.iter().any(|r| r[0] == "cost_usd"),
            "grafana column list lacks cost_usd: {columns:?}"
        );
        assert_eq!(results[4]["rows"], json!([[1]]));
        assert!(results[5].get("error").is_none(), "{}", results[5]);
        // Timestamps arrive as timestamptz and booleans as booleans.
        let types = results[0]["types"].as_array().expect("types");
        assert_eq!(
            types[4],
            json!(1184),
            "time is timestamptz (oid 1184): {types:?}"
        );
    }
}

#[test]
fn a_password_is_required_when_configured() {
    let server = loaded_server(&["--pg-password", "s3cret-pg"]);
    let (ok, _, err) = psql(&server.pg, Some("wrong"), "SELECT 1");
    assert!(!ok, "a wrong password must be refused");
    assert!(err.to_lowercase().contains("password"), "{err}");
    let (ok, out, err) = psql(
        &server.pg,
        Some("s3cret-pg"),
        "SELECT count(*) FROM invocations",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "10");
    assert!(
        !server.log().contains("s3cret-pg"),
        "the password reached the log"
    );
}

#[test]
fn a_runaway_query_stops_at_the_timeout_while_ingest_goes_on() {
    let server = loaded_server(&["--query-timeout", "2s"]);
    let runaway = "SELECT count(*) FROM generate_series(1, 1000000000) a \
                   CROSS JOIN generate_series(1, 1000000000) b WHERE a.value + b.value = 3";
    let addr = server.pg.clone();
    let pg = std::thread::spawn(move || pg_query(&addr, &[(runaway.to_string(), vec![])], false));
    // Ingest and queries keep working meanwhile.
    let mut posted = 0;
    for i in 0..5 {
        let line = format!(
            r#"{{"time":"2026-11-28T09:00:0{i}Z","function_name":"during","request_id":"d-{i}","duration_ms":5}}"#
        );
        let (status, body) = server.post_json("/v1/invocations", &[], &line);
        assert_eq!(status, 200, "{body}");
        posted += 1;
    }
    assert_eq!(
        server.count("SELECT count(*) FROM invocations WHERE function_name = 'during'"),
        posted
    );
    let result = pg.join().expect("pg thread");
    assert_eq!(result[0]["sqlstate"], "57014", "{}", result[0]);
    assert!(
        result[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timeout"),
        "{}",
        result[0]
    );
    // The same over HTTP.
    let (status, body) = server.query_raw(runaway, "json");
    assert_eq!(status, 408, "{body}");
    // Both counted, and the server still answers.
    let timed_out = server
        .metric("faasight_queries_timed_out_total")
        .unwrap_or(0.0);
    assert!(timed_out >= 2.0, "{timed_out} queries timed out");
    assert_eq!(server.query_memory_after_settling(), 0);
    assert_eq!(
        server.count("SELECT count(*) FROM invocations"),
        10 + posted
    );
}

#[test]
fn the_cli_on_the_same_data_directory_agrees() {
    let server = loaded_server(&[]);
    let sql = "SELECT function_name, count(*) AS n, sum(cost_usd) AS cost FROM invocations GROUP BY 1 ORDER BY 1";
    let http = server.sql(sql);
    let cli: Vec<Value> =
        serde_json::from_str(&cli_query(&server.data_dir, "json", sql)).expect("json");
    assert_eq!(cli, http);
}

#[test]
fn tls_is_offered_when_a_certificate_is_configured() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let server = loaded_server(&[
        "--pg-tls-cert",
        &cert.display().to_string(),
        "--pg-tls-key",
        &key.display().to_string(),
    ]);
    let require_tls = |addr: &str| {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        Command::new("psql")
            .arg(format!(
                "host={host} port={port} user=postgres dbname=faasight sslmode=require"
            ))
            .args(["-At", "-c", "SELECT count(*) FROM invocations"])
            .output()
            .expect("psql")
    };
    // Without a certificate, a client that insists on TLS is turned away.
    let plain = loaded_server(&[]);
    assert!(!require_tls(&plain.pg).status.success());
    let out = require_tls(&server.pg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10");
}
