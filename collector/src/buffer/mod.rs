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
    flushing: Vec<RecordBatch>,
    files: Vec<FileMeta>,
}

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
