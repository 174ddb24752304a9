//! Stored spans back into OTLP (`TracesData`), the form Tempo's API answers in.
//!
//! Spans are grouped by resource (service + resource attributes) and scope.
//! Attribute values come back as strings: the tables keep them as text.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, TracesData};

use super::SpanRecord;

fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

fn key_values(pairs: &[(String, String)]) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(string_value(v)),
            ..Default::default()
        })
        .collect()
}

/// A JSON value (events and links keep typed attributes) as an OTLP value.
fn json_value(v: &serde_json::Value) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        serde_json::Value::Bool(b) => V::BoolValue(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => V::StringValue(s.clone()),
        serde_json::Value::Null => return AnyValue { value: None },
        other => V::StringValue(other.to_string()),
    };
    AnyValue { value: Some(value) }
}

fn json_attributes(v: Option<&serde_json::Value>) -> Vec<KeyValue> {
    v.and_then(|v| v.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(json_value(v)),
                    ..Default::default()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn json_array(raw: Option<&str>) -> Vec<serde_json::Value> {
    raw.and_then(|r| serde_json::from_str::<Vec<serde_json::Value>>(r).ok())
        .unwrap_or_default()
}

pub fn kind_code(kind: &str) -> i32 {
    (match kind {
        "internal" => SpanKind::Internal,
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }) as i32
}

pub fn status_code(status: &str) -> i32 {
    (match status {
        "ok" => StatusCode::Ok,
        "error" => StatusCode::Error,
        _ => StatusCode::Unset,
    }) as i32
}

fn nanos(us: i64) -> u64 {
    u64::try_from(us).unwrap_or(0).saturating_mul(1_000)
}

fn otlp_span(s: &SpanRecord) -> Span {
    let events = json_array(s.events.as_deref())
        .iter()
        .map(|e| Event {
            time_unix_nano: e
                .get("time_unix_nano")
                .and_then(|t| t.as_u64())
                .unwrap_or(0),
            name: e
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .into(),
            attributes: json_attributes(e.get("attributes")),
            dropped_attributes_count: 0,
        })
        .collect();
    let links = json_array(s.links.as_deref())
        .iter()
        .map(|l| {
            let id = |k: &str| {
                l.get(k)
                    .and_then(|v| v.as_str())
                    .and_then(|h| hex::decode(h).ok())
                    .unwrap_or_default()
            };
            Link {
                trace_id: id("trace_id"),
                span_id: id("span_id"),
                trace_state: String::new(),
                attributes: json_attributes(l.get("attributes")),
                dropped_attributes_count: 0,
                flags: 0,
            }
        })
        .collect();
    Span {
        trace_id: hex::decode(&s.trace_id).unwrap_or_default(),
        span_id: hex::decode(&s.span_id).unwrap_or_default(),
        trace_state: String::new(),
        parent_span_id: s
            .parent_span_id
            .as_deref()
            .and_then(|p| hex::decode(p).ok())
            .unwrap_or_default(),
        flags: 0,
        name: s.name.clone(),
        kind: kind_code(&s.kind),
        start_time_unix_nano: nanos(s.start_us),
        end_time_unix_nano: nanos(s.end_us),
        attributes: key_values(&s.attributes),
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links,
        dropped_links_count: 0,
        status: Some(Status {
            message: s.status_message.clone().unwrap_or_default(),
            code: status_code(&s.status_code),
        }),
    }
}

/// The spans as OTLP, one `ResourceSpans` per resource, one `ScopeSpans` per scope.
pub fn traces_data(spans: &[SpanRecord]) -> TracesData {
    type Key = (Vec<(String, String)>, String);
    let mut groups: BTreeMap<Key, Vec<&SpanRecord>> = BTreeMap::new();
    for s in spans {
        let mut res = s.resource_attributes.clone();
        if let Some(svc) = &s.service_name
            && !res.iter().any(|(k, _)| k == "service.name")
        {
            res.push(("service.name".into(), svc.clone()));
        }
        res.sort();
        let scope = s.scope_name.clone().unwrap_or_default();
        groups.entry((res, scope)).or_default().push(s);
    }
    let mut by_resource: BTreeMap<Vec<(String, String)>, Vec<ScopeSpans>> = BTreeMap::new();
    for ((res, scope), spans) in groups {
        by_resource.entry(res).or_default().push(ScopeSpans {
            scope: Some(InstrumentationScope {
                name: scope,
                ..Default::default()
            }),
            spans: spans.into_iter().map(otlp_span).collect(),
            schema_url: String::new(),
        });
    }
    TracesData {
        resource_spans: by_resource
            .into_iter()
            .map(|(res, scope_spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: key_values(&res),
                    ..Default::default()
                }),
                scope_spans,
                schema_url: String::new(),
            })
            .collect(),
    }
}
