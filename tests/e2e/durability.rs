//! Acknowledged data survives kill -9 and SIGTERM exactly once, and the
//! Parquet files read by DuckDB and pyarrow agree with faasight.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{TestServer, client_script, python, run_json};

fn start_sender(server: &TestServer, service: &str) -> Child {
    Command::new(python())
        .arg(client_script("keep_sending.py"))
        .args([server.http_url().as_str(), service])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sender")
}

/// Kills a sender and returns the span ids whose export was acknowledged.
fn acknowledged(mut child: Child) -> BTreeSet<String> {
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    out.lines()
        .filter(|l| l.len() == 16)
        .map(String::from)
        .collect()
}

/// span_id → number of rows.
fn stored(server: &TestServer) -> BTreeMap<String, i64> {
    server
        .sql("SELECT span_id, count(*) AS n FROM spans GROUP BY span_id")
        .into_iter()
        .map(|r| {
            (
                r["span_id"].as_str().expect("id").to_string(),
                r["n"].as_i64().expect("n"),
            )
        })
        .collect()
}

fn assert_exactly_once(server: &TestServer, acked: &BTreeSet<String>) {
    let rows = stored(server);
    let missing: Vec<_> = acked.iter().filter(|id| !rows.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged spans lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let dup: Vec<_> = rows.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "duplicated spans: {dup:?}");
}

fn duckdb_view(server: &TestServer) -> serde_json::Value {
    run_json(
        Command::new(python())
            .arg(client_script("duckdb_count.py"))
            .arg(&server.data_dir)
            .arg("spans"),
    )
}

#[test]
fn kill9_while_sending_then_sigterm_loses_and_duplicates_nothing() {
    let server = TestServer::builder()
        .arg("--flush-interval")
        .arg("300ms")
        .start();
    let senders: Vec<Child> = (0..2)
        .map(|i| start_sender(&server, &format!("sender-{i}")))
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    let mut server = server;
    server.kill9();
    let acked: BTreeSet<String> = senders.into_iter().flat_map(acknowledged).collect();
    assert!(
        acked.len() > 100,
        "senders got only {} acknowledgements",
        acked.len()
    );

    let mut server = server.restart();
    assert!(
        server
            .wait_for_log("data directory recovered")
            .contains("data directory recovered")
    );
    assert_exactly_once(&server, &acked);
    let before = stored(&server).len();

    // More traffic, then a clean stop: everything lands in Parquet.
    let sender = start_sender(&server, "sender-after");
    std::thread::sleep(Duration::from_secs(2));
    let acked_after = acknowledged(sender);
    assert!(!acked_after.is_empty());
    server.terminate();
    let server = server.restart();
    let all: BTreeSet<String> = acked.union(&acked_after).cloned().collect();
    assert_exactly_once(&server, &all);
    let count = server.count("SELECT count(*) AS n FROM spans");
    assert!(count as usize >= before + acked_after.len());

    // The WAL holds nothing after a clean stop; DuckDB and pyarrow read the
    // same rows from the Parquet files alone.
    let view = duckdb_view(&server);
    assert_eq!(view["duckdb_rows"].as_i64(), Some(count));
    assert_eq!(view["duckdb_distinct_span_ids"].as_i64(), Some(count));
    assert_eq!(view["duckdb_rows_in_right_partition"].as_i64(), Some(count));
    assert_eq!(view["pyarrow_rows"].as_i64(), Some(count));
    let ids: BTreeSet<String> = view["span_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect();
    assert!(all.is_subset(&ids));
}

#[test]
fn corrupt_wal_segment_is_quarantined_and_its_valid_prefix_recovered() {
    // A long flush interval keeps everything in the WAL.
    let server = TestServer::builder()
        .arg("--flush-interval")
        .arg("1h")
        .start();
    let sender = start_sender(&server, "corrupt");
    std::thread::sleep(Duration::from_secs(2));
    let mut server = server;
    server.kill9();
    let acked = acknowledged(sender);
    assert!(acked.len() > 20);
    let wal = server.data_dir.join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .expect("wal dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    let seg = segments.last().expect("a segment");
    let mut bytes = std::fs::read(seg).expect("read segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(seg, &bytes).expect("write segment");

    let server = server.restart();
    let log = server.wait_for_log("quarantined");
    assert!(log.contains("quarantined"), "{log}");
    assert!(
        wal.join("quarantine")
            .read_dir()
            .expect("quarantine dir")
            .count()
            == 1
    );
    let rows = stored(&server);
    // The prefix before the damage is back, nothing is duplicated, and what
    // came after the damage is the only loss.
    assert!(
        rows.len() > 5 && rows.len() < acked.len(),
        "{} of {}",
        rows.len(),
        acked.len()
    );
    assert!(rows.values().all(|n| *n == 1));
    assert!(rows.keys().all(|id| acked.contains(id)));
}
