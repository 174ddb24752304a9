//! Acknowledged data survives kill -9 and SIGTERM exactly once, and the
//! Parquet files read by DuckDB and pyarrow agree with faasight.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::path::{Path, PathBuf};

use crate::bad_input::{request, span};
use crate::support::{TestServer, client_script, python, run_json, wait_until};

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

/// The span ids [`duckdb_view`] found in the Parquet files.
fn ids_in_files(view: &serde_json::Value) -> BTreeSet<String> {
    view["span_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect()
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
    assert!(all.is_subset(&ids_in_files(&view)));
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

/// A tmpfs of `size` mounted for one test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "faasight-test",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test fills a disk: it mounts a {size} tmpfs, which needs root \
             (CAP_SYS_ADMIN), as CI has: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Sends traces request `n` (8 spans with ~700-byte attributes, ids made
/// from `n`): its span ids when acknowledged, `None` when refused with 503.
fn send_numbered(server: &TestServer, n: u32) -> Option<Vec<String>> {
    let spans: Vec<_> = (0..8u32)
        .map(|j| {
            let mut s = span(
                [n.to_be_bytes(), [1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]].concat(),
                "write",
                &format!("{n}-{j}-").repeat(100),
            );
            s.span_id = [n.to_be_bytes(), (j + 1).to_be_bytes()].concat();
            s
        })
        .collect();
    let ids = spans.iter().map(|s| hex::encode(&s.span_id)).collect();
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/traces", server.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(request(spans))
        .send()
        .expect("send");
    match resp.status().as_u16() {
        200 => Some(ids),
        503 => None,
        other => panic!("request {n}: {other} {}", resp.text().unwrap_or_default()),
    }
}

/// The disk fills up in the middle of a WAL write: the requests that could
/// not be written are refused with 503, and once space is free again the
/// next ones are acknowledged. A write cut short must not stay in the
/// segment before them (replay would take it for corruption and quarantine
/// every later record): after kill -9, every acknowledged span is there
/// exactly once, no refused one is, and nothing was quarantined.
#[test]
fn a_full_disk_refuses_writes_and_loses_nothing_acknowledged_after_it() {
    let disk = SmallDisk::mount("1m");
    let ballast: PathBuf = disk.path().join("ballast");
    // 1 MiB less ~120 KiB: room for a few dozen requests.
    std::fs::write(&ballast, vec![1u8; (1 << 20) - (120 << 10)]).expect("ballast");
    let server = TestServer::builder()
        .data_dir(&disk.path().join("data"))
        .args(&["--flush-interval", "1h"])
        .start();

    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut refused = 0;
    let mut n = 0;
    while refused < 5 {
        assert!(n < 1_000, "the disk never filled up");
        match send_numbered(&server, n) {
            Some(ids) => acked.extend(ids),
            None => refused += 1,
        }
        n += 1;
    }
    assert!(
        acked.len() >= 80,
        "only {} spans before the disk filled",
        acked.len()
    );
    assert!(
        server.log().contains("No space left on device"),
        "{}",
        server.log()
    );

    std::fs::remove_file(&ballast).expect("free the disk");
    for _ in 0..20 {
        let ids = send_numbered(&server, n).expect("acknowledged once there is room");
        acked.extend(ids);
        n += 1;
    }

    let server = server.restart();
    server.wait_for_log("data directory recovered");
    assert_exactly_once(&server, &acked);
    assert_eq!(
        server.count("SELECT count(*) AS n FROM spans") as usize,
        acked.len(),
        "a refused request's spans were stored"
    );
    let quarantine = server.data_dir.join("wal").join("quarantine");
    let quarantined = quarantine.read_dir().map_or(0, |d| d.count());
    assert_eq!(
        quarantined,
        0,
        "a segment was quarantined; log:\n{}",
        server.log()
    );
}

/// Fills what is left of `disk` with a file: the disk is full afterwards.
fn fill(disk: &SmallDisk, name: &str) -> PathBuf {
    use std::io::Write;
    let path = disk.path().join(name);
    let mut f = std::fs::File::create(&path).expect("ballast");
    let chunk = vec![1u8; 4096];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(28), "filling the disk: {e}");
            return path;
        }
    }
}

/// Waits until the unlabelled series `name` of `/metrics` satisfies `ok`.
fn wait_for_metric(server: &TestServer, name: &str, ok: impl Fn(f64) -> bool) {
    wait_until(name, || ok(server.metric(name).unwrap_or(f64::NAN)));
}

fn files_under(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                found.push(p);
            }
        }
    }
    found
}

/// The disk fills up while acknowledged rows wait in the buffer: flushes
/// fail (the next WAL segment cannot be created, or the Parquet file cannot
/// be written), the rows stay queryable, and once there is room again the
/// next flush writes each row once, ingest goes on, and nothing is lost or
/// doubled, neither in the files (DuckDB) nor after a restart. Then a
/// SIGTERM on a full disk: the final flush fails, the exit says so, and the
/// next start replays the rows from the WAL.
#[test]
fn a_flush_that_fails_on_a_full_disk_is_retried_once_there_is_room() {
    let disk = SmallDisk::mount("2m");
    let server = TestServer::builder()
        .data_dir(&disk.path().join("data"))
        .args(&["--flush-interval", "2s"])
        .start();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut n = 0;
    for _ in 0..10 {
        acked.extend(send_numbered(&server, n).expect("room on the disk"));
        n += 1;
    }
    // Two pages of slack: room for the next WAL segment, not for a file.
    let slack = disk.path().join("slack");
    std::fs::write(&slack, [0u8; 8192]).expect("slack");
    let ballast = fill(&disk, "ballast");
    std::fs::remove_file(&slack).expect("slack");
    assert_eq!(
        server.metric("faasight_flushed_rows_total"),
        Some(0.0),
        "a flush ran before the disk filled up; the test needs the rows buffered"
    );
    // The first flushes fail writing their Parquet file (the rows of both
    // stay buffered, their segments sealed), the next one creating a segment.
    wait_for_metric(&server, "faasight_flush_failures_total", |v| v >= 3.0);
    let log = server.log();
    assert!(
        log.contains("flush failed")
            && log.contains("parquet io error on ")
            && log.contains(".parquet.tmp: No space left on device")
            && !log.contains("Parquet error")
            && log.contains("wal io error"),
        "{log}"
    );
    // Still queryable from the buffer, once each, while the flush fails.
    assert_exactly_once(&server, &acked);
    assert!(
        files_under(&server.data_dir, ".tmp").is_empty(),
        "a failed flush left a partial file: {:?}",
        files_under(&server.data_dir, ".tmp")
    );

    std::fs::remove_file(&ballast).expect("free the disk");
    wait_for_metric(&server, "faasight_buffer_rows", |v| v == 0.0);
    let view = duckdb_view(&server);
    assert_eq!(
        ids_in_files(&view),
        acked,
        "the Parquet files hold other spans"
    );
    assert_eq!(view["duckdb_rows"].as_u64(), Some(acked.len() as u64));
    for _ in 0..5 {
        acked.extend(send_numbered(&server, n).expect("ingest goes on"));
        n += 1;
    }
    let mut server = server.restart();
    server.wait_for_log("data directory recovered");
    assert_exactly_once(&server, &acked);
    assert_eq!(
        server.count("SELECT count(*) AS n FROM spans") as usize,
        acked.len()
    );

    // A SIGTERM on a full disk: the final flush cannot be written; the rows
    // stay in the WAL and come back at the next start.
    for _ in 0..5 {
        acked.extend(send_numbered(&server, n).expect("room on the disk"));
        n += 1;
    }
    let ballast = fill(&disk, "ballast");
    let status = server.stop_with_sigterm();
    assert!(
        !status.success(),
        "the final flush failed, yet faasight exited 0; log:\n{}",
        server.log()
    );
    let log = server.wait_for_log("rows stay in the write-ahead log");
    assert!(log.contains("rows stay in the write-ahead log"), "{log}");
    std::fs::remove_file(&ballast).expect("free the disk");
    let server = server.restart();
    server.wait_for_log("data directory recovered");
    assert_exactly_once(&server, &acked);
    assert_eq!(
        server.count("SELECT count(*) AS n FROM spans") as usize,
        acked.len()
    );
    let quarantine = server.data_dir.join("wal").join("quarantine");
    assert_eq!(quarantine.read_dir().map_or(0, |d| d.count()), 0);
}

/// Sets or clears the immutable attribute of `path` (ext4: not even root
/// may delete an immutable file).
fn immutable(path: &Path, on: bool) {
    let out = Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .output()
        .expect("run chattr");
    assert!(
        out.status.success(),
        "this test makes a WAL segment undeletable with chattr +i, which needs root \
         and a file system with the attribute (ext4): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A flush whose checkpoint is written but whose flushed WAL segment cannot
/// be retired (deleted, or renamed to a spare) has still stored its rows:
/// SIGTERM exits 0 (it used to report "final flush failed" and exit 1), the
/// leftover segment is retired at the next start instead of replayed, and
/// every span is there exactly once.
#[test]
fn a_flushed_segment_that_cannot_be_deleted_does_not_fail_the_flush() {
    let mut server = TestServer::builder()
        .args(&["--flush-interval", "1h"])
        .start();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    for n in 0..5 {
        acked.extend(send_numbered(&server, n).expect("acknowledged"));
    }
    let segment = files_under(&server.data_dir.join("wal"), ".wal")
        .into_iter()
        .next()
        .expect("a wal segment");
    immutable(&segment, true);
    let status = server.stop_with_sigterm();
    immutable(&segment, false);
    let log = server.wait_for_log("final flush done");
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    assert!(log.contains("could not be retired yet"), "{log}");
    assert!(segment.exists());

    let server = server.restart();
    let log = server.wait_for_log("data directory recovered");
    assert!(log.contains("rows_replayed=0"), "{log}");
    assert!(
        !segment.exists(),
        "the flushed segment was not retired at start"
    );
    assert_exactly_once(&server, &acked);
    assert_eq!(
        server.count("SELECT count(*) AS n FROM spans") as usize,
        acked.len()
    );
}
