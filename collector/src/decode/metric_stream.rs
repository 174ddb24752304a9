//! CloudWatch metric streams, in both output formats, as
//! `ExportMetricsServiceRequest`s of the OpenTelemetry 1.0 format's shape:
//! each statistic set is a summary point (`count`, `sum`, Minimum and
//! Maximum as the 0 and 1 quantiles) of a metric named
//! `amazonaws.com/<namespace>/<metric>`, with `Namespace`, `MetricName` and
//! `Dimensions` (a key-value list) attributes.
//!
//! - `opentelemetry1.0`: a record holds one or more requests, each prefixed
//!   by its length as a varint ([`from_otlp`]).
//! - `json`: one object per line with `namespace`, `metric_name`,
//!   `dimensions`, `timestamp` (ms, end of the period) and
//!   `value {max, min, sum, count}` ([`from_json`]).
//!
//! [`metric`] builds the same shape for `faasight generate`.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Metric, ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint, metric,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde::Deserialize;

/// One period's statistics of one CloudWatch metric.
#[derive(Debug, Clone, Copy)]
pub struct Statistics<'a> {
    pub namespace: &'a str,
    pub metric_name: &'a str,
    pub dimensions: &'a [(&'a str, &'a str)],
    pub unit: &'a str,
    pub start_nanos: u64,
    pub end_nanos: u64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// The statistics as the OpenTelemetry format sends them.
pub fn metric(s: &Statistics<'_>) -> Metric {
    let dimensions = KeyValue {
        key: "Dimensions".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: s.dimensions.iter().map(|(k, v)| text(k, v)).collect(),
            })),
        }),
        ..Default::default()
    };
    let point = SummaryDataPoint {
        start_time_unix_nano: s.start_nanos,
        time_unix_nano: s.end_nanos,
        count: s.count,
        sum: s.sum,
        quantile_values: vec![
            ValueAtQuantile {
                quantile: 0.0,
                value: s.min,
            },
            ValueAtQuantile {
                quantile: 1.0,
                value: s.max,
            },
        ],
        attributes: vec![
            text("Namespace", s.namespace),
            text("MetricName", s.metric_name),
            dimensions,
        ],
        ..Default::default()
    };
    Metric {
        name: format!("amazonaws.com/{}/{}", s.namespace, s.metric_name),
        unit: s.unit.into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![point],
        })),
        ..Default::default()
    }
}

/// Metrics of one AWS account and region (either may be unknown).
pub fn request(
    account_id: Option<&str>,
    region: Option<&str>,
    metrics: Vec<Metric>,
) -> ExportMetricsServiceRequest {
    let mut resource = vec![text("cloud.provider", "aws")];
    resource.extend(account_id.map(|a| text("cloud.account.id", a)));
    resource.extend(region.map(|r| text("cloud.region", r)));
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Whether a record is in the JSON output format: its first line names
/// the stream and the metric.
pub fn is_json(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        metric_stream_name: Option<serde::de::IgnoredAny>,
        metric_name: Option<serde::de::IgnoredAny>,
    }
    let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
    serde_json::from_slice::<Probe>(first)
        .is_ok_and(|p| p.metric_stream_name.is_some() && p.metric_name.is_some())
}

/// One line of a JSON-format record.
#[derive(Debug, Deserialize)]
struct JsonLine {
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    region: Option<String>,
    namespace: String,
    metric_name: String,
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
    /// Epoch milliseconds: the end of the period.
    timestamp: i64,
    value: JsonValue,
    #[serde(default)]
    unit: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JsonValue {
    max: f64,
    min: f64,
    sum: f64,
    count: f64,
}

/// A JSON-format record, one request per line (each line names its own
/// account and region).
pub fn from_json(data: &[u8]) -> Result<Vec<ExportMetricsServiceRequest>, String> {
    let mut out = Vec::new();
    for (n, line) in data.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let m: JsonLine = serde_json::from_slice(line)
            .map_err(|e| format!("metric stream line {}: {e}", n + 1))?;
        if m.timestamp <= 0 || !m.value.count.is_finite() || m.value.count < 0.0 {
            return Err(format!(
                "metric stream line {}: bad timestamp or count",
                n + 1
            ));
        }
        let end_nanos = u64::try_from(m.timestamp)
            .unwrap_or(0)
            .saturating_mul(1_000_000);
        let dimensions: Vec<(&str, &str)> = m
            .dimensions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let statistics = Statistics {
            namespace: &m.namespace,
            metric_name: &m.metric_name,
            dimensions: &dimensions,
            unit: m.unit.as_deref().unwrap_or_default(),
            start_nanos: end_nanos.saturating_sub(60_000_000_000),
            end_nanos,
            count: m.value.count as u64,
            sum: m.value.sum,
            min: m.value.min,
            max: m.value.max,
        };
        out.push(request(
            m.account_id.as_deref(),
            m.region.as_deref(),
            vec![metric(&statistics)],
        ));
    }
    Ok(out)
}

/// The length-delimited requests of an OpenTelemetry-format record.
pub fn from_otlp(data: &[u8]) -> Result<Vec<ExportMetricsServiceRequest>, String> {
    let mut rest = data;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let request =
            ExportMetricsServiceRequest::decode_length_delimited(&mut rest).map_err(|e| {
                format!(
                    "neither CloudWatch Logs subscription data nor a metric stream record \
                     (length-delimited OpenTelemetry protobuf): {e}"
                )
            })?;
        out.push(request);
    }
    Ok(out)
}
