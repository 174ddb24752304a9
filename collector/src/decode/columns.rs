//! Small helpers over arrow builders shared by the decoders.

use std::sync::Arc;

use arrow::array::{ArrayRef, MapBuilder, MapFieldNames, StringBuilder};
use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::attrs::value_to_string;

/// Builder for a `Map<Utf8, Utf8>` attribute column.
#[derive(Debug)]
pub struct AttrMapBuilder(MapBuilder<StringBuilder, StringBuilder>);

/// Rows to reserve for a request of `items` items: what it holds, up to a
/// bound, so that a body of millions of tiny (and invalid) items cannot make
/// the decoder reserve gigabytes before validating them; builders grow past
/// it as rows are appended. Every `with_capacity` constructor of the
/// decoders' column sets applies it, so callers pass the item count as is.
pub fn rows_to_reserve(items: usize) -> usize {
    items.min(8192)
}

/// A string column builder sized for `rows` values of about `bytes` each.
/// Arrow's `new()` reserves 1,024 values and 1 KiB per builder: a request
/// of one span would then hold ~100 KiB of empty capacity in the buffer
/// until the next flush.
pub fn text_builder(rows: usize, bytes: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, rows * bytes)
}

impl AttrMapBuilder {
    /// Sized for `rows` maps of a few entries each (at most
    /// [`rows_to_reserve`]).
    pub fn with_capacity(rows: usize) -> Self {
        let rows = rows_to_reserve(rows);
        let names = MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        };
        AttrMapBuilder(MapBuilder::with_capacity(
            Some(names),
            text_builder(rows * 4, 16),
            text_builder(rows * 4, 16),
            rows,
        ))
    }

    /// Appends one row holding `attrs`; a repeated key keeps its last value
    /// only in the sense that both entries are kept, as OTLP sent them.
    pub fn append(&mut self, attrs: &[KeyValue]) {
        for kv in attrs {
            self.0.keys().append_value(&kv.key);
            match kv.value.as_ref().and_then(value_to_string) {
                Some(v) => self.0.values().append_value(v),
                None => self.0.values().append_null(),
            }
        }
        // MapBuilder only fails when keys and values differ in length, which
        // the loop above rules out.
        let appended = self.0.append(true);
        debug_assert!(appended.is_ok());
    }

    /// Appends one row from plain key/value pairs.
    pub fn append_pairs<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (k, v) in pairs {
            self.0.keys().append_value(k);
            self.0.values().append_value(v);
        }
        let appended = self.0.append(true);
        debug_assert!(appended.is_ok());
    }

    pub fn finish(&mut self) -> ArrayRef {
        Arc::new(self.0.finish())
    }
}

/// Nanoseconds since the epoch (as OTLP carries them) to the microseconds
/// the tables store.
pub fn nanos_to_micros(nanos: u64) -> i64 {
    // u64 nanoseconds / 1000 always fits in i64.
    (nanos / 1_000) as i64
}

/// The milliseconds between two stored timestamps (microseconds). Span
/// durations are taken from the stored `time` and `end_time` rather than
/// from the nanoseconds OTLP carries, so `duration_ms` is exactly
/// `end_time - time` and has the timestamps' precision: a double of whole
/// microseconds packs into half the bytes of one with nanosecond fractions
/// (3.7 instead of 7.6 per span, benches/ingest-report.md).
pub fn micros_between_as_ms(start_micros: i64, end_micros: i64) -> f64 {
    // Below 2^53 microseconds (285 years) the conversion is exact and the
    // division correctly rounded: the double nearest to the decimal number
    // of milliseconds, as DuckDB or pyarrow would parse it.
    (end_micros - start_micros) as f64 / 1_000.0
}
