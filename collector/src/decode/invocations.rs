//! Invocation records: what one source knew about one function invocation,
//! as rows of `invocation_records`. Sources: Lambda `REPORT` and related
//! platform lines found in log bodies, handler spans (`faas.invocation_id`),
//! and `POST /v1/invocations`. The `invocations` view coalesces them.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::record_batch::RecordBatch;

use super::columns::{rows_to_reserve, text_builder};
use super::lambda_report::{PlatformLine, Report};
use crate::model::Table;

/// One partial record; `None` = the source did not say.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvocationRecord {
    #[serde(skip)]
    pub time_micros: i64,
    pub function_name: String,
    pub function_version: Option<String>,
    pub provider: Option<String>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub request_id: String,
    pub trace_id: Option<String>,
    pub trigger: Option<String>,
    pub cold_start: Option<bool>,
    pub init_duration_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub billed_duration_ms: Option<i64>,
    pub memory_size_mb: Option<i64>,
    pub max_memory_used_mb: Option<i64>,
    pub architecture: Option<String>,
    pub runtime: Option<String>,
    pub status: Option<String>,
    pub error_type: Option<String>,
    #[serde(skip)]
    pub source: &'static str,
}

/// Record sources, stored in `source`.
pub const SOURCE_REPORT: &str = "report";
pub const SOURCE_SPAN: &str = "span";
pub const SOURCE_API: &str = "api";

/// `REPORT` status → the view's `ok|error|timeout|oom`.
fn report_status(r: &Report) -> String {
    match (r.status.as_deref(), r.error_type.as_deref()) {
        (Some("timeout"), _) => "timeout".into(),
        (_, Some("Runtime.OutOfMemory")) => "oom".into(),
        (Some(_), _) => "error".into(),
        (None, _) => "ok".into(),
    }
}

/// A record from a platform line, for the function the line belongs to.
pub fn from_platform_line(
    line: &PlatformLine,
    function_name: &str,
    time_micros: i64,
) -> Option<InvocationRecord> {
    let base = |request_id: &str| InvocationRecord {
        time_micros,
        function_name: function_name.to_string(),
        request_id: request_id.to_string(),
        provider: Some("aws".into()),
        source: SOURCE_REPORT,
        ..Default::default()
    };
    match line {
        PlatformLine::Report(r) => Some(InvocationRecord {
            trace_id: r.w3c_trace_id(),
            cold_start: Some(r.init_duration_ms.is_some() || r.restore_duration_ms.is_some()),
            init_duration_ms: r.init_duration_ms.or(r.restore_duration_ms),
            duration_ms: r.duration_ms,
            billed_duration_ms: r.billed_duration_ms,
            memory_size_mb: r.memory_size_mb,
            max_memory_used_mb: r.max_memory_used_mb,
            status: Some(report_status(r)),
            error_type: r.error_type.clone(),
            ..base(&r.request_id)
        }),
        PlatformLine::Timeout {
            request_id: Some(id),
            ..
        } => Some(InvocationRecord {
            status: Some("timeout".into()),
            error_type: Some("Sandbox.Timedout".into()),
            ..base(id)
        }),
        PlatformLine::RuntimeExited {
            request_id: Some(id),
            signal_killed,
        } => Some(InvocationRecord {
            status: Some("error".into()),
            error_type: Some(
                if *signal_killed {
                    "Runtime.ExitError: signal: killed"
                } else {
                    "Runtime.ExitError"
                }
                .into(),
            ),
            ..base(id)
        }),
        PlatformLine::Start {
            request_id,
            version,
        } => Some(InvocationRecord {
            function_version: version.clone(),
            ..base(request_id)
        }),
        _ => None,
    }
}

/// The invocation record a log message carries, if it is a Lambda platform
/// line in the plain-text or the JSON log format.
pub fn from_log_message(
    message: &str,
    function_name: &str,
    time_micros: i64,
) -> Option<InvocationRecord> {
    if let Some(line) = super::lambda_report::parse(message) {
        return from_platform_line(&line, function_name, time_micros);
    }
    super::telemetry_api::json_platform_line(message, function_name, SOURCE_REPORT)
}

/// Column builders of `invocation_records`.
#[derive(Debug)]
pub struct RecordColumns {
    time: TimestampMicrosecondBuilder,
    text: [StringBuilder; 10],
    cold_start: BooleanBuilder,
    init_duration_ms: Float64Builder,
    duration_ms: Float64Builder,
    billed_duration_ms: Int64Builder,
    memory_size_mb: Int64Builder,
    max_memory_used_mb: Int64Builder,
    status: StringBuilder,
    error_type: StringBuilder,
    source: StringBuilder,
    rows: usize,
}

impl Default for RecordColumns {
    fn default() -> Self {
        Self::with_capacity(1024)
    }
}

impl RecordColumns {
    /// Builders sized for `rows` records (most requests carry a few; at most
    /// [`rows_to_reserve`]).
    pub fn with_capacity(rows: usize) -> Self {
        let rows = rows_to_reserve(rows);
        RecordColumns {
            time: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            text: std::array::from_fn(|_| text_builder(rows, 16)),
            cold_start: BooleanBuilder::with_capacity(rows),
            init_duration_ms: Float64Builder::with_capacity(rows),
            duration_ms: Float64Builder::with_capacity(rows),
            billed_duration_ms: Int64Builder::with_capacity(rows),
            memory_size_mb: Int64Builder::with_capacity(rows),
            max_memory_used_mb: Int64Builder::with_capacity(rows),
            status: text_builder(rows, 8),
            error_type: text_builder(rows, 0),
            source: text_builder(rows, 8),
            rows: 0,
        }
    }

    pub fn append(&mut self, r: &InvocationRecord) {
        self.time.append_value(r.time_micros);
        let [
            func,
            version,
            provider,
            region,
            account,
            request,
            trace,
            trigger,
            arch,
            runtime,
        ] = &mut self.text;
        func.append_value(&r.function_name);
        version.append_option(r.function_version.as_deref());
        provider.append_option(r.provider.as_deref());
        region.append_option(r.region.as_deref());
        account.append_option(r.account_id.as_deref());
        request.append_value(&r.request_id);
        trace.append_option(r.trace_id.as_deref());
        trigger.append_option(r.trigger.as_deref());
        arch.append_option(r.architecture.as_deref());
        runtime.append_option(r.runtime.as_deref());
        self.cold_start.append_option(r.cold_start);
        self.init_duration_ms.append_option(r.init_duration_ms);
        self.duration_ms.append_option(r.duration_ms);
        self.billed_duration_ms.append_option(r.billed_duration_ms);
        self.memory_size_mb.append_option(r.memory_size_mb);
        self.max_memory_used_mb.append_option(r.max_memory_used_mb);
        self.status.append_option(r.status.as_deref());
        self.error_type.append_option(r.error_type.as_deref());
        self.source.append_value(r.source);
        self.rows += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let [
            mut func,
            mut version,
            mut provider,
            mut region,
            mut account,
            mut request,
            mut trace,
            mut trigger,
            mut arch,
            mut runtime,
        ] = self.text;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(func.finish()),
            Arc::new(version.finish()),
            Arc::new(provider.finish()),
            Arc::new(region.finish()),
            Arc::new(account.finish()),
            Arc::new(request.finish()),
            Arc::new(trace.finish()),
            Arc::new(trigger.finish()),
            Arc::new(self.cold_start.finish()),
            Arc::new(self.init_duration_ms.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.billed_duration_ms.finish()),
            Arc::new(self.memory_size_mb.finish()),
            Arc::new(self.max_memory_used_mb.finish()),
            Arc::new(arch.finish()),
            Arc::new(runtime.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.error_type.finish()),
            Arc::new(self.source.finish()),
        ];
        RecordBatch::try_new(Table::InvocationRecords.schema(), columns)
    }
}

/// `faas.max_memory` is bytes in current conventions and MB from some
/// collectors: values of a mebibyte and more are taken as bytes.
fn memory_mb(v: i64) -> i64 {
    if v >= 1 << 20 { v / (1 << 20) } else { v }
}

fn architecture(host_arch: &str) -> Option<String> {
    match host_arch {
        "amd64" | "x86_64" | "x86" => Some("x86_64".into()),
        "arm64" | "aarch64" => Some("arm64".into()),
        _ => None,
    }
}

/// Facts of a handler span (kind SERVER or CONSUMER carrying
/// `faas.invocation_id` or `faas.execution`).
#[derive(Debug)]
pub struct HandlerSpan<'a> {
    pub time_micros: i64,
    pub function_name: &'a str,
    pub request_id: String,
    pub trace_id: String,
    pub duration_ms: f64,
    pub is_error: bool,
    pub span_attributes: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    pub resource_attributes: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
}

pub fn from_handler_span(h: HandlerSpan<'_>) -> InvocationRecord {
    use super::attrs::{find, find_bool, find_string};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let res = h.resource_attributes;
    let memory = find(res, "faas.max_memory").and_then(|v| match v.value.as_ref()? {
        Value::IntValue(i) => Some(memory_mb(*i)),
        Value::DoubleValue(d) => Some(memory_mb(*d as i64)),
        Value::StringValue(s) => s.parse().ok().map(memory_mb),
        _ => None,
    });
    let runtime = match (
        find_string(res, "process.runtime.name"),
        find_string(res, "process.runtime.version"),
    ) {
        (Some(n), Some(v)) => Some(format!("{n}{v}")),
        (n, _) => n,
    };
    InvocationRecord {
        time_micros: h.time_micros,
        function_name: h.function_name.to_string(),
        function_version: find_string(res, "faas.version"),
        provider: find_string(res, "cloud.provider"),
        region: find_string(res, "cloud.region"),
        account_id: find_string(res, "cloud.account.id"),
        request_id: h.request_id,
        trace_id: Some(h.trace_id),
        trigger: find_string(h.span_attributes, "faas.trigger"),
        cold_start: find_bool(h.span_attributes, "faas.coldstart"),
        duration_ms: Some(h.duration_ms),
        memory_size_mb: memory,
        architecture: find_string(res, "host.arch").and_then(|a| architecture(&a)),
        runtime,
        status: Some(if h.is_error { "error" } else { "ok" }.into()),
        source: SOURCE_SPAN,
        ..Default::default()
    }
}
