//! SQL golden files (`tests/golden/*.slt`) run through the real binary over
//! HTTP, and the same statements over the Postgres wire with psycopg: both
//! interfaces must give the golden answers and refuse the same statements.
//!
//! File format: blocks separated by blank lines, `#` comments.
//! ```text
//! query NAME            error NAME
//! SQL (one or more      SQL
//! lines)                ----
//! ----                  text the error message contains
//! expected CSV
//! ```
//! `FAASIGHT_GOLDEN_UPDATE=1` rewrites the expected CSV of `query` blocks
//! from what faasight answers (review the diff: the comments carry the hand
//! computations the figures must match).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{TestServer, client_script, python, repo_root};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Query,
    Error,
}

#[derive(Debug)]
struct Case {
    kind: Kind,
    name: String,
    sql: String,
    expected: String,
}

/// A golden file as comments and cases, in order, so it can be rewritten.
enum Block {
    Comment(String),
    Case(Case),
}

fn parse(text: &str, path: &Path) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            blocks.push(Block::Comment(line.to_string()));
            continue;
        }
        let (kind, name) = if let Some(n) = line.strip_prefix("query ") {
            (Kind::Query, n)
        } else if let Some(n) = line.strip_prefix("error ") {
            (Kind::Error, n)
        } else {
            panic!("{}: unexpected line {line:?}", path.display());
        };
        let mut sql = Vec::new();
        for l in lines.by_ref() {
            if l == "----" {
                break;
            }
            sql.push(l);
        }
        let mut expected = Vec::new();
        while let Some(l) = lines.peek() {
            if l.trim().is_empty() {
                break;
            }
            expected.push(*l);
            lines.next();
        }
        blocks.push(Block::Case(Case {
            kind,
            name: name.to_string(),
            sql: sql.join("\n"),
            expected: expected.join("\n"),
        }));
    }
    blocks
}

fn render(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        match b {
            Block::Comment(c) => {
                out.push_str(c);
                out.push('\n');
            }
            Block::Case(c) => {
                let word = if c.kind == Kind::Query {
                    "query"
                } else {
                    "error"
                };
                out.push_str(&format!("{word} {}\n{}\n----\n", c.name, c.sql));
                if !c.expected.is_empty() {
                    out.push_str(&c.expected);
                    out.push('\n');
                }
            }
        }
    }
    out
}

fn golden_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("tests/golden"))
        .expect("tests/golden")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

/// Runs statements over the Postgres wire with psycopg.
pub(crate) fn pg_query(addr: &str, queries: &[(String, Vec<Value>)], binary: bool) -> Vec<Value> {
    let input: Vec<Value> = queries
        .iter()
        .map(|(sql, params)| serde_json::json!({ "sql": sql, "params": params }))
        .collect();
    let mut cmd = Command::new(python());
    cmd.arg(client_script("pg_query.py")).arg(addr);
    if binary {
        cmd.arg("--binary");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pg_query.py");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(&input).expect("json").as_bytes())
        .expect("write queries");
    let out = child.wait_with_output().expect("pg_query.py output");
    assert!(
        out.status.success(),
        "pg_query.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_slice(&out.stdout).expect("pg_query.py JSON");
    results.as_array().expect("array").clone()
}

/// Equal as faasight's JSON and psycopg render them: numbers within 1e-9
/// relative, everything else exactly.
pub(crate) fn same_value(http: &Value, pg: &Value) -> bool {
    match (http, pg) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            (a - b).abs() <= 1e-9 * a.abs().max(1.0)
        }
        _ => http == pg,
    }
}

/// Compares HTTP JSON rows with a psycopg result, column by column.
pub(crate) fn assert_same_rows(what: &str, http: &[Value], pg: &Value) {
    let columns: Vec<&str> = pg["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no columns over pg: {pg}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let rows = pg["rows"].as_array().expect("rows");
    assert_eq!(http.len(), rows.len(), "{what}: row counts differ: {pg}");
    for (h, p) in http.iter().zip(rows) {
        for (i, col) in columns.iter().enumerate() {
            let hv = h.get(*col).unwrap_or(&Value::Null);
            assert!(
                same_value(hv, &p[i]),
                "{what}: column {col}: http {hv} vs pg {}",
                p[i]
            );
        }
    }
}

#[test]
fn golden_sql_over_http_and_postgres_wire() {
    let server = TestServer::start();
    let fixture = std::fs::read_to_string(repo_root().join("tests/golden/invocations.ndjson"))
        .expect("fixture");
    let lines = fixture.lines().filter(|l| !l.trim().is_empty()).count();
    let (status, body) = server.post_json("/v1/invocations", &[], &fixture);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], lines, "{body}");

    let update = std::env::var_os("FAASIGHT_GOLDEN_UPDATE").is_some();
    let copy_target = Path::new("/tmp/faasight-golden-copy.csv");
    let _ = std::fs::remove_file(copy_target);
    let mut failures = Vec::new();
    let mut pg_cases = Vec::new();
    for path in golden_files() {
        let text = std::fs::read_to_string(&path).expect("golden file");
        let mut blocks = parse(&text, &path);
        for block in &mut blocks {
            let Block::Case(case) = block else { continue };
            let what = format!("{}: {}", path.display(), case.name);
            match case.kind {
                Kind::Query => {
                    let (status, csv) = server.query_raw(&case.sql, "csv");
                    assert_eq!(status, 200, "{what}: {csv}");
                    let csv = csv.trim_end().to_string();
                    if update {
                        case.expected = csv;
                    } else if csv != case.expected {
                        failures.push(format!(
                            "{what}\n--- expected\n{}\n--- got\n{csv}",
                            case.expected
                        ));
                    }
                    pg_cases.push((what, case.sql.clone(), Kind::Query, String::new()));
                }
                Kind::Error => {
                    let (status, body) = server.query_raw(&case.sql, "json");
                    assert_eq!(status, 400, "{what}: HTTP must refuse: {body}");
                    assert!(
                        body.contains(&case.expected),
                        "{what}: HTTP error {body} lacks {:?}",
                        case.expected
                    );
                    pg_cases.push((what, case.sql.clone(), Kind::Error, case.expected.clone()));
                }
            }
        }
        if update {
            std::fs::write(&path, render(&blocks)).expect("rewrite golden file");
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n\n")
    );

    // The same statements over the Postgres wire, text and binary results.
    let queries: Vec<(String, Vec<Value>)> = pg_cases
        .iter()
        .map(|(_, sql, _, _)| (sql.clone(), Vec::new()))
        .collect();
    for binary in [false, true] {
        let results = pg_query(&server.pg, &queries, binary);
        assert_eq!(results.len(), pg_cases.len());
        for ((what, sql, kind, expected), result) in pg_cases.iter().zip(&results) {
            match kind {
                Kind::Query => {
                    assert!(result.get("error").is_none(), "{what} over pg: {result}");
                    let http = server.sql(sql);
                    assert_same_rows(what, &http, result);
                }
                Kind::Error => {
                    let message = result["error"].as_str().unwrap_or_default();
                    assert!(
                        message.contains(expected.as_str()),
                        "{what}: pg error {result} lacks {expected:?}"
                    );
                }
            }
        }
    }
    assert!(
        !copy_target.exists(),
        "a refused COPY still wrote {}",
        copy_target.display()
    );
    // Nothing was written into the data directory's tables by the refused statements.
    assert_eq!(
        server.count("SELECT count(*) FROM invocation_records"),
        lines as i64
    );
}
