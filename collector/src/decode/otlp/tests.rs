use arrow::array::{Array, AsArray};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::*;
use crate::model::{Table, TableBatch, UnbuiltSpans, schema};

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Value::StringValue("checkout".into())),
                    kv("faas.name", Value::StringValue("checkout-fn".into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn span(trace: Vec<u8>) -> Span {
    Span {
        trace_id: trace,
        span_id: vec![2; 8],
        parent_span_id: vec![3; 8],
        name: "GET /cart".into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_250_000_000,
        attributes: vec![
            kv("faas.invocation_id", Value::StringValue("req-1".into())),
            kv("faas.coldstart", Value::BoolValue(true)),
            kv("http.route", Value::StringValue("/cart".into())),
        ],
        ..Default::default()
    }
}

#[test]
fn spans_normalize_with_promoted_columns_and_partial_success() {
    let req = request(vec![span(vec![0xAB; 16]), span(vec![1; 15])]);
    let body = req.encode_to_vec();
    let n = decode(Signal::Traces, Encoding::Protobuf, &body, 0).expect("decodes");
    assert_eq!((n.accepted, n.rejected), (1, 1));
    assert!(
        n.reject_reason
            .as_deref()
            .unwrap_or("")
            .contains("16 bytes")
    );
    let b = &n.batches[0].batch;
    let col = |name: &str| b.column(b.schema().index_of(name).expect("column")).clone();
    assert_eq!(
        col(schema::TRACE_ID).as_string::<i32>().value(0),
        "ab".repeat(16)
    );
    assert_eq!(
        col(schema::PARENT_SPAN_ID).as_string::<i32>().value(0),
        "03".repeat(8)
    );
    assert_eq!(col(schema::KIND).as_string::<i32>().value(0), "server");
    assert_eq!(
        col(schema::FUNCTION_NAME).as_string::<i32>().value(0),
        "checkout-fn"
    );
    assert_eq!(
        col(schema::SERVICE_NAME).as_string::<i32>().value(0),
        "checkout"
    );
    assert_eq!(col(schema::REQUEST_ID).as_string::<i32>().value(0), "req-1");
    assert!(col(schema::COLD_START).as_boolean().value(0));
    let d = col(schema::DURATION_MS);
    assert_eq!(
        d.as_primitive::<arrow::datatypes::Float64Type>().value(0),
        250.0
    );

    let resp = response_body(Signal::Traces, Encoding::Protobuf, &n);
    let resp = ExportTraceServiceResponse::decode(resp.as_slice()).expect("response decodes");
    assert_eq!(resp.partial_success.map(|p| p.rejected_spans), Some(1));
}

/// A full success leaves `partialSuccess` out of a JSON answer; a partial
/// one names the rejected count and the reason, for every signal.
#[test]
fn json_answers_leave_partial_success_out_unless_something_was_rejected() {
    let whole = request(vec![span(vec![0xAB; 16])]).encode_to_vec();
    let n = decode(Signal::Traces, Encoding::Protobuf, &whole, 0).expect("decodes");
    assert_eq!(n.rejected, 0);
    for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
        let body = response_body(signal, Encoding::Json, &n);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v, serde_json::json!({}), "{signal:?}");
        assert!(response_body(signal, Encoding::Protobuf, &n).is_empty());
    }

    let part = request(vec![span(vec![0xAB; 16]), span(vec![1; 15])]).encode_to_vec();
    let n = decode(Signal::Traces, Encoding::Protobuf, &part, 0).expect("decodes");
    let reason = n.reject_reason.clone().expect("a reason");
    assert!(reason.contains("16 bytes"), "{reason}");
    // int64 as a string, as the protobuf JSON mapping (and so OTLP/JSON) has it.
    for (signal, count) in [
        (Signal::Traces, "rejectedSpans"),
        (Signal::Logs, "rejectedLogRecords"),
        (Signal::Metrics, "rejectedDataPoints"),
    ] {
        let body = response_body(signal, Encoding::Json, &n);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"partialSuccess": {count: "1", "errorMessage": reason}})
        );
    }
}

/// A request's valid spans come out in the order the flush writes files in
/// (hour of the start, trace id, start; ties in request order), each with
/// its own resource's and scope's columns; invalid spans are refused with
/// the first reason in request order.
#[test]
fn spans_come_out_in_file_order_with_their_own_resource_and_scope() {
    let hour_ns = 3_600_000_000_000_u64;
    let h = 1_700_002_800_000_000_000_u64; // an hour boundary
    assert_eq!(h % hour_ns, 0);
    let at = |name: &str, trace: u8, t: u64| Span {
        trace_id: vec![trace; 16],
        span_id: vec![2; 8],
        name: name.into(),
        start_time_unix_nano: t,
        end_time_unix_nano: t + 1_000,
        ..Default::default()
    };
    let mut bad_first = at("bad-first", 0x01, h);
    bad_first.trace_id.pop();
    let bad_second = at("bad-second", 0x00, h);
    let resource = |service: &str, scope: &str, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", Value::StringValue(service.into()))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(
                opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                    name: scope.into(),
                    ..Default::default()
                },
            ),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            resource(
                "a",
                "scope-a",
                vec![
                    at("a-30", 0x30, h + 10_000),
                    bad_first,
                    at("a-10-late", 0x10, h + 5_000),
                ],
            ),
            resource(
                "b",
                "scope-b",
                vec![
                    at("b-10-early", 0x10, h + 1_000),
                    at("b-05-last-hour", 0x05, h - 1_000),
                    bad_second,
                    at("b-20-tie-1", 0x20, h + 3_000),
                    at("b-20-tie-2", 0x20, h + 3_000),
                ],
            ),
        ],
    };
    let n = decode(Signal::Traces, Encoding::Protobuf, &req.encode_to_vec(), 0).expect("decodes");
    assert_eq!((n.accepted, n.rejected), (6, 2));
    let reason = n.reject_reason.as_deref().unwrap_or("");
    assert!(reason.contains("bad-first"), "{reason}");
    let b = &n.batches[0].batch;
    let text = |name: &str| -> Vec<String> {
        let c = b.column(b.schema().index_of(name).expect("column"));
        let c = c.as_string::<i32>();
        (0..c.len()).map(|i| c.value(i).to_string()).collect()
    };
    assert_eq!(
        text(schema::NAME),
        [
            "b-05-last-hour",
            "b-10-early",
            "a-10-late",
            "b-20-tie-1",
            "b-20-tie-2",
            "a-30"
        ]
    );
    for (row, name) in text(schema::NAME).iter().enumerate() {
        let service = &name[..1];
        assert_eq!(text(schema::SERVICE_NAME)[row], service);
        assert_eq!(text("scope_name")[row], format!("scope-{service}"));
        let res = b.column(
            b.schema()
                .index_of(schema::RESOURCE_ATTRIBUTES)
                .expect("column"),
        );
        let res = res.as_map().value(row);
        assert_eq!(res.column(1).as_string::<i32>().value(0), service);
    }
    // The flush's own sort leaves the rows where they are.
    let parts = crate::storage::parquet::sort_by_hour(Table::Spans, b).expect("sorts");
    let order: Vec<u32> = parts
        .iter()
        .flat_map(|(_, rows)| rows.values().to_vec())
        .collect();
    assert_eq!(order, (0..6).collect::<Vec<u32>>());
    assert_eq!(parts.len(), 2);
}

/// `duration_ms` is `end_time - time` of the stored (microsecond)
/// timestamps, to the microsecond, not the nanoseconds OTLP carried.
#[test]
fn span_durations_are_the_stored_timestamps_difference_in_whole_microseconds() {
    let mut s = span(vec![0xAB; 16]);
    s.start_time_unix_nano = 1_700_000_000_000_000_999;
    s.end_time_unix_nano = s.start_time_unix_nano + 1_234_567_891;
    let mut backwards = span(vec![0xCD; 16]);
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
    let body = request(vec![s, backwards]).encode_to_vec();
    let n = decode(Signal::Traces, Encoding::Protobuf, &body, 0).expect("decodes");
    let b = &n.batches[0].batch;
    let col = |name: &str| b.column(b.schema().index_of(name).expect("column")).clone();
    let micros = |name: &str, row: usize| {
        col(name)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .value(row)
    };
    let duration = col(schema::DURATION_MS);
    let duration = duration.as_primitive::<arrow::datatypes::Float64Type>();
    assert_eq!(micros(schema::TIME, 0), 1_700_000_000_000_000);
    assert_eq!(micros(schema::END_TIME, 0), 1_700_000_001_234_568);
    assert_eq!(duration.value(0), 1234.568);
    assert_eq!(
        duration.value(0) * 1000.0,
        (micros(schema::END_TIME, 0) - micros(schema::TIME, 0)) as f64
    );
    // An end before the start is clamped to the start.
    assert_eq!(duration.value(1), 0.0);
    assert_eq!(micros(schema::END_TIME, 1), micros(schema::TIME, 1));
    // The handler span's invocation record carries the same duration.
    let records = n
        .batches
        .iter()
        .find(|t| t.table == Table::InvocationRecords)
        .expect("invocation records");
    let rd = records
        .batch
        .column(
            records
                .batch
                .schema()
                .index_of(schema::DURATION_MS)
                .expect("column"),
        )
        .clone();
    assert_eq!(
        rd.as_primitive::<arrow::datatypes::Float64Type>().value(0),
        1234.568
    );
}

#[test]
fn json_with_upper_case_hex_is_normalized_to_lower_case() {
    let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
      "scopeSpans":[{"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
      "name":"op","kind":3,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
      "attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;
    let n = decode(Signal::Traces, Encoding::Json, body, 0).expect("decodes");
    assert_eq!(n.accepted, 1);
    let b = &n.batches[0].batch;
    let trace = b
        .column(b.schema().index_of("trace_id").expect("col"))
        .as_string::<i32>()
        .value(0)
        .to_string();
    assert_eq!(trace, "5b8efff798038103d269b633813fc60c");
    let kind = b
        .column(b.schema().index_of("kind").expect("col"))
        .as_string::<i32>()
        .value(0)
        .to_string();
    assert_eq!(kind, "client");
    let parent = b.column(b.schema().index_of("parent_span_id").expect("col"));
    assert!(parent.is_null(0));
}

#[test]
fn garbage_and_truncated_bodies_are_decode_errors() {
    assert!(
        decode(
            Signal::Traces,
            Encoding::Protobuf,
            &[0xff, 0xff, 0xff, 0x0f],
            0
        )
        .is_err()
    );
    assert!(decode(Signal::Logs, Encoding::Json, br#"{"resourceLogs":[{"#, 0).is_err());
}

/// Wraps `inner` as length-delimited field `tag`.
fn wrap(tag: u32, inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(inner.len() as u64, &mut out);
    out.extend_from_slice(inner);
    out
}

/// A hostile request: one span whose attribute nests arrays `depth` deep.
/// Built as bytes, because building it as a value would itself recurse.
pub(crate) fn deeply_nested_request(depth: usize) -> Vec<u8> {
    let mut any = vec![0x18, 0x01]; // AnyValue { int_value: 1 }
    for _ in 0..depth {
        any = wrap(5, &wrap(1, &any)); // AnyValue { array_value: ArrayValue { values: [any] } }
    }
    let mut kv = wrap(1, b"deep");
    kv.extend(wrap(2, &any));
    let mut span_bytes = span(vec![1; 16]).encode_to_vec();
    span_bytes.extend(wrap(9, &kv));
    wrap(1, &wrap(2, &wrap(2, &span_bytes)))
}

#[test]
fn deeply_nested_any_value_is_refused_without_overflowing() {
    // Shallow nesting decodes: the builder above is right.
    let n = decode(
        Signal::Traces,
        Encoding::Protobuf,
        &deeply_nested_request(5),
        0,
    )
    .expect("decodes");
    assert_eq!(n.accepted, 1);
    // 10,000 levels: prost stops at its recursion limit.
    let body = deeply_nested_request(10_000);
    assert!(decode(Signal::Traces, Encoding::Protobuf, &body, 0).is_err());
    let json = format!(
        "{}{}",
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"01010101010101010101010101010101","spanId":"0202020202020202","attributes":[{"key":"d","value":"#,
        "{\"arrayValue\":{\"values\":[".repeat(10_000)
    );
    assert!(decode(Signal::Traces, Encoding::Json, json.as_bytes(), 0).is_err());
}

/// A CloudWatch metric stream in OpenTelemetry 1.0.0 format (as the
/// OpenTelemetry Collector's Firehose receiver forwards it): the resource
/// names no function, the points carry it in their `Dimensions`, and the
/// statistics come as a summary with the 0 and 1 quantiles for Minimum and
/// Maximum.
#[test]
fn metric_stream_summaries_keep_min_max_and_the_function_of_each_point() {
    let point = |function: &str, sum: f64, min: f64, max: f64| {
        serde_json::json!({
            "startTimeUnixNano": "1764331140000000000", "timeUnixNano": "1764331200000000000",
            "count": "4", "sum": sum,
            "quantileValues": [{"quantile": 0.0, "value": min}, {"quantile": 0.99, "value": max},
                               {"quantile": 1.0, "value": max}],
            "attributes": [
                {"key": "Namespace", "value": {"stringValue": "AWS/Lambda"}},
                {"key": "MetricName", "value": {"stringValue": "ProvisionedConcurrencyUtilization"}},
                {"key": "Dimensions", "value": {"kvlistValue": {"values": [
                    {"key": "FunctionName", "value": {"stringValue": function}},
                    {"key": "Resource", "value": {"stringValue": format!("{function}:live")}}]}}}]
        })
    };
    let body = serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": [
            {"key": "cloud.provider", "value": {"stringValue": "aws"}},
            {"key": "cloud.region", "value": {"stringValue": "us-east-1"}}]},
        "scopeMetrics": [{"metrics": [
            {"name": "amazonaws.com/AWS/Lambda/ProvisionedConcurrencyUtilization", "unit": "None",
             "summary": {"dataPoints": [point("checkout", 1.0, 0.1, 0.4), point("billing", 3.2, 0.7, 0.9)]}},
            {"name": "faas.invocations", "sum": {"aggregationTemporality": 1, "isMonotonic": true,
             "dataPoints": [{"timeUnixNano": "1764331200000000000", "asInt": "7",
                             "attributes": [{"key": "faas.name", "value": {"stringValue": "orders"}}]},
                            {"timeUnixNano": "1764331200000000000", "asInt": "2"}]}}]}]
    }]});
    let n = decode(
        Signal::Metrics,
        Encoding::Json,
        body.to_string().as_bytes(),
        0,
    )
    .expect("decodes");
    assert_eq!((n.accepted, n.rejected), (4, 0));
    let b = &n.batches[0].batch;
    let col = |name: &str| b.column(b.schema().index_of(name).expect("column")).clone();
    let function = col(schema::FUNCTION_NAME);
    let function = function.as_string::<i32>();
    assert_eq!(function.value(0), "checkout");
    assert_eq!(function.value(1), "billing");
    assert_eq!(function.value(2), "orders");
    assert!(function.is_null(3), "no function anywhere");
    let f64s = |name: &str| {
        col(name)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(f64s("min")[..2], [Some(0.1), Some(0.7)]);
    assert_eq!(f64s("max")[..2], [Some(0.4), Some(0.9)]);
    assert_eq!(f64s("sum")[..2], [Some(1.0), Some(3.2)]);
    assert_eq!(f64s("value")[2..], [Some(7.0), Some(2.0)]);
}

/// An init span (X-Ray's `Initialization` subsegment) makes the handler
/// span of the same function in the same trace a cold start; other traces
/// and other functions of the trace are left as they said.
#[test]
fn init_spans_mark_their_invocation_cold() {
    let span = |trace: &str, id: &str, name: &str, kind: i32, rid: Option<&str>| {
        let mut attributes = vec![];
        if let Some(rid) = rid {
            attributes.push(
                serde_json::json!({"key": "faas.invocation_id", "value": {"stringValue": rid}}),
            );
        }
        serde_json::json!({"traceId": trace, "spanId": id, "name": name, "kind": kind,
            "startTimeUnixNano": "1764403200000000000", "endTimeUnixNano": "1764403200100000000",
            "attributes": attributes})
    };
    let resource = |function: &str, spans: Vec<serde_json::Value>| {
        serde_json::json!({"resource": {"attributes": [
            {"key": "faas.name", "value": {"stringValue": function}}]},
            "scopeSpans": [{"spans": spans}]})
    };
    let t1 = "11".repeat(16);
    let t2 = "22".repeat(16);
    let body = serde_json::json!({"resourceSpans": [
        resource("orders", vec![
            span(&t1, &"01".repeat(8), "Initialization", 1, None),
            span(&t1, &"02".repeat(8), "orders", 2, Some("r-cold")),
            span(&t2, &"03".repeat(8), "orders", 2, Some("r-other-trace")),
        ]),
        resource("billing", vec![span(&t1, &"04".repeat(8), "billing", 2, Some("r-other-function"))]),
    ]});
    let n = decode(
        Signal::Traces,
        Encoding::Json,
        body.to_string().as_bytes(),
        0,
    )
    .expect("decodes");
    let records = &n
        .batches
        .iter()
        .find(|b| b.table == crate::model::Table::InvocationRecords)
        .expect("records")
        .batch;
    let col = |name: &str| {
        records
            .column(records.schema().index_of(name).expect("column"))
            .clone()
    };
    let (ids, cold) = (col(schema::REQUEST_ID), col(schema::COLD_START));
    let mut got: Vec<(String, Option<bool>)> = (0..records.num_rows())
        .map(|i| {
            let c = cold.as_boolean();
            (
                ids.as_string::<i32>().value(i).to_string(),
                (!c.is_null(i)).then(|| c.value(i)),
            )
        })
        .collect();
    // Records come in the spans' file order, not the request's.
    got.sort();
    assert_eq!(
        got,
        [
            ("r-cold".to_string(), Some(true)),
            ("r-other-function".to_string(), None),
            ("r-other-trace".to_string(), None),
        ]
    );
}

/// A one-span request (what a Lambda function sends per invocation) holds
/// about what its values need until the next flush, not the 1,024-row
/// capacity arrow's builders reserve by default (~100 KiB per request).
#[test]
fn one_item_requests_of_every_signal_hold_little_memory() {
    let span = request(vec![span(vec![0xAB; 16])]).encode_to_vec();
    let point = serde_json::json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "faas.invocations", "sum": {"aggregationTemporality": 1, "isMonotonic": true,
         "dataPoints": [{"timeUnixNano": "1764331200000000000", "asInt": "7"}]}},
        {"name": "faas.duration", "histogram": {"aggregationTemporality": 1, "dataPoints": [
            {"timeUnixNano": "1764331200000000000", "count": "3", "sum": 12.5,
             "explicitBounds": [5, 10], "bucketCounts": ["1", "1", "1"]}]}}]}]}]})
    .to_string();
    let log = serde_json::json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1764331200000000000", "body": {"stringValue": "hello"}}]}]}]})
    .to_string();
    let requests = [
        (
            Signal::Traces,
            Encoding::Protobuf,
            span.as_slice(),
            Table::Spans,
        ),
        (
            Signal::Metrics,
            Encoding::Json,
            point.as_bytes(),
            Table::Metrics,
        ),
        (Signal::Logs, Encoding::Json, log.as_bytes(), Table::Logs),
    ];
    for (signal, encoding, body, table) in requests {
        let n = decode(signal, encoding, body, 0).expect("decodes");
        assert_eq!(n.rejected, 0, "{signal:?}");
        assert!(n.batches.iter().any(|b| b.table == table), "{signal:?}");
        for b in &n.batches {
            let bytes = b.batch.get_array_memory_size();
            assert!(
                bytes < 8 * 1024,
                "{:?}: {} rows hold {bytes} bytes",
                b.table,
                b.batch.num_rows()
            );
        }
    }
}

/// A small request left for the WAL writer to build is answered with the
/// counts and the first reason the full decoder gives, whatever the
/// encoding; an empty or all-invalid one has nothing to build.
#[test]
fn unbuilt_requests_report_what_the_decoder_would() {
    let instances = crate::instances::Instances::default();
    let mut bad_span = span(vec![1; 16]);
    bad_span.span_id = vec![7; 3];
    let requests = [
        request(vec![span(vec![0xAB; 16]), span(vec![1; 15]), bad_span]),
        request(vec![span(vec![1; 15])]),
        request(vec![]),
    ];
    for req in &requests {
        let proto = req.encode_to_vec();
        let json = serde_json::to_vec(req).expect("json");
        for (encoding, body) in [(Encoding::Protobuf, proto), (Encoding::Json, json)] {
            let full = decode(Signal::Traces, encoding, &body, 0).expect("decodes");
            let n = decode_for_ingest(Signal::Traces, encoding, &body, 0, &instances, usize::MAX)
                .expect("decodes");
            assert!(n.batches.is_empty());
            assert_eq!(
                (n.accepted, n.rejected, &n.reject_reason),
                (full.accepted, full.rejected, &full.reject_reason)
            );
            assert_eq!(n.unbuilt.is_some(), full.accepted > 0);
        }
    }
    let first = decode(
        Signal::Traces,
        Encoding::Protobuf,
        &requests[0].encode_to_vec(),
        0,
    )
    .expect("decodes");
    assert_eq!((first.accepted, first.rejected), (1, 2));
}

/// A request whose rows would repeat its resource more than the limit
/// allows is refused before any row is built, for every signal; the same
/// items under a small resource pass. 500 items under a 10 KB resource
/// count 3 × 10 KB × 500 = 15 MB.
#[test]
fn requests_that_would_repeat_a_large_resource_are_refused() {
    let padding =
        serde_json::json!({"key": "padding", "value": {"stringValue": "p".repeat(10_000)}});
    let resource = |big: bool| {
        let mut attrs =
            vec![serde_json::json!({"key": "service.name", "value": {"stringValue": "svc"}})];
        if big {
            attrs.push(padding.clone());
        }
        serde_json::json!({ "attributes": attrs })
    };
    let spans: Vec<serde_json::Value> = (0..500)
        .map(|i| serde_json::json!({"traceId": format!("{:032x}", i + 1), "spanId": format!("{:016x}", i + 1), "name": "s"}))
        .collect();
    let logs: Vec<serde_json::Value> = (0..500)
        .map(|_| serde_json::json!({"timeUnixNano": "1764331200000000000", "body": {"stringValue": "l"}}))
        .collect();
    let points: Vec<serde_json::Value> = (0..500)
        .map(|i| serde_json::json!({"timeUnixNano": "1764331200000000000", "asInt": i.to_string()}))
        .collect();
    let body = |signal: Signal, big: bool| {
        let r = resource(big);
        match signal {
            Signal::Traces => serde_json::json!({"resourceSpans": [{"resource": r, "scopeSpans": [{"spans": spans}]}]}),
            Signal::Logs => serde_json::json!({"resourceLogs": [{"resource": r, "scopeLogs": [{"logRecords": logs}]}]}),
            Signal::Metrics => serde_json::json!({"resourceMetrics": [{"resource": r, "scopeMetrics": [{"metrics": [
                {"name": "m", "gauge": {"dataPoints": points}}]}]}]}),
        }
        .to_string()
    };
    let instances = crate::instances::Instances::default();
    let limit = 8 << 20;
    for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
        let big = body(signal, true);
        assert!(big.len() < 200_000, "{signal:?}: {}", big.len());
        match decode_for_ingest(signal, Encoding::Json, big.as_bytes(), 0, &instances, limit) {
            Err(DecodeError::Repetitive { bytes, limit: l }) => {
                assert!(bytes > 15_000_000, "{signal:?}: {bytes}");
                assert_eq!(l, limit);
            }
            other => panic!("{signal:?}: expected a refusal, got {other:?}"),
        }
        let small = body(signal, false);
        let n = decode_for_ingest(
            signal,
            Encoding::Json,
            small.as_bytes(),
            0,
            &instances,
            limit,
        )
        .expect("decodes");
        assert_eq!((n.accepted, n.rejected), (500, 0), "{signal:?}");
    }
}

/// Every row of a resource holds the resource's attributes, each value
/// rendered as text, whether the resource has many rows (rendered once and
/// copied into each) or one: spans, log records and metric data points.
#[test]
fn every_row_of_a_resource_holds_its_attributes_in_every_signal() {
    let many = serde_json::json!({"attributes": [
        {"key": "service.name", "value": {"stringValue": "orders"}},
        {"key": "faas.max_memory", "value": {"intValue": "536870912"}},
        {"key": "ratio", "value": {"doubleValue": 0.5}},
        {"key": "warm", "value": {"boolValue": false}},
        {"key": "process.command_args", "value": {"arrayValue": {"values": [
            {"stringValue": "python"}, {"intValue": "3"}]}}},
        {"key": "nested", "value": {"kvlistValue": {"values": [
            {"key": "k", "value": {"boolValue": true}}]}}},
        {"key": "empty", "value": {}}]});
    let many_expected: [(&str, Option<&str>); 7] = [
        ("service.name", Some("orders")),
        ("faas.max_memory", Some("536870912")),
        ("ratio", Some("0.5")),
        ("warm", Some("false")),
        ("process.command_args", Some(r#"["python",3]"#)),
        ("nested", Some(r#"{"k":true}"#)),
        ("empty", None),
    ];
    let one = serde_json::json!({"attributes": [
        {"key": "service.name", "value": {"stringValue": "billing"}},
        {"key": "faas.max_memory", "value": {"intValue": "128"}}]});
    let one_expected = [
        ("service.name", Some("billing")),
        ("faas.max_memory", Some("128")),
    ];
    let t = |i: usize| format!("{}", 1_764_331_200_000_000_000_u64 + i as u64 * 1_000);
    let span = |i: usize| {
        serde_json::json!({"traceId": format!("{:032x}", i + 1), "spanId": format!("{:016x}", i + 1),
            "name": format!("s{i}"), "startTimeUnixNano": t(i), "endTimeUnixNano": t(i + 1)})
    };
    let log = |i: usize| serde_json::json!({"timeUnixNano": t(i), "body": {"stringValue": format!("l{i}")}});
    let point = |i: usize| serde_json::json!({"timeUnixNano": t(i), "asInt": "1"});
    let bodies = [
        (
            Signal::Traces,
            serde_json::json!({"resourceSpans": [
                {"resource": many, "scopeSpans": [{"spans": [span(0), span(1)]}, {"spans": [span(2)]}]},
                {"resource": one, "scopeSpans": [{"spans": [span(3)]}]}]}),
        ),
        (
            Signal::Logs,
            serde_json::json!({"resourceLogs": [
                {"resource": many, "scopeLogs": [{"logRecords": [log(0), log(1)]}, {"logRecords": [log(2)]}]},
                {"resource": one, "scopeLogs": [{"logRecords": [log(3)]}]}]}),
        ),
        (
            Signal::Metrics,
            serde_json::json!({"resourceMetrics": [
                {"resource": many, "scopeMetrics": [{"metrics": [
                    {"name": "a", "gauge": {"dataPoints": [point(0), point(1)]}},
                    {"name": "b", "gauge": {"dataPoints": [point(2)]}}]}]},
                {"resource": one, "scopeMetrics": [{"metrics": [
                    {"name": "c", "gauge": {"dataPoints": [point(3)]}}]}]}]}),
        ),
    ];
    for (signal, body) in bodies {
        let n = decode(signal, Encoding::Json, body.to_string().as_bytes(), 0).expect("decodes");
        assert_eq!((n.accepted, n.rejected), (4, 0), "{signal:?}");
        let b = &n.batches[0].batch;
        let maps = b.column(
            b.schema()
                .index_of(schema::RESOURCE_ATTRIBUTES)
                .expect("column"),
        );
        let maps = maps.as_map();
        let services = b.column(b.schema().index_of(schema::SERVICE_NAME).expect("column"));
        let services = services.as_string::<i32>();
        let mut seen = [0, 0];
        for row in 0..b.num_rows() {
            let map = maps.value(row);
            let (keys, values) = (
                map.column(0).as_string::<i32>(),
                map.column(1).as_string::<i32>(),
            );
            let got: Vec<(&str, Option<&str>)> = (0..map.len())
                .map(|i| (keys.value(i), values.is_valid(i).then(|| values.value(i))))
                .collect();
            let (expected, which) = match services.value(row) {
                "orders" => (&many_expected[..], 0),
                _ => (&one_expected[..], 1),
            };
            assert_eq!(got, expected, "{signal:?} row {row}");
            seen[which] += 1;
        }
        assert_eq!(seen, [3, 1], "{signal:?}: rows of each resource");
    }
}

/// A group commit's small requests are built into more than one batch when
/// their rows would repeat more than the limit between them (each batch
/// holds at least one request, however large), and the batches hold the
/// same rows, in the same order, as one batch would.
#[test]
fn a_group_whose_rows_would_repeat_too_much_is_built_in_several_batches() {
    let instances = crate::instances::Instances::default();
    let unbuilt: Vec<UnbuiltSpans> = (0..5u8)
        .map(|i| {
            let mut a = span(vec![0x10 + i; 16]);
            let mut b = span(vec![0x10 + i; 16]);
            a.span_id = vec![i + 1; 8];
            b.span_id = vec![i + 101; 8];
            let body = request(vec![a, b]).encode_to_vec();
            decode_for_ingest(
                Signal::Traces,
                Encoding::Protobuf,
                &body,
                0,
                &instances,
                usize::MAX,
            )
            .expect("decodes")
            .unbuilt
            .expect("small requests are left unbuilt")
        })
        .collect();
    let each = unbuilt[0].expansion;
    assert!(each > 0 && unbuilt.iter().all(|u| u.expansion == each));
    let span_ids = |batches: &[TableBatch]| -> (usize, Vec<String>) {
        let spans: Vec<_> = batches.iter().filter(|b| b.table == Table::Spans).collect();
        let ids = spans
            .iter()
            .flat_map(|b| {
                let c = b
                    .batch
                    .column(b.batch.schema().index_of(schema::SPAN_ID).expect("column"));
                let c = c.as_string::<i32>();
                (0..c.len())
                    .map(|i| c.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        (spans.len(), ids)
    };
    let (one, all_ids) = span_ids(&spans::build_group(&unbuilt, &instances).expect("builds"));
    assert_eq!((one, all_ids.len()), (1, 10));
    for (limit, batches) in [
        (2 * each, 3),
        (2 * each + 1, 3),
        (3 * each, 2),
        (each - 1, 5),
        (0, 5),
    ] {
        let built = spans::build_group_within(&unbuilt, &instances, limit).expect("builds");
        let (n, ids) = span_ids(&built);
        assert_eq!(n, batches, "limit {limit} (each request repeats {each})");
        assert_eq!(ids, all_ids, "limit {limit}");
        let records: usize = built
            .iter()
            .filter(|b| b.table == Table::InvocationRecords)
            .map(|b| b.batch.num_rows())
            .sum();
        assert_eq!(records, 10, "one invocation record per handler span");
    }
}
