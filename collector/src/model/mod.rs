//! The data model shared by every stage: table schemas, ids and the
//! normalized batches that travel from the decoders to the WAL and buffer.

pub mod ids;
pub mod schema;

use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

pub use schema::Table;

/// Rows for one table, in that table's schema.
#[derive(Debug, Clone)]
pub struct TableBatch {
    pub table: Table,
    pub batch: RecordBatch,
}

/// A small traces request, checked but not yet built into rows: the WAL
/// writer builds the rows of all such requests of one group commit into one
/// batch after the sync (`decode::otlp::spans::SpanRows`). A batch of ~20
/// columns per one-span request, then merged with its neighbours, was most
/// of what a one-span request cost the server beyond HTTP
/// (benches/ingest-report.md).
#[derive(Debug)]
pub struct UnbuiltSpans {
    pub request: ExportTraceServiceRequest,
    /// When the request was received: cold starts by instance depend on it
    /// (`crate::instances`).
    pub received_at_micros: i64,
    /// The bytes its rows repeat (`decode::otlp::spans::expansion`):
    /// bounds what it adds to a group commit's batch.
    pub expansion: usize,
}

/// What a decoder made of one request: the rows to store (built, or for a
/// small traces request still to be built), and the items it refused
/// (counted per OTLP's partial-success rules) with the first reason.
#[derive(Debug, Default)]
pub struct Normalized {
    pub batches: Vec<TableBatch>,
    pub unbuilt: Option<UnbuiltSpans>,
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
