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

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, KeyValueList, any_value::Value,
    };

    use super::*;
    use crate::decode::attrs::value_to_string;

    fn kv(key: &str, value: Option<Value>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value }),
            ..Default::default()
        }
    }

    /// Every kind of value lands in the map as `value_to_string` renders
    /// it, and an empty value as null.
    #[test]
    fn attribute_maps_hold_each_value_as_its_text() {
        let attrs = vec![
            kv("s", Some(Value::StringValue("GET /orders/{id}".into()))),
            kv("empty", Some(Value::StringValue(String::new()))),
            kv("t", Some(Value::BoolValue(true))),
            kv("f", Some(Value::BoolValue(false))),
            kv("i", Some(Value::IntValue(-536_870_912))),
            kv("max", Some(Value::IntValue(i64::MAX))),
            kv("d", Some(Value::DoubleValue(0.1))),
            kv("big", Some(Value::DoubleValue(1e21))),
            kv("nan", Some(Value::DoubleValue(f64::NAN))),
            kv("bytes", Some(Value::BytesValue(vec![0xde, 0xad]))),
            kv(
                "array",
                Some(Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::IntValue(1)),
                    }],
                })),
            ),
            kv(
                "kvlist",
                Some(Value::KvlistValue(KeyValueList {
                    values: vec![kv("a", Some(Value::BoolValue(true)))],
                })),
            ),
            kv("none", None),
            kv("strindex", Some(Value::StringValueStrindex(3))),
        ];
        let mut builder = AttrMapBuilder::with_capacity(2);
        builder.append(&attrs);
        builder.append(&attrs[4..7]);
        let maps = builder.finish();
        let maps = maps.as_map();
        assert_eq!(maps.len(), 2);
        let (keys, values) = (
            maps.keys().as_string::<i32>(),
            maps.values().as_string::<i32>(),
        );
        let mut row = 0;
        for kv in attrs.iter().chain(&attrs[4..7]) {
            assert_eq!(keys.value(row), kv.key);
            let expected = kv.value.as_ref().and_then(value_to_string);
            let got = values.is_valid(row).then(|| values.value(row).to_string());
            assert_eq!(got.as_deref(), expected.as_deref(), "{}", kv.key);
            row += 1;
        }
        assert_eq!(values.value(4), "-536870912");
        assert_eq!(values.value(6), "0.1");
        assert_eq!(row, values.len());
        assert_eq!(maps.value_offsets(), &[0, 14, 17]);
    }
}
