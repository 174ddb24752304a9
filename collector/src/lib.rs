//! faasight-collector: the ingest half of faasight.
//!
//! ```text
//! receive (HTTP/gRPC) → decode (OTLP → rows) → ingest (WAL, group commit)
//!   → buffer (queryable in memory) → buffer::flush → storage (Parquet, Hive layout)
//! ```
//!
//! [`Collector::open`] recovers the data directory (see [`wal`] for the
//! invariants) and returns the handles the server wires together.

pub mod buffer;
pub mod cloudwatch;
pub mod connections;
pub mod decode;
pub mod ingest;
pub mod instances;
pub mod model;
pub mod receive;
pub mod storage;
pub mod telemetry;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use buffer::{Buffer, Flusher};
use ingest::{Ingest, IngestArgs, IngestError, Limits};
use instances::Instances;
use model::Table;
use storage::parquet::ScanMode;
use telemetry::CollectorMetrics;
use wal::{RecordKind, ReplayOutcome, WalDir};

/// Errors while opening the collector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Wal(#[from] wal::Error),
    #[error(transparent)]
    Storage(#[from] storage::parquet::Error),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("data directory {0} is in use by another faasight process")]
    Locked(PathBuf),
}

/// Settings of [`Collector::open`].
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub data_dir: PathBuf,
    pub limits: Limits,
}

impl CollectorConfig {
    pub fn for_tests(data_dir: &Path) -> Self {
        CollectorConfig {
            data_dir: data_dir.to_path_buf(),
            limits: Limits {
                max_buffer_bytes: 256 << 20,
                max_wal_bytes: 1 << 30,
            },
        }
    }
}

/// What start-up recovery found.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub files: usize,
    pub segments_replayed: usize,
    pub records_replayed: usize,
    pub rows_replayed: usize,
    pub torn_tails: usize,
    pub quarantined: Vec<PathBuf>,
    /// CloudWatch checkpoints found in replayed WAL records, per log group.
    pub cloudwatch_checkpoints: std::collections::BTreeMap<String, cloudwatch::Checkpoint>,
}

/// The opened collector: handles for the receivers, the flush and queries.
#[derive(Debug, Clone)]
pub struct Collector {
    pub ingest: Ingest,
    pub buffer: Buffer,
    pub flusher: Flusher,
    pub metrics: Arc<CollectorMetrics>,
    pub data_dir: PathBuf,
    /// Held while any clone lives: the data directory's single-writer lock.
    _lock: Arc<std::fs::File>,
}

impl Collector {
    /// Recovers `data_dir` and starts the WAL writer.
    pub fn open(mut config: CollectorConfig) -> Result<(Self, RecoveryReport), Error> {
        let wal = WalDir::open(config.data_dir.join("wal"))?;
        // Query scans address files by absolute path.
        config.data_dir = absolute(&config.data_dir)?;
        // One writer per data directory: a second WAL writer would reuse
        // segment ids. The lock lives as long as the process.
        let lock_path = config.data_dir.join("LOCK");
        let lock = std::fs::File::create(&lock_path).map_err(|source| wal::Error::Io {
            path: lock_path.clone(),
            source,
        })?;
        if lock.try_lock().is_err() {
            return Err(Error::Locked(config.data_dir.clone()));
        }
        let lock = Arc::new(lock);
        let checkpoint = wal.checkpoint()?;
        let buffer = Buffer::new();
        let mut report = RecoveryReport::default();
        for table in Table::ALL {
            let files = storage::parquet::scan_table(
                &config.data_dir,
                table,
                checkpoint,
                ScanMode::Recover,
            )?;
            report.files += files.len();
            buffer.add_files(table, files);
        }
        let instances = Arc::new(Instances::load(&config.data_dir, true));
        let first_segment = wal.last_id()? + 1;
        let mut replayed = Vec::new();
        for id in wal.segments()? {
            if id <= checkpoint {
                wal.retire_segment(id)?;
            } else {
                let mode = ScanMode::Recover;
                let bytes = replay_segment(&wal, id, &buffer, &instances, &mut report, mode)?;
                replayed.push((id, bytes));
            }
        }
        let metrics = Arc::new(CollectorMetrics::default());
        let ingest = Ingest::start(IngestArgs {
            wal: wal.clone(),
            first_segment,
            buffer: buffer.clone(),
            metrics: Arc::clone(&metrics),
            limits: config.limits,
            replayed,
            instances,
        })?;
        let flusher = Flusher::new(
            ingest.clone(),
            wal,
            config.data_dir.clone(),
            Arc::clone(&metrics),
        );
        let (rows, bytes) = buffer.usage();
        metrics.buffer_rows.set(rows as u64);
        metrics.buffer_bytes.set(bytes as u64);
        Ok((
            Collector {
                ingest,
                buffer,
                flusher,
                metrics,
                data_dir: config.data_dir,
                _lock: lock,
            },
            report,
        ))
    }
}

/// Reads a data directory without changing it, as `faasight query` does
/// beside a running server: committed files plus the rows still in the WAL.
pub fn open_read_only(data_dir: &Path) -> Result<(Buffer, RecoveryReport), Error> {
    let data_dir = &absolute(data_dir)?;
    let buffer = Buffer::new();
    let mut report = RecoveryReport::default();
    let wal_path = data_dir.join("wal");
    let wal = WalDir::open(&wal_path)?;
    let checkpoint = wal.checkpoint()?;
    for table in Table::ALL {
        let files = storage::parquet::scan_table(data_dir, table, checkpoint, ScanMode::ReadOnly)?;
        report.files += files.len();
        buffer.add_files(table, files);
    }
    let instances = Instances::load(data_dir, false);
    for id in wal.segments()? {
        if id > checkpoint {
            replay_segment(
                &wal,
                id,
                &buffer,
                &instances,
                &mut report,
                ScanMode::ReadOnly,
            )?;
        }
    }
    Ok((buffer, report))
}

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::fs::canonicalize(path).map_err(|source| {
        Error::Wal(wal::Error::Io {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// Replays segment `id` into `buffer`; returns the bytes of its valid
/// records.
fn replay_segment(
    wal: &WalDir,
    id: u64,
    buffer: &Buffer,
    instances: &Instances,
    report: &mut RecoveryReport,
    mode: ScanMode,
) -> Result<u64, Error> {
    let replay = wal::read_segment(&wal.segment_path(id), id)?;
    let valid_len = replay.valid_len;
    match &replay.outcome {
        ReplayOutcome::Clean => {}
        ReplayOutcome::TornTail { offset } => {
            report.torn_tails += 1;
            tracing::warn!(
                segment = id,
                offset,
                "wal segment ends in a torn record; dropping it (never acknowledged)"
            );
        }
        ReplayOutcome::Corrupt { offset, reason } if mode == ScanMode::ReadOnly => {
            tracing::warn!(
                segment = id,
                offset,
                reason,
                "wal segment is corrupt; reading its valid prefix"
            );
        }
        ReplayOutcome::Corrupt { offset, reason } => {
            let copy = wal.quarantine(id)?;
            tracing::error!(segment = id, offset, reason, quarantine = %copy.display(), "wal segment is corrupt; recovered its valid prefix and quarantined a copy");
            report.quarantined.push(copy);
        }
    }
    report.segments_replayed += 1;
    for record in replay.records {
        let Some(kind) = RecordKind::from_u8(record.kind) else {
            tracing::error!(
                segment = id,
                kind = record.kind,
                "unknown wal record kind; skipped"
            );
            continue;
        };
        if kind == RecordKind::CloudWatchJson
            && let Ok(batch) = serde_json::from_slice::<cloudwatch::PolledBatch>(&record.body)
        {
            let cp = report
                .cloudwatch_checkpoints
                .remove(&batch.group)
                .unwrap_or_default()
                .max(batch.checkpoint);
            report.cloudwatch_checkpoints.insert(batch.group, cp);
        }
        match decode::decode_record(kind, &record.body, record.received_at_micros, instances) {
            Ok(n) => {
                report.records_replayed += 1;
                report.rows_replayed += n.rows();
                buffer.append(n.batches);
                buffer.merge_small_batches();
            }
            Err(e) => {
                tracing::error!(segment = id, error = %e, "wal record no longer decodes; skipped")
            }
        }
    }
    Ok(valid_len)
}

#[cfg(test)]
mod tests;
