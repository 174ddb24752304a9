//! The durable hand-off: a request's body goes into the WAL, the WAL is
//! synced, its rows go into the buffer, and only then is it acknowledged.
//!
//! One OS thread owns the open segment. Requests queue their framed records
//! on a channel; the thread takes everything queued, writes it, syncs once
//! (group commit), appends the rows to the buffer and answers every waiting
//! request. Rotation for a flush goes through the same queue, so a sealed
//! segment holds exactly the rows the flush takes from the buffer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use tokio::sync::{Notify, oneshot};

use crate::buffer::Buffer;
use crate::instances::Instances;
use crate::model::{Table, TableBatch};
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
        framed: Vec<u8>,
        batches: Vec<TableBatch>,
        done: oneshot::Sender<Result<(), IngestError>>,
    },
    Rotate {
        done: oneshot::Sender<Result<Rotation, IngestError>>,
    },
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
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Append { framed, .. } => write!(f, "Append({} bytes)", framed.len()),
            Command::Rotate { .. } => f.write_str("Rotate"),
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
    pub initial_wal_bytes: u64,
    /// The instances seen, shared with replay and saved by each flush.
    pub instances: Arc<Instances>,
}

impl Ingest {
    /// Opens segment `first_segment` and starts the writer thread.
    pub fn start(args: IngestArgs) -> Result<Self, IngestError> {
        let segment = SegmentWriter::create(
            args.wal.segment_path(args.first_segment),
            args.first_segment,
        )?;
        let (tx, rx) = mpsc::channel();
        let wal_bytes = Arc::new(AtomicU64::new(args.initial_wal_bytes + segment.len()));
        let flush_wake = Arc::new(Notify::new());
        let writer = Writer {
            limits: args.limits,
            flush_wake: Arc::clone(&flush_wake),
            wal: args.wal,
            segment,
            buffer: args.buffer.clone(),
            metrics: Arc::clone(&args.metrics),
            wal_bytes: Arc::clone(&wal_bytes),
        };
        std::thread::Builder::new()
            .name("faasight-wal".into())
            .spawn(move || writer.run(rx))
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
        })
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

    /// Makes `body` durable and its rows visible; returns once synced.
    pub async fn submit(
        &self,
        kind: RecordKind,
        received_at_micros: i64,
        body: &[u8],
        batches: Vec<TableBatch>,
    ) -> Result<(), IngestError> {
        let mut framed = Vec::new();
        wal::encode_record(kind as u8, received_at_micros, body, &mut framed)?;
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Append {
                framed,
                batches,
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

    /// Called by the flush once segments are deleted.
    pub fn set_wal_bytes(&self, bytes: u64) {
        self.wal_bytes.store(bytes, Ordering::Relaxed);
        self.metrics.wal_size_bytes.set(bytes);
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

/// A written record waiting for the group's sync: its rows and its reply.
type Pending = (Vec<TableBatch>, oneshot::Sender<Result<(), IngestError>>);

struct Writer {
    limits: Limits,
    flush_wake: Arc<Notify>,
    wal: WalDir,
    segment: SegmentWriter,
    buffer: Buffer,
    metrics: Arc<CollectorMetrics>,
    wal_bytes: Arc<AtomicU64>,
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
        let mut pending: Vec<Pending> = Vec::new();
        for cmd in group {
            match cmd {
                Command::Append {
                    framed,
                    batches,
                    done,
                } => match self.segment.write(&framed) {
                    Ok(()) => {
                        self.metrics.wal_bytes_written.add(framed.len() as u64);
                        self.wal_bytes
                            .fetch_add(framed.len() as u64, Ordering::Relaxed);
                        pending.push((batches, done));
                    }
                    Err(e) => {
                        let _ = done.send(Err(e.into()));
                    }
                },
                Command::Rotate { done } => {
                    // Everything queued before the rotation belongs to the
                    // sealed segment: commit it first.
                    self.commit(std::mem::take(&mut pending));
                    let _ = done.send(self.rotate());
                }
            }
        }
        self.commit(pending);
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
                for (batches, done) in pending {
                    self.buffer.append(batches);
                    let _ = done.send(Ok(()));
                }
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
                tracing::error!(error = %e, "wal sync failed; refusing the group and starting a new segment");
                for (_, done) in pending {
                    let _ = done.send(Err(IngestError::Overloaded("write-ahead log sync failed")));
                }
                // The failed segment may hold records that were never
                // acknowledged; they are harmless duplicates only if replayed,
                // so continue in a fresh segment and let the flush drop it.
                if let Err(e) = self.open_next() {
                    tracing::error!(error = %e, "could not open a new wal segment");
                }
            }
        }
    }

    fn open_next(&mut self) -> Result<u64, IngestError> {
        let sealed = self.segment.id();
        let next = sealed + 1;
        self.segment = SegmentWriter::create(self.wal.segment_path(next), next)?;
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
