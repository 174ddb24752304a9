//! `ExportLogsServiceRequest` → rows of the `logs` table.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use crate::decode::attrs::{self, ResourceFacts};
use crate::decode::columns::{
    AttrMapBuilder, RepeatedAttrs, nanos_to_micros, rows_to_reserve, text_builder,
};
use crate::decode::invocations::{self, RecordColumns};
use crate::model::ids::{SpanId, TraceId};
use crate::model::{Normalized, Table, TableBatch};

/// Column builders of the `logs` table, shared with the Lambda decoders that
/// keep platform lines as log rows.
#[derive(Debug)]
pub struct LogColumns {
    time: TimestampMicrosecondBuilder,
    observed_time: TimestampMicrosecondBuilder,
    severity_text: StringBuilder,
    severity_number: Int32Builder,
    body: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    service_name: StringBuilder,
    function_name: StringBuilder,
    request_id: StringBuilder,
    attributes: AttrMapBuilder,
    resource_attributes: AttrMapBuilder,
    scope_name: StringBuilder,
    rows: usize,
}

/// One log row, borrowed from whatever the decoder holds.
#[derive(Debug, Default)]
pub struct LogRow<'a> {
    pub time_micros: i64,
    pub observed_micros: i64,
    pub severity_text: Option<&'a str>,
    pub severity_number: Option<i32>,
    pub body: Option<Cow<'a, str>>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub service_name: Option<&'a str>,
    pub function_name: Option<String>,
    pub request_id: Option<String>,
    pub scope_name: Option<&'a str>,
}

impl LogColumns {
    /// Builders sized for `rows` log records (at most [`rows_to_reserve`]).
    pub fn with_capacity(rows: usize) -> Self {
        let rows = rows_to_reserve(rows);
        let ts = || TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        LogColumns {
            time: ts(),
            observed_time: ts(),
            severity_text: text_builder(rows, 5),
            severity_number: Int32Builder::with_capacity(rows),
            body: text_builder(rows, 64),
            trace_id: text_builder(rows, 32),
            span_id: text_builder(rows, 16),
            service_name: text_builder(rows, 16),
            function_name: text_builder(rows, 16),
            request_id: text_builder(rows, 36),
            attributes: AttrMapBuilder::with_capacity(rows),
            resource_attributes: AttrMapBuilder::with_capacity(rows),
            scope_name: text_builder(rows, 16),
            rows: 0,
        }
    }

    /// Appends a row; the two attribute columns are appended by the caller
    /// through `attributes_mut` / `resource_attributes_mut` exactly once each.
    pub fn append(&mut self, row: LogRow<'_>) {
        self.time.append_value(row.time_micros);
        self.observed_time.append_value(row.observed_micros);
        self.severity_text.append_option(row.severity_text);
        self.severity_number.append_option(row.severity_number);
        self.body.append_option(row.body);
        self.trace_id.append_option(row.trace_id);
        self.span_id.append_option(row.span_id);
        self.service_name.append_option(row.service_name);
        self.function_name.append_option(row.function_name);
        self.request_id.append_option(row.request_id);
        self.scope_name.append_option(row.scope_name);
        self.rows += 1;
    }

    pub fn attributes_mut(&mut self) -> &mut AttrMapBuilder {
        &mut self.attributes
    }

    pub fn resource_attributes_mut(&mut self) -> &mut AttrMapBuilder {
        &mut self.resource_attributes
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.observed_time.finish()),
            Arc::new(self.severity_text.finish()),
            Arc::new(self.severity_number.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.function_name.finish()),
            Arc::new(self.request_id.finish()),
            self.attributes.finish()?,
            self.resource_attributes.finish()?,
            Arc::new(self.scope_name.finish()),
        ];
        RecordBatch::try_new(Table::Logs.schema(), columns)
    }
}

fn optional_ids(rec: &LogRecord) -> Result<(Option<TraceId>, Option<SpanId>), String> {
    let trace = if rec.trace_id.is_empty() {
        None
    } else {
        Some(TraceId::try_from(rec.trace_id.as_slice()).map_err(|e| e.to_string())?)
    };
    let span = if rec.span_id.is_empty() {
        None
    } else {
        Some(SpanId::try_from(rec.span_id.as_slice()).map_err(|e| e.to_string())?)
    };
    Ok((trace, span))
}

/// The bytes the request's rows would repeat: each record's row holds its
/// resource and its scope's name ([`super::repeated_bytes`]).
pub fn expansion(req: &ExportLogsServiceRequest) -> usize {
    super::repeated_bytes(req.resource_logs.iter().flat_map(|rl| {
        let resource = super::shared_bytes(rl.resource.as_ref());
        rl.scope_logs.iter().map(move |sl| {
            let scope = sl.scope.as_ref().map_or(0, |s| s.name.len());
            (resource + scope, sl.log_records.len())
        })
    }))
}

/// Normalizes every valid log record; records with malformed ids are refused.
pub fn normalize(
    req: &ExportLogsServiceRequest,
    now_micros: i64,
) -> Result<Normalized, arrow::error::ArrowError> {
    let mut out = Normalized::default();
    let logs: usize = req
        .resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len())
        .sum();
    let mut cols = LogColumns::with_capacity(logs);
    let mut records = RecordColumns::with_capacity(1);
    for rl in &req.resource_logs {
        let empty = Vec::new();
        let res_attrs = rl.resource.as_ref().map_or(&empty, |r| &r.attributes);
        let facts = ResourceFacts::from_attributes(res_attrs);
        let rows = rl.scope_logs.iter().map(|sl| sl.log_records.len()).sum();
        let repeated = RepeatedAttrs::new(res_attrs, rows);
        for sl in &rl.scope_logs {
            let scope = sl
                .scope
                .as_ref()
                .map(|s| s.name.as_str())
                .filter(|s| !s.is_empty());
            for rec in &sl.log_records {
                let (trace_id, span_id) = match optional_ids(rec) {
                    Ok(ids) => ids,
                    Err(reason) => {
                        out.reject(|| format!("log record: {reason}"));
                        continue;
                    }
                };
                let observed = if rec.observed_time_unix_nano > 0 {
                    nanos_to_micros(rec.observed_time_unix_nano)
                } else {
                    now_micros
                };
                let time = if rec.time_unix_nano > 0 {
                    nanos_to_micros(rec.time_unix_nano)
                } else {
                    observed
                };
                let body = rec.body.as_ref().and_then(attrs::value_to_string);
                if let (Some(text), Some(function)) = (&body, &facts.function_name)
                    && let Some(r) = invocations::from_log_message(text, function, time)
                {
                    records.append(&r);
                }
                cols.append(LogRow {
                    time_micros: time,
                    observed_micros: observed,
                    severity_text: Some(rec.severity_text.as_str()).filter(|s| !s.is_empty()),
                    severity_number: Some(rec.severity_number).filter(|n| *n != 0),
                    body,
                    trace_id: trace_id.map(|t| t.to_hex()),
                    span_id: span_id.map(|s| s.to_hex()),
                    service_name: facts.service_name.as_deref(),
                    function_name: facts.function_name.clone(),
                    request_id: attrs::request_id(&rec.attributes),
                    scope_name: scope,
                });
                cols.attributes_mut().append(&rec.attributes);
                cols.resource_attributes_mut().append_repeated(&repeated);
                out.accepted += 1;
            }
        }
    }
    if !cols.is_empty() {
        out.batches.push(TableBatch {
            table: Table::Logs,
            batch: cols.finish()?,
        });
    }
    if !records.is_empty() {
        out.batches.push(TableBatch {
            table: Table::InvocationRecords,
            batch: records.finish()?,
        });
    }
    Ok(out)
}
