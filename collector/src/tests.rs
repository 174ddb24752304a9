//! Recovery of a data directory: replay, flush, and the crash windows
//! between them, through the collector's own API (no server).

use std::fs::File;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use parquet::file::reader::{FileReader, SerializedFileReader};
use prost::Message;

use crate::decode::otlp::{self, Encoding, Signal};
use crate::model::Table;
use crate::{Collector, CollectorConfig};

fn body(seed: u8, spans: usize) -> Vec<u8> {
    let spans = (0..spans)
        .map(|i| Span {
            trace_id: vec![seed; 16],
            span_id: vec![seed, i as u8 + 1, 1, 1, 1, 1, 1, 1],
            name: format!("span-{seed}-{i}"),
            start_time_unix_nano: 1_764_331_200_000_000_000 + u64::from(seed) * 1_000_000_000,
            end_time_unix_nano: 1_764_331_200_500_000_000 + u64::from(seed) * 1_000_000_000,
            ..Default::default()
        })
        .collect();
    request(spans)
}

/// An OTLP/protobuf trace export of `spans` under one resource and scope.
fn request(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn submit(c: &Collector, seed: u8, spans: usize) {
    submit_body(c, &body(seed, spans)).await;
}

/// Decodes an OTLP/protobuf trace export and makes it durable.
async fn submit_body(c: &Collector, b: &[u8]) {
    submit_export(c, Signal::Traces, b).await;
}

/// Decodes an OTLP/protobuf export of `signal` and makes it durable.
async fn submit_export(c: &Collector, signal: Signal, b: &[u8]) {
    let n = otlp::decode(signal, Encoding::Protobuf, b, 0).expect("decodes");
    c.ingest
        .submit(
            otlp::record_kind(signal, Encoding::Protobuf),
            0,
            b,
            n.batches,
            n.unbuilt,
        )
        .await
        .expect("durable");
}

/// (rows in the buffer, rows in committed files)
fn rows(c: &Collector) -> (usize, usize) {
    let snap = c.buffer.snapshot(Table::Spans);
    let buffered = snap.batches.iter().map(|b| b.num_rows()).sum();
    let files = snap
        .files
        .iter()
        .map(|f| {
            let r = SerializedFileReader::new(File::open(&f.path).expect("open")).expect("parquet");
            r.metadata().file_metadata().num_rows() as usize
        })
        .sum();
    (buffered, files)
}

fn open(dir: &std::path::Path) -> Collector {
    Collector::open(CollectorConfig::for_tests(dir))
        .expect("open")
        .0
}

#[tokio::test]
async fn a_second_writer_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    let second = Collector::open(CollectorConfig::for_tests(dir.path()));
    assert!(matches!(second, Err(crate::Error::Locked(_))), "{second:?}");
    drop(c);
    // Released with the collector.
    open(dir.path());
}

/// A request of one span named `one-{n}`.
fn one_span(n: u32) -> Vec<u8> {
    let span = Span {
        trace_id: [n.to_be_bytes(); 4].concat(),
        span_id: [n.to_be_bytes(); 2].concat(),
        name: format!("one-{n}"),
        start_time_unix_nano: 1_764_331_200_000_000_000,
        end_time_unix_nano: 1_764_331_200_001_000_000,
        ..Default::default()
    };
    request(vec![span])
}

/// The span names the buffer holds, in order, and how many batches hold them.
fn buffered_names(c: &Collector) -> (Vec<String>, usize) {
    let snap = c.buffer.snapshot(Table::Spans);
    let names = snap
        .batches
        .iter()
        .flat_map(|b| {
            let col = b.column(b.schema().index_of("name").expect("name"));
            arrow::array::AsArray::as_string::<i32>(col)
                .iter()
                .map(|v| v.expect("name").to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    (names, snap.batches.len())
}

/// One-span requests (a Lambda function exporting per invocation) are merged
/// as they arrive: the buffer holds a few batches instead of one per
/// request, with every row once and in order, its byte count matching what
/// it holds; replay merges the same way and the flush writes every row.
#[tokio::test]
async fn one_span_requests_are_merged_in_the_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    let requests = 1000;
    // From 1: an all-zero trace id is invalid.
    for n in 1..=requests {
        submit_body(&c, &one_span(n)).await;
    }
    let expected: Vec<String> = (1..=requests).map(|n| format!("one-{n}")).collect();
    let (names, batches) = buffered_names(&c);
    assert_eq!(names, expected);
    assert!(
        batches < 300,
        "{batches} batches for {requests} one-span requests"
    );
    let held = Table::ALL
        .iter()
        .flat_map(|t| c.buffer.snapshot(*t).batches)
        .fold((0, 0), |(rows, bytes), b| {
            (rows + b.num_rows(), bytes + b.get_array_memory_size())
        });
    assert_eq!(held.0, requests as usize, "spans only");
    assert_eq!(c.buffer.usage(), held);
    drop(c);

    let c = open(dir.path());
    let (names, batches) = buffered_names(&c);
    assert!(names == expected, "replayed: {} rows", names.len());
    assert!(batches < 300, "{batches} batches after replay");
    let report = c.flusher.flush().await.expect("flush");
    assert_eq!(report.rows, requests as usize);
    assert_eq!(rows(&c), (0, requests as usize));
}

#[tokio::test]
async fn replay_restores_unflushed_rows_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    submit(&c, 1, 3).await;
    submit(&c, 2, 2).await;
    assert_eq!(rows(&c), (5, 0));
    drop(c);
    // Reopening twice without a flush replays the same records once each.
    let c = open(dir.path());
    assert_eq!(rows(&c), (5, 0));
    drop(c);
    let c = open(dir.path());
    assert_eq!(rows(&c), (5, 0));
}

/// A panic in the WAL writer thread (a bug) shows: `writer_ended`
/// resolves, every later request and the flush are refused instead of
/// waiting, and reopening the directory replays every acknowledged row.
#[tokio::test]
async fn a_wal_writer_that_panics_is_reported_and_its_rows_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    submit(&c, 1, 3).await;
    assert!(c.ingest.writer_running());
    c.ingest.crash_writer();
    tokio::time::timeout(std::time::Duration::from_secs(10), c.ingest.writer_ended())
        .await
        .expect("the writer's end is reported");
    assert!(!c.ingest.writer_running());
    let b = body(2, 1);
    let n = otlp::decode(Signal::Traces, Encoding::Protobuf, &b, 0).expect("decodes");
    let kind = otlp::record_kind(Signal::Traces, Encoding::Protobuf);
    let refused = c.ingest.submit(kind, 0, &b, n.batches, n.unbuilt).await;
    assert!(
        matches!(refused, Err(crate::ingest::IngestError::Closed)),
        "{refused:?}"
    );
    let flushed = c.flusher.flush().await;
    assert!(flushed.is_err(), "{flushed:?}");
    drop(c);
    let c = open(dir.path());
    assert_eq!(rows(&c), (3, 0));
    assert!(c.ingest.writer_running());
}

/// Copies a data directory, as a crash would leave it.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let dst = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), &dst).expect("copy");
        }
    }
}

/// A checkpoint renamed into place whose directory cannot be synced may or
/// may not survive a crash. The flush keeps its files and the segments it
/// sealed, so that a start-up after either reads every row once; the next
/// flush settles it.
#[tokio::test]
async fn a_checkpoint_whose_directory_sync_fails_keeps_what_either_outcome_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let c = open(&data);
    submit(&c, 1, 3).await;
    c.flusher.wal().fail_checkpoint_dir_sync(true);
    let err = c
        .flusher
        .flush()
        .await
        .expect_err("the failed sync is reported");
    assert!(err.to_string().contains("could not be synced"), "{err}");
    c.flusher.wal().fail_checkpoint_dir_sync(false);
    // Published: the rows are in the flush's file, not buffered twice.
    assert_eq!(rows(&c), (0, 3));
    let wal = crate::wal::WalDir::open(data.join("wal")).expect("wal");
    assert_eq!(wal.checkpoint().expect("checkpoint"), 1);
    assert!(
        wal.segments().expect("segments").contains(&1),
        "segment 1 kept"
    );

    // A crash now, with the new checkpoint durable ...
    let kept = dir.path().join("kept");
    copy_dir(&data, &kept);
    // ... or with the old one found again.
    let lost = dir.path().join("lost");
    copy_dir(&data, &lost);
    std::fs::write(lost.join("wal/checkpoint"), 0u64.to_le_bytes()).expect("old checkpoint");
    for (name, copy, expected) in [("kept", &kept, (0, 3)), ("lost", &lost, (3, 0))] {
        let reopened = open(copy);
        assert_eq!(rows(&reopened), expected, "checkpoint {name}");
    }

    // Without a crash, the next flush commits and removes the segments.
    submit(&c, 2, 2).await;
    c.flusher.flush().await.expect("flush");
    assert_eq!(rows(&c), (0, 5));
    assert!(wal.segments().expect("segments").iter().all(|id| *id > 2));
    drop(c);
    assert_eq!(rows(&open(&data)), (0, 5));
}

#[tokio::test]
async fn flush_moves_rows_to_parquet_and_retires_sealed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    submit(&c, 1, 4).await;
    let report = c.flusher.flush().await.expect("flush");
    assert_eq!(report.rows, 4);
    assert_eq!(rows(&c), (0, 4));
    submit(&c, 2, 1).await;
    drop(c);
    let c = open(dir.path());
    assert_eq!(rows(&c), (1, 4), "only the unflushed record is replayed");
    let wal = crate::wal::WalDir::open(dir.path().join("wal")).expect("wal");
    assert!(
        wal.segments()
            .expect("segments")
            .iter()
            .all(|id| *id > wal.checkpoint().expect("checkpoint"))
    );
}

/// The WAL's size gates ingest. Flushes that delete segments while
/// requests are being written leave it equal to the segments on disk: no
/// write counted twice, none lost from the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_size_stays_exact_through_flushes_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = std::sync::Arc::new(open(dir.path()));
    let wal = crate::wal::WalDir::open(dir.path().join("wal")).expect("wal");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..6u8)
        .map(|t| {
            let (c, stop) = (std::sync::Arc::clone(&c), std::sync::Arc::clone(&stop));
            tokio::spawn(async move {
                let mut i = 0u8;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    submit(&c, t.wrapping_mul(40).wrapping_add(i % 40), 1).await;
                    i = i.wrapping_add(1);
                }
            })
        })
        .collect();
    let mut rotated = 0;
    for _ in 0..300 {
        // Each flush under load: wait for rows from the senders first.
        while c.buffer.usage().0 == 0 {
            tokio::task::yield_now().await;
        }
        rotated += usize::from(c.flusher.flush().await.expect("flush").rows > 0);
    }
    assert_eq!(rotated, 300, "every flush took rows");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.expect("sender");
    }
    // A request after the last flush: the writer has measured the WAL by
    // the time it is durable, and its commit publishes the size.
    submit(&c, 255, 1).await;
    assert_eq!(
        c.metrics.wal_size_bytes.get(),
        replayable_bytes(&wal),
        "the counted size against the segments on disk"
    );
    assert!(
        !wal.spares().expect("spares").is_empty(),
        "segments were kept for reuse"
    );
}

/// The bytes of valid records in the segments on disk, headers included:
/// what a start-up would replay, without what earlier uses of reused
/// segments left after them.
fn replayable_bytes(wal: &crate::wal::WalDir) -> u64 {
    let segments = wal.segments().expect("segments");
    segments
        .iter()
        .map(|&id| {
            let replay = crate::wal::read_segment(&wal.segment_path(id), id).expect("read");
            replay.valid_len
        })
        .sum()
}

/// A flushed segment is kept as a spare and becomes a later segment,
/// whose records overwrite its old ones from the start. A crash then
/// replays only what the reused segment took since: the old records
/// behind it, already in Parquet, carry the old segment's id.
#[tokio::test]
async fn a_reused_segment_replays_only_the_records_written_since_its_reuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    let wal = crate::wal::WalDir::open(dir.path().join("wal")).expect("wal");
    for seed in 10..30 {
        submit(&c, seed, 3).await; // 20 records of segment 1
    }
    c.flusher.flush().await.expect("flush"); // segment 1 becomes a spare
    submit(&c, 2, 1).await;
    c.flusher.flush().await.expect("flush"); // segment 3 is made from it
    // As long as each old record: segment 1's second record follows it.
    submit(&c, 31, 3).await;
    assert_eq!(wal.segments().expect("segments"), vec![3]);
    assert_eq!(
        wal.spares()
            .expect("spares")
            .iter()
            .map(|&(id, _)| id)
            .collect::<Vec<_>>(),
        vec![2]
    );
    let segment = wal.segment_path(3);
    let on_disk = std::fs::metadata(&segment).expect("stat").len();
    let valid = replayable_bytes(&wal);
    assert!(
        on_disk > valid,
        "segment 3 holds segment 1's old records after its own ({on_disk} bytes on disk, {valid} valid)"
    );
    assert_eq!(
        c.metrics.wal_size_bytes.get(),
        valid,
        "the old bytes are not counted"
    );
    drop(c); // a crash: no final flush

    let (c, report) = Collector::open(CollectorConfig::for_tests(dir.path())).expect("open");
    assert_eq!(
        rows(&c),
        (3, 61),
        "only the request since the reuse is replayed"
    );
    assert_eq!(report.records_replayed, 1);
    assert_eq!(report.torn_tails, 0, "old bytes are not a torn write");
    assert!(report.quarantined.is_empty());
    // The next segment's id is above the spare's and the replayed one's.
    submit(&c, 4, 1).await;
    assert_eq!(wal.segments().expect("segments"), vec![3, 4]);
}

#[tokio::test]
async fn files_of_an_uncommitted_flush_are_removed_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    submit(&c, 1, 2).await;
    c.flusher.flush().await.expect("flush");
    submit(&c, 2, 3).await;
    // A crash after a flush renamed its file but before it wrote the
    // checkpoint: the file carries a flush id above the checkpoint while its
    // rows are still in the WAL.
    let committed = c.buffer.snapshot(Table::Spans).files[0].path.clone();
    let checkpoint = crate::wal::WalDir::open(dir.path().join("wal"))
        .expect("wal")
        .checkpoint()
        .expect("checkpoint");
    let orphan = committed.with_file_name(crate::storage::layout::file_name(checkpoint + 1));
    std::fs::copy(&committed, &orphan).expect("copy");
    drop(c);
    let c = open(dir.path());
    assert!(!orphan.exists(), "the uncommitted file is deleted");
    assert_eq!(rows(&c), (3, 2));
}

#[tokio::test]
async fn flushed_files_encode_ids_and_times_without_dictionaries() {
    use parquet::basic::Encoding as Pq;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    submit(&c, 1, 4).await;
    c.flusher.flush().await.expect("flush");
    let snap = c.buffer.snapshot(Table::Spans);
    let r =
        SerializedFileReader::new(File::open(&snap.files[0].path).expect("open")).expect("parquet");
    let rg = r.metadata().row_group(0);
    let encodings = |name: &str| {
        rg.columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .map(|c| c.encodings().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    for (col, expected) in [
        ("trace_id", Pq::DELTA_LENGTH_BYTE_ARRAY),
        ("span_id", Pq::DELTA_LENGTH_BYTE_ARRAY),
        ("time", Pq::DELTA_BINARY_PACKED),
        ("end_time", Pq::DELTA_BINARY_PACKED),
    ] {
        let e = encodings(col);
        assert!(e.contains(&expected), "{col}: {e:?}");
        assert!(!e.contains(&Pq::RLE_DICTIONARY), "{col}: {e:?}");
    }
    assert!(!encodings("duration_ms").contains(&Pq::RLE_DICTIONARY));
    // Span attribute values go without a dictionary.
    assert!(!encodings("attributes.entries.values").contains(&Pq::RLE_DICTIONARY));
    // Repeated text keeps its dictionary.
    assert!(encodings("name").contains(&Pq::RLE_DICTIONARY));
    assert!(encodings("resource_attributes.entries.values").contains(&Pq::RLE_DICTIONARY));
    // Map keys and values carry no min/max; the columns that prune do.
    let has_statistics = |name: &str| {
        rg.columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .map(|c| c.statistics().is_some())
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    for map in ["attributes", "resource_attributes"] {
        for leaf in ["keys", "values"] {
            let column = format!("{map}.entries.{leaf}");
            assert!(!has_statistics(&column), "{column} has statistics");
        }
    }
    for column in ["time", "trace_id", "service_name", "function_name", "name"] {
        assert!(has_statistics(column), "{column} has no statistics");
    }
}

/// Decodes an OTLP/protobuf logs export of `records` log records and makes
/// it durable.
async fn submit_logs(c: &Collector, records: usize) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let log_records = (0..records)
        .map(|i| LogRecord {
            time_unix_nano: 1_764_331_200_000_000_000 + i as u64,
            severity_text: "INFO".into(),
            ..Default::default()
        })
        .collect();
    let b = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    submit_export(c, Signal::Logs, &b).await;
}

/// Files and temporary files under `dir`, at any depth.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// A flush writes its tables at once. When one table cannot be written,
/// the files the others wrote are removed, every row stays buffered, and
/// the next flush writes each row once.
#[tokio::test]
async fn a_flush_that_fails_on_one_table_leaves_no_file_of_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = open(dir.path());
    submit(&c, 1, 4).await;
    submit_logs(&c, 3).await;
    // The logs table's directory cannot be made: a file is in its way.
    let logs = dir.path().join("logs");
    if logs.is_dir() {
        std::fs::remove_dir_all(&logs).expect("empty logs dir");
    }
    std::fs::write(&logs, b"in the way").expect("blocker");

    let err = c.flusher.flush().await.expect_err("logs cannot be written");
    assert!(err.to_string().contains("logs"), "{err}");
    let spans_files = files_under(&dir.path().join("spans"));
    assert!(spans_files.is_empty(), "left behind: {spans_files:?}");
    assert_eq!(rows(&c), (4, 0));
    assert_eq!(c.buffer.usage().0, 7, "the logs stay buffered too");

    std::fs::remove_file(&logs).expect("unblock");
    let report = c.flusher.flush().await.expect("flush");
    assert_eq!(report.rows, 7);
    assert_eq!(rows(&c), (0, 4));
    assert_eq!(files_under(&logs).len(), 1, "{:?}", files_under(&logs));
}
