//! Small helpers over arrow builders shared by the decoders.

use std::sync::Arc;

use arrow::array::{ArrayRef, MapBuilder, MapFieldNames, StringBuilder};
use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::attrs::value_to_string;

/// Builder for a `Map<Utf8, Utf8>` attribute column.
#[derive(Debug)]
pub struct AttrMapBuilder(MapBuilder<StringBuilder, StringBuilder>);

impl Default for AttrMapBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl AttrMapBuilder {
    pub fn new() -> Self {
        let names = MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        };
        AttrMapBuilder(MapBuilder::new(
            Some(names),
            StringBuilder::new(),
            StringBuilder::new(),
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
