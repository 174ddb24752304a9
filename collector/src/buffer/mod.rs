//! The queryable in-memory buffer: rows that are durable in the WAL but not
//! yet in Parquet, plus the list of committed Parquet files, per table.
//!
//! Both live under one lock so that a query's snapshot never sees a row twice
//! (in a new Parquet file and still in the buffer) or not at all: a flush
//! moves rows from `active` to `flushing`, writes files, and then in one step
//! adds the files and drops `flushing`.

mod flush;

pub use flush::{FlushReport, Flusher};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use parking_lot::RwLock;

use crate::model::{Table, TableBatch};

/// A committed Parquet file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub path: PathBuf,
    pub size: u64,
    /// Start of the hour partition the file belongs to, µs since epoch.
    pub hour_start_micros: i64,
}

#[derive(Debug, Default)]
struct TableState {
    active: Vec<RecordBatch>,
    /// `active[merged..]` are the batches appended since the last merge
    /// (see [`Buffer::merge_small_batches`]).
    merged: usize,
    flushing: Vec<RecordBatch>,
    files: Vec<FileMeta>,
}

/// A run of this many batches appended since the last merge is merged into
/// one when its batches are small (see [`Buffer::merge_small_batches`]).
const MERGE_RUN: usize = 256;

/// Batches of fewer rows than this on average count as small: a function
/// that sends a span per invocation makes one-row batches.
const SMALL_BATCH_ROWS: usize = 64;

/// What a query reads of one table at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub batches: Vec<RecordBatch>,
    pub files: Vec<FileMeta>,
}

#[derive(Debug, Default)]
struct Inner {
    tables: BTreeMap<Table, TableState>,
    rows: usize,
    bytes: usize,
}

/// Shared handle to the buffer.
#[derive(Debug, Clone, Default)]
pub struct Buffer {
    inner: Arc<RwLock<Inner>>,
}

impl Buffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds durable rows. Called only by the WAL writer, after the sync.
    pub fn append(&self, batches: impl IntoIterator<Item = TableBatch>) {
        let mut inner = self.inner.write();
        for tb in batches {
            inner.rows += tb.batch.num_rows();
            inner.bytes += tb.batch.get_array_memory_size();
            inner
                .tables
                .entry(tb.table)
                .or_default()
                .active
                .push(tb.batch);
        }
    }

    /// Merges each table's run of small batches into one batch once the run
    /// is [`MERGE_RUN`] batches long.
    ///
    /// One-span requests (the Lambda case) append one-row batches: tens of
    /// thousands per flush, each with a few dozen buffers of its own, which
    /// every query snapshot clones and the flush concatenates, counts and
    /// frees. Merging them as they come keeps the buffer at a few batches.
    ///
    /// Called only by the WAL writer, after it has answered its group, and by
    /// replay before the writer starts: the one thread that changes `active`
    /// (appends and `begin_flush` both go through it), so the run read under
    /// the read lock is still there when it is replaced under the write
    /// lock. Queries see the run or the merged batch, the same rows either
    /// way.
    pub fn merge_small_batches(&self) {
        let runs: Vec<(Table, usize, Vec<RecordBatch>)> = {
            let inner = self.inner.read();
            inner
                .tables
                .iter()
                .filter(|(_, state)| state.active.len() - state.merged >= MERGE_RUN)
                .map(|(table, state)| (*table, state.merged, state.active[state.merged..].to_vec()))
                .collect()
        };
        for (table, start, run) in runs {
            let rows: usize = run.iter().map(RecordBatch::num_rows).sum();
            let merged = if rows < SMALL_BATCH_ROWS * run.len() {
                match concat_batches(&table.schema(), &run) {
                    Ok(batch) => Some(batch),
                    Err(e) => {
                        tracing::warn!(table = table.name(), error = %e, "could not merge buffered batches");
                        None
                    }
                }
            } else {
                None
            };
            let end = start + run.len();
            let mut inner = self.inner.write();
            let Some(state) = inner.tables.get_mut(&table) else {
                continue;
            };
            if state.merged != start || state.active.len() < end {
                continue;
            }
            let Some(batch) = merged else {
                // Large batches are left as they are.
                state.merged = end;
                continue;
            };
            let (old, new) = (
                run.iter()
                    .map(RecordBatch::get_array_memory_size)
                    .sum::<usize>(),
                batch.get_array_memory_size(),
            );
            state.active.splice(start..end, [batch]);
            state.merged = start + 1;
            inner.bytes = (inner.bytes + new).saturating_sub(old);
            drop(inner);
            drop(run);
        }
    }

    /// Rows and bytes held in memory (active and flushing).
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.read();
        (inner.rows, inner.bytes)
    }

    pub fn active_rows(&self) -> usize {
        let inner = self.inner.read();
        inner
            .tables
            .values()
            .flat_map(|t| &t.active)
            .map(|b| b.num_rows())
            .sum()
    }

    /// Moves every active row to `flushing` and returns the flushing rows
    /// per table (including rows of an earlier flush that failed).
    pub fn begin_flush(&self) -> Vec<(Table, Vec<RecordBatch>)> {
        let mut inner = self.inner.write();
        inner
            .tables
            .iter_mut()
            .filter_map(|(table, state)| {
                let active = std::mem::take(&mut state.active);
                state.merged = 0;
                state.flushing.extend(active);
                (!state.flushing.is_empty()).then(|| (*table, state.flushing.clone()))
            })
            .collect()
    }

    /// Publishes the files of a finished flush and forgets its rows.
    ///
    /// The files replace the rows in one step under the lock; counting and
    /// freeing the rows (tens of thousands of small batches when functions
    /// send a span per request) happens outside it, so appends, and the
    /// requests waiting on them, do not stall behind a flush. Until then the
    /// usage is overstated, which only makes back-pressure earlier.
    pub fn commit_flush(&self, files: Vec<(Table, FileMeta)>) {
        let flushed: Vec<Vec<RecordBatch>> = {
            let mut inner = self.inner.write();
            for (table, file) in files {
                inner.tables.entry(table).or_default().files.push(file);
            }
            inner
                .tables
                .values_mut()
                .map(|state| std::mem::take(&mut state.flushing))
                .collect()
        };
        let (freed_rows, freed_bytes) =
            flushed.iter().flatten().fold((0, 0), |(rows, bytes), b| {
                (rows + b.num_rows(), bytes + b.get_array_memory_size())
            });
        drop(flushed);
        let mut inner = self.inner.write();
        inner.rows -= freed_rows;
        inner.bytes -= freed_bytes;
    }

    /// Registers files found on disk at start-up.
    pub fn add_files(&self, table: Table, files: Vec<FileMeta>) {
        self.inner
            .write()
            .tables
            .entry(table)
            .or_default()
            .files
            .extend(files);
    }

    pub fn snapshot(&self, table: Table) -> Snapshot {
        let inner = self.inner.read();
        let Some(state) = inner.tables.get(&table) else {
            return Snapshot::default();
        };
        Snapshot {
            batches: state
                .flushing
                .iter()
                .chain(&state.active)
                .cloned()
                .collect(),
            files: state.files.clone(),
        }
    }
}
