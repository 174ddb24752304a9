//! Arrow schemas of the tables faasight writes, with every column name as a
//! `pub const` so that the decoders, the writer, the views and the tests cannot
//! drift apart.
//!
//! Schema version 1. Timestamps are `Timestamp(Microsecond, "UTC")` (readable
//! by DuckDB, Spark and Athena, unlike nanoseconds); ids are lowercase hex
//! text; attribute maps are `Map<Utf8, Utf8>` with non-string values rendered
//! as JSON text, so `attributes['http.route']` works in SQL.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Version of the on-disk schemas, stored in every Parquet file's metadata.
pub const SCHEMA_VERSION: &str = "1";

pub const TIME: &str = "time";
pub const END_TIME: &str = "end_time";
pub const OBSERVED_TIME: &str = "observed_time";
pub const DURATION_MS: &str = "duration_ms";
pub const TRACE_ID: &str = "trace_id";
pub const SPAN_ID: &str = "span_id";
pub const PARENT_SPAN_ID: &str = "parent_span_id";
pub const NAME: &str = "name";
pub const KIND: &str = "kind";
pub const STATUS_CODE: &str = "status_code";
pub const STATUS_MESSAGE: &str = "status_message";
pub const SERVICE_NAME: &str = "service_name";
pub const FUNCTION_NAME: &str = "function_name";
pub const REQUEST_ID: &str = "request_id";
pub const COLD_START: &str = "cold_start";
pub const ATTRIBUTES: &str = "attributes";
pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
pub const EVENTS: &str = "events";
pub const LINKS: &str = "links";
pub const SCOPE_NAME: &str = "scope_name";
pub const SEVERITY_TEXT: &str = "severity_text";
pub const SEVERITY_NUMBER: &str = "severity_number";
pub const BODY: &str = "body";
pub const START_TIME: &str = "start_time";
pub const VALUE: &str = "value";
pub const COUNT: &str = "count";
pub const SUM: &str = "sum";
pub const MIN: &str = "min";
pub const MAX: &str = "max";
pub const BOUNDS: &str = "bounds";
pub const BUCKET_COUNTS: &str = "bucket_counts";
pub const UNIT: &str = "unit";
pub const DESCRIPTION: &str = "description";
pub const FUNCTION_VERSION: &str = "function_version";
pub const PROVIDER: &str = "provider";
pub const REGION: &str = "region";
pub const ACCOUNT_ID: &str = "account_id";
pub const TRIGGER: &str = "trigger";
pub const INIT_DURATION_MS: &str = "init_duration_ms";
pub const BILLED_DURATION_MS: &str = "billed_duration_ms";
pub const MEMORY_SIZE_MB: &str = "memory_size_mb";
pub const MAX_MEMORY_USED_MB: &str = "max_memory_used_mb";
pub const ARCHITECTURE: &str = "architecture";
pub const RUNTIME: &str = "runtime";
pub const STATUS: &str = "status";
pub const ERROR_TYPE: &str = "error_type";
pub const SOURCE: &str = "source";

/// The tables the collector writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Spans,
    Logs,
    Metrics,
    /// Partial facts about one invocation as each source reported them.
    InvocationRecords,
}

impl Table {
    pub const ALL: [Table; 4] = [
        Table::Spans,
        Table::Logs,
        Table::Metrics,
        Table::InvocationRecords,
    ];

    /// Table name in SQL and directory name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Table::Spans => "spans",
            Table::Logs => "logs",
            Table::Metrics => "metrics",
            Table::InvocationRecords => "invocation_records",
        }
    }

    /// One-byte tag used in WAL records.
    pub fn tag(self) -> u8 {
        match self {
            Table::Spans => 1,
            Table::Logs => 2,
            Table::Metrics => 3,
            Table::InvocationRecords => 4,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.tag() == tag)
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Spans => Arc::clone(&SPANS),
            Table::Logs => Arc::clone(&LOGS),
            Table::Metrics => Arc::clone(&METRICS),
            Table::InvocationRecords => Arc::clone(&INVOCATION_RECORDS),
        }
    }

    /// Columns the flush sorts by inside a partition, chosen so that
    /// predicates on them prune row groups and pages. Spans are read by
    /// trace (Tempo's block layout): a trace's spans sit together, so a
    /// lookup by id decodes one page range per column.
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Table::Spans => &[TRACE_ID, TIME],
            Table::Logs => &[SERVICE_NAME, FUNCTION_NAME, TIME],
            Table::Metrics => &[SERVICE_NAME, NAME, TIME],
            Table::InvocationRecords => &[FUNCTION_NAME, TIME],
        }
    }

    /// Rows per Parquet data page, when smaller than the writer's default
    /// (20,000 rows or 1 MiB). Spans, sorted by trace id, use small pages:
    /// the page index then narrows a trace lookup to one page per column
    /// instead of a row group.
    pub fn page_rows(self) -> Option<usize> {
        match self {
            Table::Spans => Some(1024),
            Table::Logs | Table::Metrics | Table::InvocationRecords => None,
        }
    }

    /// Columns that get a Parquet bloom filter.
    pub fn bloom_columns(self) -> &'static [&'static str] {
        match self {
            Table::Spans | Table::Logs | Table::InvocationRecords => &[TRACE_ID, REQUEST_ID],
            Table::Metrics => &[],
        }
    }
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `Map<Utf8, Utf8>` with the field names arrow's `MapBuilder` produces.
pub fn attribute_map_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, timestamp_type(), nullable)
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn map(name: &str) -> Field {
    Field::new(name, attribute_map_type(), false)
}

static SPANS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ts(TIME, false),
        ts(END_TIME, false),
        Field::new(DURATION_MS, DataType::Float64, false),
        text(TRACE_ID, false),
        text(SPAN_ID, false),
        text(PARENT_SPAN_ID, true),
        text(NAME, false),
        text(KIND, false),
        text(STATUS_CODE, false),
        text(STATUS_MESSAGE, true),
        text(SERVICE_NAME, true),
        text(FUNCTION_NAME, true),
        text(REQUEST_ID, true),
        Field::new(COLD_START, DataType::Boolean, true),
        map(ATTRIBUTES),
        map(RESOURCE_ATTRIBUTES),
        text(EVENTS, true),
        text(LINKS, true),
        text(SCOPE_NAME, true),
    ]))
});

static LOGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ts(TIME, false),
        ts(OBSERVED_TIME, false),
        text(SEVERITY_TEXT, true),
        Field::new(SEVERITY_NUMBER, DataType::Int32, true),
        text(BODY, true),
        text(TRACE_ID, true),
        text(SPAN_ID, true),
        text(SERVICE_NAME, true),
        text(FUNCTION_NAME, true),
        text(REQUEST_ID, true),
        map(ATTRIBUTES),
        map(RESOURCE_ATTRIBUTES),
        text(SCOPE_NAME, true),
    ]))
});

static METRICS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let f64_list = DataType::List(Arc::new(Field::new("item", DataType::Float64, true)));
    let i64_list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
    Arc::new(Schema::new(vec![
        ts(TIME, false),
        ts(START_TIME, true),
        text(NAME, false),
        text(KIND, false),
        Field::new(VALUE, DataType::Float64, true),
        Field::new(COUNT, DataType::Int64, true),
        Field::new(SUM, DataType::Float64, true),
        Field::new(MIN, DataType::Float64, true),
        Field::new(MAX, DataType::Float64, true),
        Field::new(BOUNDS, f64_list, true),
        Field::new(BUCKET_COUNTS, i64_list, true),
        text(UNIT, true),
        text(DESCRIPTION, true),
        text(SERVICE_NAME, true),
        text(FUNCTION_NAME, true),
        map(ATTRIBUTES),
        map(RESOURCE_ATTRIBUTES),
        text(SCOPE_NAME, true),
    ]))
});

static INVOCATION_RECORDS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        ts(TIME, false),
        text(FUNCTION_NAME, false),
        text(FUNCTION_VERSION, true),
        text(PROVIDER, true),
        text(REGION, true),
        text(ACCOUNT_ID, true),
        text(REQUEST_ID, false),
        text(TRACE_ID, true),
        text(TRIGGER, true),
        Field::new(COLD_START, DataType::Boolean, true),
        Field::new(INIT_DURATION_MS, DataType::Float64, true),
        Field::new(DURATION_MS, DataType::Float64, true),
        Field::new(BILLED_DURATION_MS, DataType::Int64, true),
        Field::new(MEMORY_SIZE_MB, DataType::Int64, true),
        Field::new(MAX_MEMORY_USED_MB, DataType::Int64, true),
        text(ARCHITECTURE, true),
        text(RUNTIME, true),
        text(STATUS, true),
        text(ERROR_TYPE, true),
        text(SOURCE, false),
    ]))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for t in Table::ALL {
            assert_eq!(Table::from_tag(t.tag()), Some(t));
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
        assert_eq!(Table::from_tag(0), None);
    }

    #[test]
    fn sort_and_bloom_columns_exist() {
        for t in Table::ALL {
            let schema = t.schema();
            for c in t.sort_columns().iter().chain(t.bloom_columns()) {
                assert!(schema.index_of(c).is_ok(), "{} lacks {c}", t.name());
            }
        }
    }
}
