//! The durable hand-off: a request's body goes into the WAL, the WAL is
//! synced, its rows go into the buffer, and only then is it acknowledged.
//!
//! One OS thread owns the open segment. Requests queue their framed records
//! on a channel; the thread takes everything queued, writes it, syncs once
//! (group commit), appends the rows to the buffer and answers every waiting
//! request. Rotation for a flush goes through the same queue, so a sealed
//! segment holds exactly the rows the flush takes from the buffer.
//!
//! Small traces requests arrive unbuilt ([`UnbuiltSpans`]): after the sync
//! the thread builds the rows of all of a group's small requests into one
//! batch, appends it, and only then answers those requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use tokio::sync::{Notify, oneshot, watch};

use crate::buffer::Buffer;
use crate::decode::otlp::spans;
use crate::instances::Instances;
use crate::model::{Table, TableBatch, UnbuiltSpans};
use crate::telemetry::CollectorMetrics;
use crate::wal::{self, RecordKind, SegmentWriter, WalDir};

/// Why a request could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("server overloaded: {0}")]
    Overloaded(&'static str),
    #[error(transparent)]
    Wal(#[from] wal::Error),
    #[error("the wal writer has stopped")]
    Closed,
    #[error("could not build rows: {0}")]
    Rows(#[from] arrow::error::ArrowError),
}

/// Limits that turn into back-pressure (429/503 with Retry-After).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_buffer_bytes: usize,
    pub max_wal_bytes: u64,
}

/// What a rotation hands to the flush: the sealed segment id and the rows
/// that were buffered up to it.
#[derive(Debug)]
pub struct Rotation {
    pub sealed_segment: u64,
    pub tables: Vec<(Table, Vec<RecordBatch>)>,
}

enum Command {
    Append {
        framed: wal::Framed,
        batches: Vec<TableBatch>,
        unbuilt: Option<UnbuiltSpans>,
        done: oneshot::Sender<Result<(), IngestError>>,
    },
    Rotate {
        done: oneshot::Sender<Result<Rotation, IngestError>>,
    },
    /// The flush retired the segments up to this id: they no longer count
    /// in the WAL's size. The writer counts between its own writes, so that
    /// no write is counted twice or lost from the count.
    Retired(u64),
    /// Panics the writer thread, as a bug in it would.
    #[cfg(test)]
    Crash,
}

/// Cheap handle used by every receiver.
#[derive(Debug, Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Command>,
    buffer: Buffer,
    metrics: Arc<CollectorMetrics>,
    limits: Limits,
    wal_bytes: Arc<AtomicU64>,
    flush_wake: Arc<Notify>,
    instances: Arc<Instances>,
    /// Turns true when the writer thread has ended.
    writer_ended: watch::Receiver<bool>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Append { framed, .. } => write!(f, "Append({} bytes)", framed.len()),
            Command::Rotate { .. } => f.write_str("Rotate"),
            Command::Retired(id) => write!(f, "Retired({id})"),
            #[cfg(test)]
            Command::Crash => f.write_str("Crash"),
        }
    }
}

/// Arguments of [`Ingest::start`].
#[derive(Debug)]
pub struct IngestArgs {
    pub wal: WalDir,
    pub first_segment: u64,
    pub buffer: Buffer,
    pub metrics: Arc<CollectorMetrics>,
    pub limits: Limits,
    /// The replayed segments and the bytes of their valid records: they
    /// count in the WAL's size until a flush retires them.
    pub replayed: Vec<(u64, u64)>,
    /// The instances seen, shared with replay and saved by each flush.
    pub instances: Arc<Instances>,
}

impl Ingest {
    /// Opens segment `first_segment` and starts the writer thread.
    pub fn start(args: IngestArgs) -> Result<Self, IngestError> {
        let segment = SegmentWriter::create_or_reuse(
            args.wal.segment_path(args.first_segment),
            args.first_segment,
            args.wal.take_spare(),
        )?;
        let (tx, rx) = mpsc::channel();
        let sealed = args.replayed;
        let replayed_bytes: u64 = sealed.iter().map(|&(_, bytes)| bytes).sum();
        let wal_bytes = Arc::new(AtomicU64::new(replayed_bytes + segment.len()));
        let flush_wake = Arc::new(Notify::new());
        let writer = Writer {
            limits: args.limits,
            flush_wake: Arc::clone(&flush_wake),
            wal: args.wal,
            segment,
            sealed,
            buffer: args.buffer.clone(),
            metrics: Arc::clone(&args.metrics),
            wal_bytes: Arc::clone(&wal_bytes),
            instances: Arc::clone(&args.instances),
        };
        let (ended_tx, writer_ended) = watch::channel(false);
        std::thread::Builder::new()
            .name("faasight-wal".into())
            .spawn(move || {
                let _ended = EndedGuard(ended_tx);
                writer.run(rx)
            })
            .map_err(|e| {
                IngestError::Wal(wal::Error::Io {
                    path: "wal writer thread".into(),
                    source: e,
                })
            })?;
        Ok(Ingest {
            tx,
            buffer: args.buffer,
            metrics: args.metrics,
            limits: args.limits,
            wal_bytes,
            flush_wake,
            instances: args.instances,
            writer_ended,
        })
    }

    /// Resolves when the WAL writer thread has ended: a panic in it (a bug),
    /// or every handle dropped. Nothing can be made durable after that; a
    /// server should stop, so that a restart replays the WAL and takes
    /// requests again.
    pub async fn writer_ended(&self) {
        let mut ended = self.writer_ended.clone();
        // An error means the guard's sender is gone: ended as well.
        let _ = ended.wait_for(|ended| *ended).await;
    }

    /// Panics the writer thread, as a bug in it would.
    #[cfg(test)]
    pub(crate) fn crash_writer(&self) {
        let _ = self.tx.send(Command::Crash);
    }

    /// True while the WAL writer thread runs.
    #[cfg(test)]
    pub(crate) fn writer_running(&self) -> bool {
        !*self.writer_ended.borrow()
    }

    /// Refuses work early when the buffer or the WAL is over its limit.
    pub fn check_capacity(&self) -> Result<(), IngestError> {
        let (_, bytes) = self.buffer.usage();
        if bytes > self.limits.max_buffer_bytes {
            self.metrics.overloaded.add(1);
            return Err(IngestError::Overloaded("buffer is full, flush in progress"));
        }
        if self.wal_bytes.load(Ordering::Relaxed) > self.limits.max_wal_bytes {
            self.metrics.overloaded.add(1);
            return Err(IngestError::Overloaded(
                "write-ahead log is full, flush in progress",
            ));
        }
        Ok(())
    }

    /// Makes `body` durable and its rows visible (`batches`, and the rows of
    /// `unbuilt` once built); returns once synced.
    pub async fn submit(
        &self,
        kind: RecordKind,
        received_at_micros: i64,
        body: &[u8],
        batches: Vec<TableBatch>,
        unbuilt: Option<UnbuiltSpans>,
    ) -> Result<(), IngestError> {
        let framed = wal::encode_record(kind as u8, received_at_micros, body)?;
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Append {
                framed,
                batches,
                unbuilt,
                done,
            })
            .map_err(|_| IngestError::Closed)?;
        wait.await.map_err(|_| IngestError::Closed)?
    }

    /// Seals the current segment and takes the buffered rows for a flush.
    pub async fn rotate(&self) -> Result<Rotation, IngestError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Rotate { done })
            .map_err(|_| IngestError::Closed)?;
        wait.await.map_err(|_| IngestError::Closed)?
    }

    /// Called by the flush once the segments up to `id` are retired: the
    /// WAL writer stops counting them before its next write.
    pub fn retired(&self, id: u64) {
        // A closed writer refuses every request anyway.
        let _ = self.tx.send(Command::Retired(id));
    }

    pub fn buffer(&self) -> &Buffer {
        &self.buffer
    }

    pub fn instances(&self) -> &Arc<Instances> {
        &self.instances
    }

    /// Notified when the buffer or WAL passes half its limit, so the flush
    /// runs before ingest has to refuse work.
    pub fn flush_wake(&self) -> Arc<Notify> {
        Arc::clone(&self.flush_wake)
    }
}

/// Marks the writer thread as ended when dropped, also while it unwinds
/// from a panic.
struct EndedGuard(watch::Sender<bool>);

impl Drop for EndedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the wal writer thread panicked; nothing more can be made durable");
        }
        self.0.send_replace(true);
    }
}

/// A written record waiting for the group's sync: its rows and its reply.
struct Pending {
    batches: Vec<TableBatch>,
    unbuilt: Option<UnbuiltSpans>,
    done: oneshot::Sender<Result<(), IngestError>>,
}

struct Writer {
    limits: Limits,
    flush_wake: Arc<Notify>,
    wal: WalDir,
    segment: SegmentWriter,
    /// Segments sealed and not yet retired, with the bytes of their records.
    sealed: Vec<(u64, u64)>,
    buffer: Buffer,
    metrics: Arc<CollectorMetrics>,
    wal_bytes: Arc<AtomicU64>,
    instances: Arc<Instances>,
}

/// Upper bound of bytes one group commit takes before syncing.
const MAX_GROUP_BYTES: usize = 32 << 20;

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            let mut bytes = 0;
            while bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(cmd) => {
                        if let Command::Append { framed, .. } = &cmd {
                            bytes += framed.len();
                        }
                        group.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            self.process(group);
        }
    }

    fn process(&mut self, group: Vec<Command>) {
        let mut records: Vec<wal::Framed> = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        for cmd in group {
            match cmd {
                Command::Append {
                    framed,
                    batches,
                    unbuilt,
                    done,
                } => {
                    records.push(framed);
                    pending.push(Pending {
                        batches,
                        unbuilt,
                        done,
                    });
                }
                Command::Rotate { done } => {
                    // Everything queued before the rotation belongs to the
                    // sealed segment: commit it first.
                    let written = self.write(
                        &mut std::mem::take(&mut records),
                        std::mem::take(&mut pending),
                    );
                    self.commit(written);
                    let _ = done.send(self.rotate());
                }
                // Records queued before it are not written yet: the count
                // leaves them out, and their write adds them.
                Command::Retired(id) => {
                    self.sealed.retain(|&(sealed, _)| sealed > id);
                    let bytes =
                        self.sealed.iter().map(|&(_, b)| b).sum::<u64>() + self.segment.len();
                    self.wal_bytes.store(bytes, Ordering::Relaxed);
                    self.metrics.wal_size_bytes.set(bytes);
                }
                #[cfg(test)]
                Command::Crash => panic!("the wal writer crashed (test)"),
            }
        }
        let written = self.write(&mut records, pending);
        self.commit(written);
    }

    /// Writes the records of `pending` (`records[i]` is `pending[i]`'s) in
    /// one go; returns those to sync: all of them, or none when the write
    /// failed (the segment holds none of them then, see
    /// [`SegmentWriter::write`], and their requests are refused). A segment
    /// poisoned by an earlier failure is replaced first.
    fn write(&mut self, records: &mut [wal::Framed], pending: Vec<Pending>) -> Vec<Pending> {
        if pending.is_empty() {
            return pending;
        }
        if self.segment.is_poisoned() {
            // When the next segment cannot be created either, the write
            // below fails and the next group tries again.
            if let Err(e) = self.open_next() {
                tracing::error!(error = %e, "could not open a new wal segment");
            }
        }
        match self.segment.write(records) {
            Ok(bytes) => {
                self.metrics.wal_bytes_written.add(bytes);
                self.wal_bytes.fetch_add(bytes, Ordering::Relaxed);
                pending
            }
            Err(e) => {
                tracing::error!(error = %e, requests = pending.len(), "wal write failed; refusing the group");
                for Pending { done, .. } in pending {
                    let _ = done.send(Err(IngestError::Overloaded("write-ahead log write failed")));
                }
                Vec::new()
            }
        }
    }

    fn commit(&mut self, pending: Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        let started = Instant::now();
        let synced = self.segment.sync();
        self.metrics.wal_fsync.observe(started.elapsed());
        self.metrics
            .wal_size_bytes
            .set(self.wal_bytes.load(Ordering::Relaxed));
        match synced {
            Ok(()) => {
                self.metrics.wal_group_requests.add(pending.len() as u64);
                self.append(pending);
                // After the replies: the requests do not wait for it.
                self.buffer.merge_small_batches();
                let (rows, bytes) = self.buffer.usage();
                self.metrics.buffer_rows.set(rows as u64);
                self.metrics.buffer_bytes.set(bytes as u64);
                let wal = self.wal_bytes.load(Ordering::Relaxed);
                if bytes > self.limits.max_buffer_bytes / 2 || wal > self.limits.max_wal_bytes / 2 {
                    self.flush_wake.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "wal sync failed; refusing the group; the next one goes to a new segment");
                for Pending { done, .. } in pending {
                    let _ = done.send(Err(IngestError::Overloaded("write-ahead log sync failed")));
                }
                // The failed segment may hold records that were never
                // acknowledged; they are harmless duplicates only if replayed.
                // The sync poisoned it: the next group goes to a fresh
                // segment, and the flush drops this one.
            }
        }
    }

    /// Appends a synced group's rows to the buffer and answers its
    /// requests: built rows as they come, the unbuilt ones built into one
    /// batch first.
    fn append(&mut self, pending: Vec<Pending>) {
        let mut unbuilt = Vec::new();
        let mut waiting = Vec::new();
        for Pending {
            batches,
            unbuilt: u,
            done,
        } in pending
        {
            self.buffer.append(batches);
            match u {
                Some(u) => {
                    unbuilt.push(u);
                    waiting.push(done);
                }
                None => {
                    let _ = done.send(Ok(()));
                }
            }
        }
        if unbuilt.is_empty() {
            return;
        }
        match spans::build_group(&unbuilt, &self.instances) {
            Ok(batches) => {
                self.buffer.append(batches);
                for done in waiting {
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                // Only a schema mismatch between the builders and the table
                // fails here, a bug. The records are in the WAL; replay
                // builds them the same way and reports the same error.
                tracing::error!(error = %e, "could not build the rows of a group commit");
                let reason = e.to_string();
                for done in waiting {
                    let e = arrow::error::ArrowError::InvalidArgumentError(reason.clone());
                    let _ = done.send(Err(e.into()));
                }
            }
        }
    }

    fn open_next(&mut self) -> Result<u64, IngestError> {
        let sealed = self.segment.id();
        let next = sealed + 1;
        let segment = SegmentWriter::create_or_reuse(
            self.wal.segment_path(next),
            next,
            self.wal.take_spare(),
        )?;
        let old = std::mem::replace(&mut self.segment, segment);
        self.sealed.push((sealed, old.len()));
        self.wal_bytes
            .fetch_add(self.segment.len(), Ordering::Relaxed);
        Ok(sealed)
    }

    fn rotate(&mut self) -> Result<Rotation, IngestError> {
        let sealed_segment = self.open_next()?;
        let tables = self.buffer.begin_flush();
        Ok(Rotation {
            sealed_segment,
            tables,
        })
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::compute::concat_batches;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    use super::*;
    use crate::decode::otlp::{self, Encoding, SMALL_REQUEST_SPANS, Signal};
    use crate::model::schema;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    /// A request of `spans` handler spans of function `orders` in
    /// `instance`, the first of trace `n`, plus one span with a 15-byte
    /// trace id when `invalid`.
    fn request(n: u8, instance: &str, spans: usize, invalid: bool) -> Vec<u8> {
        let mut spans: Vec<Span> = (0..spans)
            .map(|i| Span {
                trace_id: vec![n; 16],
                span_id: vec![n, i as u8, 1, 1, 1, 1, 1, 1],
                name: format!("handler-{n}-{i}"),
                kind: 2,
                start_time_unix_nano: 1_764_331_200_000_000_000
                    + u64::from(n) * 1_000_000
                    + i as u64 * 1_000,
                end_time_unix_nano: 1_764_331_200_020_000_000 + u64::from(n) * 1_000_000,
                attributes: vec![
                    kv("faas.invocation_id", &format!("r-{n}-{i}")),
                    kv("http.route", "/orders"),
                ],
                ..Default::default()
            })
            .collect();
        if invalid {
            spans.push(Span {
                trace_id: vec![n; 15],
                span_id: vec![9; 8],
                name: "bad".into(),
                ..Default::default()
            });
        }
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "orders"), kv("faas.instance", instance)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn writer(dir: &std::path::Path, buffer: &Buffer) -> Writer {
        let wal = WalDir::open(dir).expect("wal dir");
        let segment = SegmentWriter::create(wal.segment_path(1), 1).expect("segment");
        Writer {
            limits: Limits {
                max_buffer_bytes: usize::MAX,
                max_wal_bytes: u64::MAX,
            },
            flush_wake: Arc::new(Notify::new()),
            wal,
            segment,
            sealed: Vec::new(),
            buffer: buffer.clone(),
            metrics: Arc::default(),
            wal_bytes: Arc::default(),
            instances: Arc::default(),
        }
    }

    fn rows_of(buffer: &Buffer, table: Table) -> RecordBatch {
        concat_batches(&table.schema(), &buffer.snapshot(table).batches).expect("concat")
    }

    /// The small requests of one group commit become one batch per table,
    /// holding exactly the rows (and cold starts by instance) the decoder
    /// builds for each request on its own, as replay does; every request is
    /// answered, and a large request keeps the batch its worker built.
    #[test]
    fn a_groups_small_requests_are_built_into_one_batch_like_the_decoder_builds_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let buffer = Buffer::new();
        let mut writer = writer(dir.path(), &buffer);
        // (body, receive time): instance i-a twice, then i-b; one request
        // carries an invalid span besides its valid one.
        let small = [
            (request(1, "i-a", 1, false), 100),
            (request(2, "i-a", 1, true), 200),
            (request(3, "i-b", 2, false), 300),
        ];
        let kind = otlp::record_kind(Signal::Traces, Encoding::Protobuf);
        let mut group = Vec::new();
        let mut answers = Vec::new();
        for (body, now) in &small {
            let n = otlp::decode_for_ingest(
                Signal::Traces,
                Encoding::Protobuf,
                body,
                *now,
                &writer.instances,
                usize::MAX,
            )
            .expect("decodes");
            assert!(n.batches.is_empty() && n.unbuilt.is_some());
            let framed = wal::encode_record(kind as u8, *now, body).expect("framed");
            let (done, answer) = oneshot::channel();
            group.push(Command::Append {
                framed,
                batches: n.batches,
                unbuilt: n.unbuilt,
                done,
            });
            answers.push(answer);
        }
        writer.process(group);
        for mut answer in answers {
            assert!(matches!(answer.try_recv(), Ok(Ok(()))));
        }
        assert_eq!(buffer.snapshot(Table::Spans).batches.len(), 1);
        assert_eq!(buffer.snapshot(Table::InvocationRecords).batches.len(), 1);

        let oracle = Instances::default();
        let mut expected: Vec<Vec<TableBatch>> = Vec::new();
        for (body, now) in &small {
            let n = otlp::decode_with(
                Signal::Traces,
                Encoding::Protobuf,
                body,
                *now,
                Some(&oracle),
            )
            .expect("decodes");
            expected.push(n.batches);
        }
        for table in [Table::Spans, Table::InvocationRecords] {
            let batches: Vec<RecordBatch> = expected
                .iter()
                .flatten()
                .filter(|b| b.table == table)
                .map(|b| b.batch.clone())
                .collect();
            let want = concat_batches(&table.schema(), &batches).expect("concat");
            assert_eq!(rows_of(&buffer, table), want, "{}", table.name());
        }
        let records = rows_of(&buffer, Table::InvocationRecords);
        let column = |name: &str| records.column(records.schema().index_of(name).expect(name));
        let cold: Vec<Option<bool>> = column(schema::COLD_START).as_boolean().iter().collect();
        let ids: Vec<&str> = column(schema::REQUEST_ID)
            .as_string::<i32>()
            .iter()
            .map(|v| v.expect("id"))
            .collect();
        assert_eq!(ids, ["r-1-0", "r-2-0", "r-3-0", "r-3-1"]);
        // i-a first shown at 100, i-b at 300 (its earliest span only).
        assert_eq!(cold, [Some(true), Some(false), Some(true), Some(false)]);

        // A request above the threshold is built by its worker and kept as
        // its own batch.
        let large = request(4, "i-c", SMALL_REQUEST_SPANS + 1, false);
        let n = otlp::decode_for_ingest(
            Signal::Traces,
            Encoding::Protobuf,
            &large,
            400,
            &writer.instances,
            usize::MAX,
        )
        .expect("decodes");
        assert!(n.unbuilt.is_none());
        assert_eq!(n.rows(), 2 * (SMALL_REQUEST_SPANS + 1), "spans and records");
        let framed = wal::encode_record(kind as u8, 400, &large).expect("framed");
        let (done, mut answer) = oneshot::channel();
        writer.process(vec![Command::Append {
            framed,
            batches: n.batches,
            unbuilt: None,
            done,
        }]);
        assert!(matches!(answer.try_recv(), Ok(Ok(()))));
        assert_eq!(buffer.snapshot(Table::Spans).batches.len(), 2);
        assert_eq!(
            rows_of(&buffer, Table::Spans).num_rows(),
            4 + SMALL_REQUEST_SPANS + 1
        );
    }
}
