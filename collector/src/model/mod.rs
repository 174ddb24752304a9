//! The data model shared by every stage: table schemas, ids and the
//! normalized batches that travel from the decoders to the WAL and buffer.

pub mod ids;
pub mod schema;

use arrow::record_batch::RecordBatch;

pub use schema::Table;

/// Rows for one table, in that table's schema.
#[derive(Debug, Clone)]
pub struct TableBatch {
    pub table: Table,
    pub batch: RecordBatch,
}

/// What a decoder made of one request: the rows to store, and the items it
/// refused (counted per OTLP's partial-success rules) with the first reason.
#[derive(Debug, Default)]
pub struct Normalized {
    pub batches: Vec<TableBatch>,
    pub accepted: u64,
    pub rejected: u64,
    pub reject_reason: Option<String>,
}

impl Normalized {
    pub fn reject(&mut self, reason: impl FnOnce() -> String) {
        self.rejected += 1;
        if self.reject_reason.is_none() {
            self.reject_reason = Some(reason());
        }
    }

    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.batch.num_rows()).sum()
    }
}
