//! `ExportTraceServiceRequest` → rows of the `spans` table.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};

use crate::decode::attrs::{self, ResourceFacts};
use crate::decode::columns::{
    AttrMapBuilder, RepeatedAttrs, micros_between_as_ms, nanos_to_micros, rows_to_reserve,
    text_builder,
};
use crate::decode::invocations::{self, RecordColumns};
use crate::instances::Instances;
use crate::model::ids::{SpanId, TraceId};
use crate::model::{Normalized, Table, TableBatch, UnbuiltSpans};
use crate::storage::layout::hour_start;

#[derive(Debug)]
struct SpanColumns {
    time: TimestampMicrosecondBuilder,
    end_time: TimestampMicrosecondBuilder,
    duration_ms: Float64Builder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    service_name: StringBuilder,
    function_name: StringBuilder,
    request_id: StringBuilder,
    cold_start: BooleanBuilder,
    attributes: AttrMapBuilder,
    resource_attributes: AttrMapBuilder,
    events: StringBuilder,
    links: StringBuilder,
    scope_name: StringBuilder,
}

impl SpanColumns {
    /// Builders sized for `rows` spans (at most [`rows_to_reserve`]).
    fn with_capacity(rows: usize) -> Self {
        let rows = rows_to_reserve(rows);
        let ts = || TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        SpanColumns {
            time: ts(),
            end_time: ts(),
            duration_ms: Float64Builder::with_capacity(rows),
            trace_id: text_builder(rows, 32),
            span_id: text_builder(rows, 16),
            parent_span_id: text_builder(rows, 16),
            name: text_builder(rows, 24),
            kind: text_builder(rows, 8),
            status_code: text_builder(rows, 5),
            status_message: text_builder(rows, 0),
            service_name: text_builder(rows, 16),
            function_name: text_builder(rows, 16),
            request_id: text_builder(rows, 36),
            cold_start: BooleanBuilder::with_capacity(rows),
            attributes: AttrMapBuilder::with_capacity(rows),
            resource_attributes: AttrMapBuilder::with_capacity(rows),
            events: text_builder(rows, 0),
            links: text_builder(rows, 0),
            scope_name: text_builder(rows, 16),
        }
    }

    fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.function_name.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.cold_start.finish()),
            self.attributes.finish()?,
            self.resource_attributes.finish()?,
            Arc::new(self.events.finish()),
            Arc::new(self.links.finish()),
            Arc::new(self.scope_name.finish()),
        ];
        RecordBatch::try_new(Table::Spans.schema(), columns)
    }
}

pub fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Unspecified) | Err(_) => "unspecified",
    }
}

pub fn status_name(code: i32) -> &'static str {
    match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => "ok",
        Ok(StatusCode::Error) => "error",
        Ok(StatusCode::Unset) | Err(_) => "unset",
    }
}

/// Checks a span's ids; the error says why OTLP partial success refused it.
fn validate(span: &Span) -> Result<(TraceId, SpanId, Option<SpanId>), String> {
    let trace_id = TraceId::try_from(span.trace_id.as_slice()).map_err(|e| e.to_string())?;
    let span_id = SpanId::try_from(span.span_id.as_slice()).map_err(|e| e.to_string())?;
    let parent = if span.parent_span_id.is_empty() {
        None
    } else {
        Some(SpanId::try_from(span.parent_span_id.as_slice()).map_err(|e| format!("parent {e}"))?)
    };
    Ok((trace_id, span_id, parent))
}

/// [`validate`], counting a refused span in `out` (the first reason is
/// the one OTLP's partial success reports).
fn checked(span: &Span, out: &mut Normalized) -> Option<(TraceId, SpanId, Option<SpanId>)> {
    validate(span)
        .map_err(|reason| out.reject(|| format!("span {:?}: {reason}", span.name)))
        .ok()
}

fn events_json(span: &Span) -> Option<String> {
    if span.events.is_empty() {
        return None;
    }
    let events: Vec<serde_json::Value> = span
        .events
        .iter()
        .map(|e| {
            serde_json::json!({
                "time_unix_nano": e.time_unix_nano,
                "name": e.name,
                "attributes": attrs::attributes_to_json(&e.attributes),
            })
        })
        .collect();
    Some(serde_json::Value::Array(events).to_string())
}

fn links_json(span: &Span) -> Option<String> {
    if span.links.is_empty() {
        return None;
    }
    let links: Vec<serde_json::Value> = span
        .links
        .iter()
        .map(|l| {
            serde_json::json!({
                "trace_id": hex::encode(&l.trace_id),
                "span_id": hex::encode(&l.span_id),
                "attributes": attrs::attributes_to_json(&l.attributes),
            })
        })
        .collect();
    Some(serde_json::Value::Array(links).to_string())
}

/// Normalizes every valid span of the request; invalid ones are counted in
/// `rejected` with the first reason.
pub fn normalize(req: &ExportTraceServiceRequest) -> Result<Normalized, arrow::error::ArrowError> {
    normalize_with(req, None)
}

/// The instance a handler span ran in: the resource's `faas.instance`
/// (OpenTelemetry's execution environment id) or `service.instance.id`.
fn instance_of(resource: &[KeyValue]) -> Option<String> {
    attrs::find_string(resource, "faas.instance")
        .or_else(|| attrs::find_string(resource, "service.instance.id"))
        .filter(|s| !s.is_empty())
}

/// Names of spans that record an execution environment's initialization:
/// X-Ray's Lambda `Initialization` subsegment (so the OpenTelemetry
/// Collector's X-Ray receiver names it) and Datadog's
/// `aws.lambda.cold_start` and `aws.lambda.load`.
pub const INIT_SPAN_NAMES: &[&str] =
    &["Initialization", "aws.lambda.cold_start", "aws.lambda.load"];

/// (trace id, function) of the request's init spans: a handler span of the
/// same function in the same trace is a cold start.
fn init_spans(req: &ExportTraceServiceRequest) -> HashSet<(Vec<u8>, String)> {
    let mut out = HashSet::new();
    for rs in &req.resource_spans {
        let mut facts = None;
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            if !INIT_SPAN_NAMES.contains(&span.name.as_str()) {
                continue;
            }
            let facts = facts.get_or_insert_with(|| {
                let empty = Vec::new();
                ResourceFacts::from_attributes(
                    rs.resource.as_ref().map_or(&empty, |r| &r.attributes),
                )
            });
            let function = attrs::find_string(&span.attributes, "faas.name")
                .or_else(|| facts.function_name.clone());
            if let Some(function) = function {
                out.insert((span.trace_id.clone(), function));
            }
        }
    }
    out
}

/// (function, instance) → the earliest start of the request's handler spans
/// of that instance that say nothing about cold starts.
fn earliest_unflagged_starts(req: &ExportTraceServiceRequest) -> HashMap<(String, String), u64> {
    let mut earliest: HashMap<(String, String), u64> = HashMap::new();
    for rs in &req.resource_spans {
        let empty = Vec::new();
        let res_attrs = rs.resource.as_ref().map_or(&empty, |r| &r.attributes);
        let Some(instance) = instance_of(res_attrs) else {
            continue;
        };
        let facts = ResourceFacts::from_attributes(res_attrs);
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            let handler = matches!(
                SpanKind::try_from(span.kind),
                Ok(SpanKind::Server | SpanKind::Consumer)
            );
            if !handler || attrs::find_bool(&span.attributes, "faas.coldstart").is_some() {
                continue;
            }
            let Some(function) = attrs::find_string(&span.attributes, "faas.name")
                .or_else(|| facts.function_name.clone())
            else {
                continue;
            };
            let start = earliest
                .entry((function, instance.clone()))
                .or_insert(u64::MAX);
            *start = (*start).min(span.start_time_unix_nano);
        }
    }
    earliest
}

/// What every span of one `ResourceSpans` shares.
struct SpanResource<'a> {
    attrs: RepeatedAttrs<'a>,
    facts: ResourceFacts,
    instance: Option<String>,
}

/// A span whose ids are valid, with the index of its resource and its
/// scope's name.
struct Valid<'a> {
    resource: usize,
    scope: Option<&'a str>,
    span: &'a Span,
    ids: (TraceId, SpanId, Option<SpanId>),
}

impl Valid<'_> {
    /// The order of the spans table's files: hour of the start, trace id,
    /// start (`Table::Spans.sort_columns()`; the lowercase hex the files
    /// sort by orders as the bytes do). The flush sorts every buffered row
    /// anyway; appended in this order, a request's rows are one sorted run,
    /// so the flush's stable sort merges runs and its take reads each run
    /// in sequence instead of jumping through the whole buffer (measured on
    /// 204,800 spans of 512-span requests, one thread: the take 151–175 ms
    /// from arrival order, 71–96 ms from this one).
    fn order(&self) -> (i64, [u8; 16], i64) {
        let start = nanos_to_micros(self.span.start_time_unix_nano);
        (hour_start(start), self.ids.0.0, start)
    }
}

/// [`normalize`], where a handler span without `faas.coldstart` is a cold
/// start when it is the first invocation of its instance: the earliest of
/// the instance's spans in the first request that showed the instance
/// (`instances` with that request's receive time).
pub fn normalize_with(
    req: &ExportTraceServiceRequest,
    instances: Option<(&Instances, i64)>,
) -> Result<Normalized, arrow::error::ArrowError> {
    let mut out = Normalized::default();
    let mut rows = SpanRows::with_capacity(span_count(req));
    rows.append(req, instances, &mut out);
    out.batches = rows.finish()?;
    Ok(out)
}

/// The number of spans a request carries, valid or not.
pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

/// The bytes the request's rows would repeat: each span's row holds its
/// resource and its scope's name ([`super::repeated_bytes`]).
pub fn expansion(req: &ExportTraceServiceRequest) -> usize {
    super::repeated_bytes(req.resource_spans.iter().flat_map(|rs| {
        let resource = super::shared_bytes(rs.resource.as_ref());
        rs.scope_spans.iter().map(move |ss| {
            let scope = ss.scope.as_ref().map_or(0, |s| s.name.len());
            (resource + scope, ss.spans.len())
        })
    }))
}

/// Builds requests left unbuilt by [`defer`] into one batch per table, or
/// more when their rows would repeat more than [`MAX_GROUP_BATCH_EXPANSION`]
/// bytes between them; their spans were counted when they were checked.
pub fn build_group(
    requests: &[UnbuiltSpans],
    instances: &Instances,
) -> Result<Vec<TableBatch>, arrow::error::ArrowError> {
    build_group_within(requests, instances, MAX_GROUP_BATCH_EXPANSION)
}

/// What the rows of one group commit's batch may repeat between them. Each
/// request passed its own limit (`decode_for_ingest`'s `max_expanded`, 64
/// MiB by default), but a group gathers up to 32 MiB of bodies: some fifty
/// requests that each repeat a large resource over their spans would hold
/// more than 2 GiB of text in one column, past the 32-bit offsets of
/// arrow's string arrays.
pub const MAX_GROUP_BATCH_EXPANSION: usize = 256 << 20;

/// [`build_group`], starting a new batch before the one being built would
/// repeat more than `max_expansion` bytes (each batch holds at least one
/// request).
pub(super) fn build_group_within(
    requests: &[UnbuiltSpans],
    instances: &Instances,
    max_expansion: usize,
) -> Result<Vec<TableBatch>, arrow::error::ArrowError> {
    let mut batches = Vec::new();
    let mut rest = requests;
    while !rest.is_empty() {
        let mut expansion = rest[0].expansion;
        let mut end = 1;
        while let Some(u) = rest.get(end) {
            expansion = expansion.saturating_add(u.expansion);
            if expansion > max_expansion {
                break;
            }
            end += 1;
        }
        let (chunk, next) = rest.split_at(end);
        let count = chunk.iter().map(|u| span_count(&u.request)).sum();
        let mut rows = SpanRows::with_capacity(count);
        for u in chunk {
            let seen = Some((instances, u.received_at_micros));
            rows.append(&u.request, seen, &mut Normalized::default());
        }
        batches.extend(rows.finish()?);
        rest = next;
    }
    Ok(batches)
}

/// Counts the request's valid and invalid spans as [`normalize_with`]
/// would, and keeps the request for the WAL writer to build its rows after
/// the sync ([`UnbuiltSpans`]).
pub fn defer(
    req: ExportTraceServiceRequest,
    received_at_micros: i64,
    expansion: usize,
) -> Normalized {
    let mut out = Normalized::default();
    for span in req
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
    {
        if checked(span, &mut out).is_some() {
            out.accepted += 1;
        }
    }
    if out.accepted > 0 {
        out.unbuilt = Some(UnbuiltSpans {
            request: req,
            received_at_micros,
            expansion,
        });
    }
    out
}

/// Rows of `spans`, and of `invocation_records` from handler spans, built
/// from one request or from several: the WAL writer builds the rows of a
/// group commit's small requests into one `SpanRows`, so one-span requests
/// do not each pay for a batch of ~20 columns and its merge
/// ([`UnbuiltSpans`]).
#[derive(Debug)]
pub struct SpanRows {
    cols: SpanColumns,
    records: Option<RecordColumns>,
}

impl SpanRows {
    /// Builders sized for `spans` spans (at most
    /// [`rows_to_reserve`](crate::decode::columns::rows_to_reserve)).
    pub fn with_capacity(spans: usize) -> Self {
        SpanRows {
            cols: SpanColumns::with_capacity(spans),
            records: None,
        }
    }

    /// Appends the request's valid spans, in the files' order within the
    /// request (see `Valid::order`), and counts the valid and invalid ones
    /// in `out`.
    pub fn append(
        &mut self,
        req: &ExportTraceServiceRequest,
        instances: Option<(&Instances, i64)>,
        out: &mut Normalized,
    ) {
        let earliest = match instances {
            Some(_) => earliest_unflagged_starts(req),
            None => HashMap::new(),
        };
        let init = init_spans(req);
        let cols = &mut self.cols;
        let mut resources = Vec::with_capacity(req.resource_spans.len());
        let mut valid = Vec::with_capacity(span_count(req));
        for rs in &req.resource_spans {
            let attrs = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let resource = resources.len();
            let spans = rs.scope_spans.iter().map(|ss| ss.spans.len()).sum();
            resources.push(SpanResource {
                attrs: RepeatedAttrs::new(attrs, spans),
                facts: ResourceFacts::from_attributes(attrs),
                instance: instances.and_then(|_| instance_of(attrs)),
            });
            for ss in &rs.scope_spans {
                let scope = ss
                    .scope
                    .as_ref()
                    .map(|s| s.name.as_str())
                    .filter(|s| !s.is_empty());
                for span in &ss.spans {
                    if let Some(ids) = checked(span, out) {
                        valid.push(Valid {
                            resource,
                            scope,
                            span,
                            ids,
                        });
                    }
                }
            }
        }
        // In the order the flush writes them (see `Valid::order`); the sort is
        // stable, so ties keep the request's order.
        valid.sort_by_key(Valid::order);
        for Valid {
            resource,
            scope,
            span,
            ids: (trace_id, span_id, parent),
        } in valid
        {
            let SpanResource {
                attrs: repeated,
                facts,
                instance,
            } = &resources[resource];
            let res_attrs = repeated.attrs();
            let start = nanos_to_micros(span.start_time_unix_nano);
            let end = nanos_to_micros(span.end_time_unix_nano.max(span.start_time_unix_nano));
            let duration_ms = micros_between_as_ms(start, end);
            cols.time.append_value(start);
            cols.end_time.append_value(end);
            cols.duration_ms.append_value(duration_ms);
            let trace_hex = trace_id.hex();
            cols.trace_id.append_value(trace_hex);
            cols.span_id.append_value(span_id.hex());
            cols.parent_span_id.append_option(parent.map(|p| p.hex()));
            cols.name.append_value(&span.name);
            cols.kind.append_value(kind_name(span.kind));
            let status = span.status.as_ref();
            cols.status_code
                .append_value(status_name(status.map_or(0, |s| s.code)));
            cols.status_message
                .append_option(status.map(|s| s.message.as_str()).filter(|m| !m.is_empty()));
            cols.service_name
                .append_option(facts.service_name.as_deref());
            let function = attrs::find_text(&span.attributes, "faas.name")
                .or_else(|| facts.function_name.as_deref().map(Cow::Borrowed));
            cols.function_name.append_option(function.as_deref());
            let request_id = attrs::request_id(&span.attributes);
            let is_handler = matches!(
                SpanKind::try_from(span.kind),
                Ok(SpanKind::Server | SpanKind::Consumer)
            );
            if let (true, Some(rid), Some(function)) = (is_handler, &request_id, &function) {
                let mut record = invocations::from_handler_span(invocations::HandlerSpan {
                    time_micros: start,
                    function_name: function,
                    request_id: rid.clone(),
                    trace_id: trace_hex.as_str().to_string(),
                    duration_ms,
                    is_error: status.is_some_and(|s| s.code == StatusCode::Error as i32),
                    span_attributes: &span.attributes,
                    resource_attributes: res_attrs,
                });
                if record.cold_start.is_none()
                    && !init.is_empty()
                    && init.contains(&(span.trace_id.clone(), function.to_string()))
                {
                    record.cold_start = Some(true);
                }
                if let (Some((seen, received_at)), Some(instance)) = (instances, instance) {
                    let first = seen.first_seen_in(function, instance, received_at);
                    if record.cold_start.is_none() {
                        let key = (function.to_string(), instance.clone());
                        record.cold_start =
                            Some(first && earliest.get(&key) == Some(&span.start_time_unix_nano));
                    }
                }
                self.records
                    .get_or_insert_with(|| RecordColumns::with_capacity(1))
                    .append(&record);
            }
            cols.request_id.append_option(request_id);
            cols.cold_start
                .append_option(attrs::find_bool(&span.attributes, "faas.coldstart"));
            cols.attributes.append(&span.attributes);
            cols.resource_attributes.append_repeated(repeated);
            cols.events.append_option(events_json(span));
            cols.links.append_option(links_json(span));
            cols.scope_name.append_option(scope);
            out.accepted += 1;
        }
    }

    /// The `spans` batch and the `invocation_records` batch, each only if
    /// it has rows.
    pub fn finish(self) -> Result<Vec<TableBatch>, arrow::error::ArrowError> {
        let mut batches = Vec::with_capacity(2);
        if !self.cols.time.is_empty() {
            batches.push(TableBatch {
                table: Table::Spans,
                batch: self.cols.finish()?,
            });
        }
        if let Some(records) = self.records.filter(|r| !r.is_empty()) {
            batches.push(TableBatch {
                table: Table::InvocationRecords,
                batch: records.finish()?,
            });
        }
        Ok(batches)
    }
}
