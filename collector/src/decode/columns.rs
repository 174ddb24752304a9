//! Small helpers over arrow builders shared by the decoders.

use std::sync::Arc;

use arrow::array::{ArrayRef, MapBuilder, MapFieldNames, StringArray, StringBuilder};
use arrow::error::ArrowError;
use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::attrs::value_to_string;

/// Builder for a `Map<Utf8, Utf8>` attribute column.
#[derive(Debug)]
pub struct AttrMapBuilder {
    maps: MapBuilder<StringBuilder, StringBuilder>,
    /// The first row that could not be appended (its text would pass the
    /// column's 2 GiB offsets), reported by [`Self::finish`].
    failed: Option<ArrowError>,
}

/// An attribute list as many rows repeat it: every span, log record or data
/// point of a resource holds the resource's attributes. When more than one
/// row does, the list is rendered to text once (an integer or an array
/// value costs a formatting each time), and each row copies two byte ranges
/// ([`AttrMapBuilder::append_repeated`]) instead of appending every key and
/// value on its own.
#[derive(Debug)]
pub struct RepeatedAttrs<'a> {
    attrs: &'a [KeyValue],
    /// Keys and values, rendered as [`AttrMapBuilder::append`] renders them.
    rendered: Option<(StringArray, StringArray)>,
}

impl<'a> RepeatedAttrs<'a> {
    /// `attrs` for `rows` rows.
    pub fn new(attrs: &'a [KeyValue], rows: usize) -> Self {
        let rendered = (rows > 1 && !attrs.is_empty()).then(|| {
            let key_bytes = attrs.iter().map(|kv| kv.key.len()).sum();
            let mut keys = StringBuilder::with_capacity(attrs.len(), key_bytes);
            let mut values = StringBuilder::with_capacity(attrs.len(), 16 * attrs.len());
            append_entries(&mut keys, &mut values, attrs);
            (keys.finish(), values.finish())
        });
        RepeatedAttrs { attrs, rendered }
    }

    pub fn attrs(&self) -> &'a [KeyValue] {
        self.attrs
    }
}

/// Appends `attrs`' keys and their values as text (an empty value as null):
/// one row's map entries.
fn append_entries(keys: &mut StringBuilder, values: &mut StringBuilder, attrs: &[KeyValue]) {
    for kv in attrs {
        keys.append_value(&kv.key);
        values.append_option(kv.value.as_ref().and_then(value_to_string));
    }
}

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
        AttrMapBuilder {
            maps: MapBuilder::with_capacity(
                Some(names),
                text_builder(rows * 4, 16),
                text_builder(rows * 4, 16),
                rows,
            ),
            failed: None,
        }
    }

    /// Appends one row holding `attrs`; a repeated key keeps its last value
    /// only in the sense that both entries are kept, as OTLP sent them.
    pub fn append(&mut self, attrs: &[KeyValue]) {
        if self.failed.is_some() {
            return;
        }
        let (keys, values) = self.maps.entries();
        append_entries(keys, values, attrs);
        // MapBuilder only fails when keys and values differ in length, which
        // the loop above rules out.
        let appended = self.maps.append(true);
        debug_assert!(appended.is_ok());
    }

    /// Appends one row holding `repeated`'s attributes, as [`Self::append`]
    /// of them would.
    pub fn append_repeated(&mut self, repeated: &RepeatedAttrs<'_>) {
        let Some((keys, values)) = &repeated.rendered else {
            return self.append(repeated.attrs);
        };
        if self.failed.is_some() {
            return;
        }
        let appended = self
            .maps
            .keys()
            .append_array(keys)
            .and_then(|()| self.maps.values().append_array(values))
            .and_then(|()| self.maps.append(true));
        if let Err(e) = appended {
            self.failed = Some(e);
        }
    }

    /// Appends one row from plain key/value pairs.
    pub fn append_pairs<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        if self.failed.is_some() {
            return;
        }
        for (k, v) in pairs {
            self.maps.keys().append_value(k);
            self.maps.values().append_value(v);
        }
        let appended = self.maps.append(true);
        debug_assert!(appended.is_ok());
    }

    /// The column, or the error of the first row that could not be
    /// appended.
    pub fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(Arc::new(self.maps.finish())),
        }
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

    /// One attribute of every kind of value OTLP has.
    fn every_kind_of_value() -> Vec<KeyValue> {
        vec![
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
        ]
    }

    /// Every kind of value lands in the map as `value_to_string` renders
    /// it, and an empty value as null.
    #[test]
    fn attribute_maps_hold_each_value_as_its_text() {
        let attrs = every_kind_of_value();
        let mut builder = AttrMapBuilder::with_capacity(2);
        builder.append(&attrs);
        builder.append(&attrs[4..7]);
        let maps = builder.finish().expect("maps");
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

    /// A resource's attributes repeated over many rows land in each row
    /// exactly as `append` of them would put them: rendered once (more than
    /// one row) or appended as they are (one row), between rows appended on
    /// their own, and an empty list as an empty map.
    #[test]
    fn repeated_attributes_give_the_rows_append_gives() {
        let attrs = every_kind_of_value();
        let own = vec![kv("own", Some(Value::IntValue(7)))];
        for list in [&attrs[..], &attrs[4..7], &[]] {
            for rows in [1, 2, 5] {
                let repeated = RepeatedAttrs::new(list, rows);
                assert_eq!(
                    repeated.rendered.is_some(),
                    rows > 1 && !list.is_empty(),
                    "rendered once only when rows repeat a non-empty list"
                );
                let mut copied = AttrMapBuilder::with_capacity(1);
                let mut appended = AttrMapBuilder::with_capacity(1);
                for _ in 0..rows {
                    copied.append_repeated(&repeated);
                    copied.append(&own);
                    appended.append(list);
                    appended.append(&own);
                }
                let (copied, appended) = (
                    copied.finish().expect("copied"),
                    appended.finish().expect("appended"),
                );
                assert_eq!(copied.len(), 2 * rows);
                assert_eq!(
                    copied.as_map(),
                    appended.as_map(),
                    "{} attributes, {rows} rows",
                    list.len()
                );
            }
        }
    }
}
