//! Reading one trace: its spans and the invocations they belong to.
//!
//! Both lookups are id predicates on tables with bloom filters on `trace_id`
//! and `request_id`, so only the row groups that can hold the trace are read.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, MapArray, RecordBatch,
    StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use super::{SpanRecord, sql_string};
use crate::engine::{QueryEngine, QueryError};

/// Most spans one trace view loads; beyond it the trace is marked truncated.
pub const MAX_TRACE_SPANS: usize = 100_000;

/// An invocation of a function within a trace, with its cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceInvocation {
    pub function_name: String,
    pub request_id: String,
    pub trace_id: Option<String>,
    pub cold_start: bool,
    pub init_duration_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub billed_duration_ms: Option<i64>,
    pub memory_size_mb: Option<i64>,
    pub status: String,
    pub cost_usd: Option<f64>,
    pub cost_estimated: bool,
}

/// Typed access to the columns of a result batch by name.
pub(crate) struct Cols<'a> {
    batch: &'a RecordBatch,
}

fn conversion(e: arrow::error::ArrowError) -> QueryError {
    QueryError::Sql(format!("reading a trace column: {e}"))
}

impl<'a> Cols<'a> {
    pub(crate) fn new(batch: &'a RecordBatch) -> Self {
        Cols { batch }
    }

    fn column(&self, name: &str) -> Result<&'a ArrayRef, QueryError> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| QueryError::Sql(format!("result has no column {name}")))
    }

    fn as_type(&self, name: &str, to: &DataType) -> Result<ArrayRef, QueryError> {
        cast(self.column(name)?, to).map_err(conversion)
    }

    pub(crate) fn strings(&self, name: &str) -> Result<Vec<Option<String>>, QueryError> {
        let a = self.as_type(name, &DataType::Utf8)?;
        let a: &StringArray = a.as_string();
        Ok(a.iter().map(|v| v.map(str::to_string)).collect())
    }

    /// Timestamps as µs since the epoch.
    pub(crate) fn micros(&self, name: &str) -> Result<Vec<Option<i64>>, QueryError> {
        let a = self.column(name)?;
        let a = match a.data_type() {
            DataType::Timestamp(unit, _) => {
                let to_micros = match unit {
                    arrow::datatypes::TimeUnit::Second => 1_000_000.0,
                    arrow::datatypes::TimeUnit::Millisecond => 1_000.0,
                    arrow::datatypes::TimeUnit::Microsecond => 1.0,
                    arrow::datatypes::TimeUnit::Nanosecond => 0.001,
                };
                let raw = cast(a, &DataType::Int64).map_err(conversion)?;
                let raw: &Int64Array = raw.as_primitive();
                return Ok(raw
                    .iter()
                    .map(|v| v.map(|v| (v as f64 * to_micros).round() as i64))
                    .collect());
            }
            _ => cast(a, &DataType::Int64).map_err(conversion)?,
        };
        let a: &Int64Array = a.as_primitive();
        Ok(a.iter().collect())
    }

    pub(crate) fn ints(&self, name: &str) -> Result<Vec<Option<i64>>, QueryError> {
        let a = self.as_type(name, &DataType::Int64)?;
        let a: &Int64Array = a.as_primitive();
        Ok(a.iter().collect())
    }

    pub(crate) fn floats(&self, name: &str) -> Result<Vec<Option<f64>>, QueryError> {
        let a = self.as_type(name, &DataType::Float64)?;
        let a: &Float64Array = a.as_primitive();
        Ok(a.iter().collect())
    }

    pub(crate) fn bools(&self, name: &str) -> Result<Vec<Option<bool>>, QueryError> {
        let a = self.as_type(name, &DataType::Boolean)?;
        let a: &BooleanArray = a.as_boolean();
        Ok(a.iter().collect())
    }

    /// A `Map<Utf8, Utf8>` column as key/value lists.
    pub(crate) fn maps(&self, name: &str) -> Result<Vec<Vec<(String, String)>>, QueryError> {
        let a = self.column(name)?;
        let Some(map) = a.as_any().downcast_ref::<MapArray>() else {
            return Err(QueryError::Sql(format!("column {name} is not a map")));
        };
        let keys = cast(map.keys(), &DataType::Utf8).map_err(conversion)?;
        let values = cast(map.values(), &DataType::Utf8).map_err(conversion)?;
        let (keys, values): (&StringArray, &StringArray) = (keys.as_string(), values.as_string());
        let offsets = map.value_offsets();
        Ok((0..map.len())
            .map(|row| {
                if map.is_null(row) {
                    return Vec::new();
                }
                let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
                (from..to)
                    .filter(|&i| keys.is_valid(i))
                    .map(|i| {
                        let v = if values.is_valid(i) {
                            values.value(i)
                        } else {
                            ""
                        };
                        (keys.value(i).to_string(), v.to_string())
                    })
                    .collect()
            })
            .collect())
    }
}

const SPAN_COLUMNS: &str = "time, end_time, trace_id, span_id, parent_span_id, name, kind, \
     status_code, status_message, service_name, function_name, request_id, cold_start, \
     attributes, resource_attributes, events, links, scope_name";

/// Spans from result batches with the columns of [`SPAN_COLUMNS`].
pub(crate) fn spans_from_batches(batches: &[RecordBatch]) -> Result<Vec<SpanRecord>, QueryError> {
    let mut out = Vec::new();
    for batch in batches {
        let c = Cols::new(batch);
        let time = c.micros("time")?;
        let end = c.micros("end_time")?;
        let trace_id = c.strings("trace_id")?;
        let span_id = c.strings("span_id")?;
        let parent = c.strings("parent_span_id")?;
        let name = c.strings("name")?;
        let kind = c.strings("kind")?;
        let status = c.strings("status_code")?;
        let message = c.strings("status_message")?;
        let service = c.strings("service_name")?;
        let function = c.strings("function_name")?;
        let request = c.strings("request_id")?;
        let cold = c.bools("cold_start")?;
        let attrs = c.maps("attributes")?;
        let res = c.maps("resource_attributes")?;
        let events = c.strings("events")?;
        let links = c.strings("links")?;
        let scope = c.strings("scope_name")?;
        let rows = attrs.into_iter().zip(res);
        for (i, (attributes, resource_attributes)) in rows.enumerate() {
            let start_us = time[i].unwrap_or(0);
            out.push(SpanRecord {
                trace_id: trace_id[i].clone().unwrap_or_default(),
                span_id: span_id[i].clone().unwrap_or_default(),
                parent_span_id: parent[i].clone(),
                name: name[i].clone().unwrap_or_default(),
                kind: kind[i].clone().unwrap_or_default(),
                status_code: status[i].clone().unwrap_or_default(),
                status_message: message[i].clone(),
                service_name: service[i].clone(),
                function_name: function[i].clone(),
                request_id: request[i].clone(),
                cold_start: cold[i],
                start_us,
                end_us: end[i].unwrap_or(start_us).max(start_us),
                attributes,
                resource_attributes,
                events: events[i].clone(),
                links: links[i].clone(),
                scope_name: scope[i].clone(),
            });
        }
    }
    Ok(out)
}

/// The spans of one trace (`trace_id` already validated as 32 lowercase hex
/// digits); the flag says the trace had more than [`MAX_TRACE_SPANS`].
pub async fn load_spans(
    engine: &QueryEngine,
    trace_id: &str,
) -> Result<(Vec<SpanRecord>, bool), QueryError> {
    let sql = format!(
        "SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id = {} LIMIT {}",
        sql_string(trace_id),
        MAX_TRACE_SPANS + 1
    );
    let result = engine.execute(&sql).await?;
    let mut spans = spans_from_batches(&result.batches)?;
    let truncated = spans.len() > MAX_TRACE_SPANS;
    spans.truncate(MAX_TRACE_SPANS);
    Ok((spans, truncated))
}

/// The request ids of the invocation records that carry the trace id (runs
/// alongside [`load_spans`]).
pub async fn record_request_ids(
    engine: &QueryEngine,
    trace_id: &str,
) -> Result<Vec<String>, QueryError> {
    let sql = format!(
        "SELECT DISTINCT request_id FROM invocation_records WHERE trace_id = {}",
        sql_string(trace_id)
    );
    let result = engine.execute(&sql).await?;
    let mut ids = Vec::new();
    for batch in &result.batches {
        ids.extend(
            Cols::new(batch)
                .strings("request_id")?
                .into_iter()
                .flatten(),
        );
    }
    Ok(ids)
}

/// The invocations of a trace: those whose records carry its trace id
/// (`record_ids`), and those its spans name by request id.
pub async fn load_invocations(
    engine: &QueryEngine,
    trace_id: &str,
    span_request_ids: &[String],
    record_ids: Vec<String>,
) -> Result<Vec<TraceInvocation>, QueryError> {
    let mut ids = record_ids;
    ids.extend_from_slice(span_request_ids);
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = ids
        .iter()
        .map(|id| sql_string(id))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT function_name, request_id, trace_id, cold_start, init_duration_ms, duration_ms, \
         billed_duration_ms, memory_size_mb, status, cost_usd, cost_estimated \
         FROM invocations WHERE request_id IN ({list}) ORDER BY time, function_name, request_id"
    );
    let result = engine.execute(&sql).await?;
    let mut out = Vec::new();
    for batch in &result.batches {
        let c = Cols::new(batch);
        let function = c.strings("function_name")?;
        let request = c.strings("request_id")?;
        let trace = c.strings("trace_id")?;
        let cold = c.bools("cold_start")?;
        let init = c.floats("init_duration_ms")?;
        let duration = c.floats("duration_ms")?;
        let billed = c.ints("billed_duration_ms")?;
        let memory = c.ints("memory_size_mb")?;
        let status = c.strings("status")?;
        let cost = c.floats("cost_usd")?;
        let estimated = c.bools("cost_estimated")?;
        for i in 0..batch.num_rows() {
            // An invocation tied to another trace (a reused request id in
            // hostile or test data) does not count for this one.
            if trace[i].as_deref().is_some_and(|t| t != trace_id) {
                continue;
            }
            out.push(TraceInvocation {
                function_name: function[i].clone().unwrap_or_default(),
                request_id: request[i].clone().unwrap_or_default(),
                trace_id: trace[i].clone(),
                cold_start: cold[i].unwrap_or(false),
                init_duration_ms: init[i],
                duration_ms: duration[i],
                billed_duration_ms: billed[i],
                memory_size_mb: memory[i],
                status: status[i].clone().unwrap_or_default(),
                cost_usd: cost[i],
                cost_estimated: estimated[i].unwrap_or(false),
            });
        }
    }
    Ok(out)
}
