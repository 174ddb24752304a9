//! Flushing the buffer to Parquet, following the WAL's invariant 2: rotate,
//! write files, checkpoint, publish, delete sealed segments.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify};

use arrow::record_batch::RecordBatch;

use crate::buffer::FileMeta;
use crate::ingest::{Ingest, IngestError};
use crate::model::Table;
use crate::storage::each_on_its_thread;
use crate::storage::parquet as pq;
use crate::telemetry::CollectorMetrics;
use crate::wal::WalDir;

/// Errors of a flush; the rows stay in the buffer and the WAL and are
/// retried by the next flush (all but `CheckpointUnsynced` from the WAL:
/// its files are published, and the next flush's checkpoint settles it).
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Storage(#[from] pq::Error),
    #[error(transparent)]
    Wal(#[from] crate::wal::Error),
    #[error("flush task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("could not save the instance map {path}: {source}")]
    Instances {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one flush did.
#[derive(Debug, Clone, Default)]
pub struct FlushReport {
    pub rows: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Runs flushes, one at a time.
#[derive(Debug, Clone)]
pub struct Flusher {
    ingest: Ingest,
    wal: WalDir,
    data_dir: PathBuf,
    metrics: Arc<CollectorMetrics>,
    lock: Arc<Mutex<()>>,
    wake: Arc<Notify>,
}

impl Flusher {
    pub fn new(
        ingest: Ingest,
        wal: WalDir,
        data_dir: PathBuf,
        metrics: Arc<CollectorMetrics>,
    ) -> Self {
        Flusher {
            wake: ingest.flush_wake(),
            ingest,
            wal,
            data_dir,
            metrics,
            lock: Arc::new(Mutex::new(())),
        }
    }

    #[cfg(test)]
    pub(crate) fn wal(&self) -> &WalDir {
        &self.wal
    }

    /// Holds flushes off while the guard lives (the CloudWatch poller saves
    /// its checkpoint file under it).
    pub async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Flushes everything buffered so far.
    pub async fn flush(&self) -> Result<FlushReport, FlushError> {
        self.flush_with(Vec::new()).await
    }

    /// Writes `extra` batches (bulk data that never went through the WAL,
    /// e.g. `faasight generate`) in the same committed flush as the buffer:
    /// they become visible, and durable, together with its checkpoint.
    pub async fn import(
        &self,
        extra: Vec<(Table, Vec<RecordBatch>)>,
    ) -> Result<FlushReport, FlushError> {
        self.flush_with(extra).await
    }

    async fn flush_with(
        &self,
        extra: Vec<(Table, Vec<RecordBatch>)>,
    ) -> Result<FlushReport, FlushError> {
        let _guard = self.lock.lock().await;
        let flushed = self.flush_locked(extra).await;
        if flushed.is_err() {
            self.metrics.flush_failures.add(1);
        }
        flushed
    }

    async fn flush_locked(
        &self,
        extra: Vec<(Table, Vec<RecordBatch>)>,
    ) -> Result<FlushReport, FlushError> {
        let old_segments = self.wal.segments()?.len();
        if extra.is_empty() && self.ingest.buffer().usage().0 == 0 && old_segments <= 1 {
            return Ok(FlushReport::default());
        }
        let started = Instant::now();
        let mut rotation = self.ingest.rotate().await?;
        // One entry per table: a flush writes one file per table and hour.
        for (table, batches) in extra {
            match rotation.tables.iter_mut().find(|(t, _)| *t == table) {
                Some((_, existing)) => existing.extend(batches),
                None => rotation.tables.push((table, batches)),
            }
        }
        let sealed = rotation.sealed_segment;
        let data_dir = self.data_dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            // The tables at once: a small table's file (one row group, one
            // thread) is then written beside the spans' instead of leaving
            // the other cores to ingest alone, which waits for the flush
            // when the buffer is full.
            let data_dir = &data_dir;
            let results = each_on_its_thread(rotation.tables.iter().map(|(table, batches)| {
                move || {
                    pq::write_table(data_dir, *table, sealed, batches).map(|metas| (*table, metas))
                }
            }));
            let mut files = Vec::new();
            let mut failed = None;
            for result in results {
                match result {
                    Ok((table, metas)) => files.extend(metas.into_iter().map(|m| (table, m))),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if let Some(e) = failed {
                remove_written(files);
                return Err(e);
            }
            let rows = rotation
                .tables
                .iter()
                .flat_map(|(_, b)| b)
                .map(|b| b.num_rows())
                .sum::<usize>();
            Ok((files, rows))
        })
        .await?;
        let (files, rows) = written?;
        // Before the checkpoint, so the saved map covers every request the
        // checkpoint retires (see `crate::instances`). Without it the
        // checkpoint must wait: a restart would take the first invocation
        // seen again of an instance that only the retired segments showed
        // for a cold start.
        let now = chrono::Utc::now().timestamp_micros();
        let instances = Arc::clone(self.ingest.instances());
        let saved = match off_runtime(move || instances.save(now)).await {
            Ok(saved) => saved,
            Err(e) => {
                remove_written(files);
                return Err(e);
            }
        };
        if let Err(source) = saved {
            remove_written(files);
            return Err(FlushError::Instances {
                path: self.data_dir.join(crate::instances::FILE),
                source,
            });
        }
        let wal = self.wal.clone();
        let checkpoint = match off_runtime(move || wal.write_checkpoint(sealed)).await {
            Ok(checkpoint) => checkpoint,
            Err(e) => {
                remove_written(files);
                return Err(e);
            }
        };
        let unsynced = match checkpoint {
            Ok(()) => None,
            // In place but perhaps not durable: after a crash the start-up
            // finds this checkpoint (and needs the files) or the one before
            // (and deletes the files, replaying the segments). Keep both,
            // publish the files so that the rows are not flushed twice, and
            // leave the segments to the next flush, whose checkpoint settles it.
            Err(e @ crate::wal::Error::CheckpointUnsynced { .. }) => Some(e),
            Err(e) => {
                remove_written(files);
                return Err(e.into());
            }
        };
        let report = FlushReport {
            rows,
            files: files.len(),
            bytes: files.iter().map(|(_, m)| m.size).sum(),
        };
        self.ingest.buffer().commit_flush(files);
        if let Some(e) = unsynced {
            return Err(e.into());
        }
        // Committed: what follows only tidies up, and a flushed segment
        // left behind is deleted by the next flush or the next start.
        let tidy = self.clone();
        let removed = off_runtime(move || tidy.retire_flushed_segments(sealed)).await;
        if let Err(e) = removed.and_then(|r| r.map_err(FlushError::from)) {
            tracing::warn!(
                error = %e,
                "flushed, but a flushed wal segment could not be retired yet; the next flush or start retires it"
            );
        }
        let (brows, bbytes) = self.ingest.buffer().usage();
        self.metrics.buffer_rows.set(brows as u64);
        self.metrics.buffer_bytes.set(bbytes as u64);
        self.metrics.flushed_rows.add(rows as u64);
        self.metrics.flush.observe(started.elapsed());
        tracing::debug!(
            rows,
            files = report.files,
            bytes = report.bytes,
            segment = sealed,
            "flushed"
        );
        Ok(report)
    }

    /// Retires the segments up to `sealed`, which a committed checkpoint
    /// covers (kept as spares or deleted, see [`crate::wal`]), and has them
    /// no longer counted in the WAL's size (it gates ingest).
    fn retire_flushed_segments(&self, sealed: u64) -> Result<(), crate::wal::Error> {
        let retired = self.retire_segments_up_to(sealed);
        self.ingest.retired(sealed);
        retired
    }

    fn retire_segments_up_to(&self, sealed: u64) -> Result<(), crate::wal::Error> {
        for id in self.wal.segments()? {
            if id <= sealed {
                self.wal.retire_segment(id)?;
            }
        }
        Ok(())
    }

    /// Flushes every `interval`, or sooner when woken, until `stop` resolves.
    pub async fn run(self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
            }
            if let Err(e) = self.flush().await {
                tracing::error!(error = %e, "flush failed; rows stay buffered and will be retried");
            }
        }
    }
}

/// Runs `work` on the blocking pool and waits for it. The file system
/// calls of a flush's commit can block for tens of milliseconds (fsyncs;
/// deleting the ~100 MiB of segments a flush retires took ~30 ms at
/// saturation, before they were kept as spares), and inline they would hold one of the runtime's workers,
/// which serve requests. A panic in `work` is raised here, as it would be
/// inline.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FlushError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => Ok(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the files a flush wrote before it failed (the rows stay buffered
/// and in the WAL, and the next flush writes them again).
fn remove_written(files: Vec<(Table, FileMeta)>) {
    let metas: Vec<FileMeta> = files.into_iter().map(|(_, m)| m).collect();
    pq::remove_files(&metas);
}
