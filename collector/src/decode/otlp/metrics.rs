//! `ExportMetricsServiceRequest` → rows of the `metrics` table: one row per
//! data point. Gauges and sums fill `value`; histograms fill `count`, `sum`,
//! `min`, `max`, `bounds` and `bucket_counts`; exponential histograms keep
//! `count`, `sum`, `min` and `max`; summaries `count`, `sum` and, from their
//! 0 and 1 quantiles, `min` and `max`. `function_name` is the data point's
//! function when its attributes name one (see [`point_function`]), else the
//! resource's.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};

use crate::decode::attrs::{self, ResourceFacts};
use crate::decode::columns::{
    AttrMapBuilder, RepeatedAttrs, nanos_to_micros, rows_to_reserve, text_builder,
};
use crate::model::{Normalized, Table, TableBatch};

#[derive(Debug)]
struct MetricColumns {
    time: TimestampMicrosecondBuilder,
    start_time: TimestampMicrosecondBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    value: Float64Builder,
    count: Int64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bounds: ListBuilder<Float64Builder>,
    bucket_counts: ListBuilder<Int64Builder>,
    unit: StringBuilder,
    description: StringBuilder,
    service_name: StringBuilder,
    function_name: StringBuilder,
    attributes: AttrMapBuilder,
    resource_attributes: AttrMapBuilder,
    scope_name: StringBuilder,
    rows: usize,
}

/// The per-point numbers; everything else comes from the metric and resource.
#[derive(Debug, Default)]
struct Point<'a> {
    time: u64,
    start: u64,
    value: Option<f64>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    bounds: Option<&'a [f64]>,
    bucket_counts: Option<&'a [u64]>,
    attributes: &'a [KeyValue],
}

/// The function a data point is about when its attributes name one:
/// `faas.name`, a `FunctionName` attribute, or the `FunctionName` dimension
/// of a CloudWatch metric stream (`Dimensions`, a key-value list). A metric
/// stream's resource names no function, and one request carries the
/// metrics of many functions.
fn point_function(attributes: &[KeyValue]) -> Option<&str> {
    attrs::find_str(attributes, "faas.name")
        .or_else(|| attrs::find_str(attributes, "FunctionName"))
        .or_else(
            || match attrs::find(attributes, "Dimensions")?.value.as_ref()? {
                any_value::Value::KvlistValue(list) => {
                    attrs::find_str(&list.values, "FunctionName")
                }
                _ => None,
            },
        )
}

/// How many data points (rows) `data` holds.
fn point_count(data: &Data) -> usize {
    match data {
        Data::Gauge(g) => g.data_points.len(),
        Data::Sum(s) => s.data_points.len(),
        Data::Histogram(h) => h.data_points.len(),
        Data::ExponentialHistogram(h) => h.data_points.len(),
        Data::Summary(s) => s.data_points.len(),
    }
}

/// What the points of one metric share.
#[derive(Debug)]
struct MetricContext<'a> {
    name: &'a str,
    kind: &'static str,
    unit: &'a str,
    description: &'a str,
    facts: &'a ResourceFacts,
    resource_attributes: &'a RepeatedAttrs<'a>,
    scope: Option<&'a str>,
}

impl MetricColumns {
    /// Builders sized for `rows` data points (at most [`rows_to_reserve`]):
    /// arrow's `new()` reserves 1,024 rows per column, which a one-point
    /// request would hold in the buffer until the next flush.
    fn with_capacity(rows: usize) -> Self {
        let rows = rows_to_reserve(rows);
        let ts = || TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        let item = |data_type| Arc::new(Field::new("item", data_type, true));
        MetricColumns {
            time: ts(),
            start_time: ts(),
            name: text_builder(rows, 24),
            kind: text_builder(rows, 9),
            value: Float64Builder::with_capacity(rows),
            count: Int64Builder::with_capacity(rows),
            sum: Float64Builder::with_capacity(rows),
            min: Float64Builder::with_capacity(rows),
            max: Float64Builder::with_capacity(rows),
            bounds: ListBuilder::with_capacity(Float64Builder::with_capacity(0), rows)
                .with_field(item(DataType::Float64)),
            bucket_counts: ListBuilder::with_capacity(Int64Builder::with_capacity(0), rows)
                .with_field(item(DataType::Int64)),
            unit: text_builder(rows, 4),
            description: text_builder(rows, 0),
            service_name: text_builder(rows, 16),
            function_name: text_builder(rows, 16),
            attributes: AttrMapBuilder::with_capacity(rows),
            resource_attributes: AttrMapBuilder::with_capacity(rows),
            scope_name: text_builder(rows, 16),
            rows: 0,
        }
    }

    fn append(&mut self, ctx: &MetricContext<'_>, p: Point<'_>) {
        self.time.append_value(nanos_to_micros(p.time));
        self.start_time
            .append_option(Some(p.start).filter(|s| *s > 0).map(nanos_to_micros));
        self.name.append_value(ctx.name);
        self.kind.append_value(ctx.kind);
        self.value.append_option(p.value);
        // Counts above i64::MAX cannot be real; saturate rather than wrap.
        self.count
            .append_option(p.count.map(|c| i64::try_from(c).unwrap_or(i64::MAX)));
        self.sum.append_option(p.sum);
        self.min.append_option(p.min);
        self.max.append_option(p.max);
        match p.bounds {
            Some(b) => {
                self.bounds.values().append_slice(b);
                self.bounds.append(true);
            }
            None => self.bounds.append_null(),
        }
        match p.bucket_counts {
            Some(c) => {
                for n in c {
                    self.bucket_counts
                        .values()
                        .append_value(i64::try_from(*n).unwrap_or(i64::MAX));
                }
                self.bucket_counts.append(true);
            }
            None => self.bucket_counts.append_null(),
        }
        self.unit
            .append_option(Some(ctx.unit).filter(|u| !u.is_empty()));
        self.description
            .append_option(Some(ctx.description).filter(|d| !d.is_empty()));
        self.service_name
            .append_option(ctx.facts.service_name.as_deref());
        self.function_name
            .append_option(point_function(p.attributes).or(ctx.facts.function_name.as_deref()));
        self.attributes.append(p.attributes);
        self.resource_attributes
            .append_repeated(ctx.resource_attributes);
        self.scope_name.append_option(ctx.scope);
        self.rows += 1;
    }

    fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.bounds.finish()),
            Arc::new(self.bucket_counts.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.function_name.finish()),
            self.attributes.finish()?,
            self.resource_attributes.finish()?,
            Arc::new(self.scope_name.finish()),
        ];
        RecordBatch::try_new(Table::Metrics.schema(), columns)
    }
}

fn number_value(v: Option<&number_data_point::Value>) -> Option<f64> {
    match v? {
        number_data_point::Value::AsDouble(d) => Some(*d),
        number_data_point::Value::AsInt(i) => Some(*i as f64),
    }
}

/// Appends every point of one metric, refusing the invalid ones.
fn append_metric(
    cols: &mut MetricColumns,
    out: &mut Normalized,
    ctx: &MetricContext<'_>,
    data: &Data,
) {
    let push = |cols: &mut MetricColumns, out: &mut Normalized, p: Point<'_>| {
        if p.time == 0 {
            out.reject(|| format!("metric {:?}: data point without time_unix_nano", ctx.name));
            return;
        }
        cols.append(ctx, p);
        out.accepted += 1;
    };
    match data {
        Data::Gauge(opentelemetry_proto::tonic::metrics::v1::Gauge { data_points })
        | Data::Sum(opentelemetry_proto::tonic::metrics::v1::Sum { data_points, .. }) => {
            for dp in data_points {
                let Some(value) = number_value(dp.value.as_ref()) else {
                    out.reject(|| format!("metric {:?}: data point without value", ctx.name));
                    continue;
                };
                let p = Point {
                    time: dp.time_unix_nano,
                    start: dp.start_time_unix_nano,
                    value: Some(value),
                    attributes: &dp.attributes,
                    ..Default::default()
                };
                push(cols, out, p);
            }
        }
        Data::Histogram(h) => {
            for dp in &h.data_points {
                if !dp.bucket_counts.is_empty()
                    && dp.bucket_counts.len() != dp.explicit_bounds.len() + 1
                {
                    out.reject(|| {
                        format!(
                            "metric {:?}: bucket_counts must be one longer than explicit_bounds",
                            ctx.name
                        )
                    });
                    continue;
                }
                let p = Point {
                    time: dp.time_unix_nano,
                    start: dp.start_time_unix_nano,
                    count: Some(dp.count),
                    sum: dp.sum,
                    min: dp.min,
                    max: dp.max,
                    bounds: Some(&dp.explicit_bounds),
                    bucket_counts: Some(&dp.bucket_counts),
                    attributes: &dp.attributes,
                    ..Default::default()
                };
                push(cols, out, p);
            }
        }
        Data::ExponentialHistogram(h) => {
            for dp in &h.data_points {
                let p = Point {
                    time: dp.time_unix_nano,
                    start: dp.start_time_unix_nano,
                    count: Some(dp.count),
                    sum: dp.sum,
                    min: dp.min,
                    max: dp.max,
                    attributes: &dp.attributes,
                    ..Default::default()
                };
                push(cols, out, p);
            }
        }
        Data::Summary(s) => {
            for dp in &s.data_points {
                // The 0 and 1 quantiles are the minimum and maximum (how a
                // CloudWatch metric stream sends Minimum and Maximum).
                let quantile = |q: f64| {
                    dp.quantile_values
                        .iter()
                        .find(|v| v.quantile == q)
                        .map(|v| v.value)
                };
                let p = Point {
                    time: dp.time_unix_nano,
                    start: dp.start_time_unix_nano,
                    count: Some(dp.count),
                    sum: Some(dp.sum),
                    min: quantile(0.0),
                    max: quantile(1.0),
                    attributes: &dp.attributes,
                    ..Default::default()
                };
                push(cols, out, p);
            }
        }
    }
}

fn kind_of(data: &Data) -> &'static str {
    match data {
        Data::Gauge(_) => "gauge",
        Data::Sum(_) => "sum",
        Data::Histogram(_) => "histogram",
        Data::ExponentialHistogram(_) => "exponential_histogram",
        Data::Summary(_) => "summary",
    }
}

/// The bytes the request's rows would repeat: each data point's row holds
/// its resource, its scope's name and its metric's name, unit and
/// description ([`super::repeated_bytes`]).
pub fn expansion(req: &ExportMetricsServiceRequest) -> usize {
    super::repeated_bytes(req.resource_metrics.iter().flat_map(|rm| {
        let resource = super::shared_bytes(rm.resource.as_ref());
        rm.scope_metrics.iter().flat_map(move |sm| {
            let scope = sm.scope.as_ref().map_or(0, |s| s.name.len());
            sm.metrics.iter().map(move |m| {
                let metric = m.name.len() + m.unit.len() + m.description.len();
                let points = m.data.as_ref().map_or(0, point_count);
                (resource + scope + metric, points)
            })
        })
    }))
}

pub fn normalize(
    req: &ExportMetricsServiceRequest,
) -> Result<Normalized, arrow::error::ArrowError> {
    let mut out = Normalized::default();
    let points: usize = req
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter_map(|m| m.data.as_ref())
        .map(point_count)
        .sum();
    let mut cols = MetricColumns::with_capacity(points);
    for rm in &req.resource_metrics {
        let empty = Vec::new();
        let res_attrs = rm.resource.as_ref().map_or(&empty, |r| &r.attributes);
        let facts = ResourceFacts::from_attributes(res_attrs);
        let rows = rm
            .scope_metrics
            .iter()
            .flat_map(|sm| &sm.metrics)
            .filter_map(|m| m.data.as_ref())
            .map(point_count)
            .sum();
        let repeated = RepeatedAttrs::new(res_attrs, rows);
        for sm in &rm.scope_metrics {
            let scope = sm
                .scope
                .as_ref()
                .map(|s| s.name.as_str())
                .filter(|s| !s.is_empty());
            for metric in &sm.metrics {
                let Some(data) = metric.data.as_ref() else {
                    out.reject(|| format!("metric {:?}: no data", metric.name));
                    continue;
                };
                let ctx = MetricContext {
                    name: &metric.name,
                    kind: kind_of(data),
                    unit: &metric.unit,
                    description: &metric.description,
                    facts: &facts,
                    resource_attributes: &repeated,
                    scope,
                };
                append_metric(&mut cols, &mut out, &ctx, data);
            }
        }
    }
    if cols.rows > 0 {
        out.batches.push(TableBatch {
            table: Table::Metrics,
            batch: cols.finish()?,
        });
    }
    Ok(out)
}
