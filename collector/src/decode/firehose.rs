//! `POST /v1/firehose`: an Amazon Data Firehose HTTP-endpoint delivery of
//! CloudWatch Logs subscription data. Each record's `data` is base64 of
//! gzip'd JSON (already-decompressed JSON is accepted too). `DATA_MESSAGE`
//! log events become `logs` rows, and Lambda platform lines among them
//! become invocation records (function from the log group
//! `/aws/lambda/<name>`); `CONTROL_MESSAGE` records are skipped.
//!
//! The same endpoint takes a CloudWatch metric stream delivered by Firehose,
//! in either output format (see [`super::metric_stream`]): its records
//! become `metrics` rows, so Lambda's provisioned concurrency metrics reach
//! the `idle_provisioned_concurrency` rule.
//!
//! A malformed delivery is refused whole, so Firehose retries it and
//! nothing is stored half-way.

use base64::Engine;
use serde::Deserialize;

use super::invocations::{self, RecordColumns};
use super::lambda_report;
use super::metric_stream;
use super::otlp::logs::{LogColumns, LogRow};
use crate::model::{Normalized, Table, TableBatch};
use crate::receive::decompress::{DecompressError, decompress};

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum FirehoseError {
    #[error("body is not a Firehose delivery: {0}")]
    Body(String),
    #[error("record {0}: {1}")]
    Record(usize, String),
    #[error("could not build rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("the records inflate to more than {0} bytes in all (four times --max-body-size)")]
    Inflated(usize),
    #[error(
        "the records' rows would repeat {bytes} bytes of what they share (a log \
         group, stream and owner; a metric stream's resource), more than the limit \
         of {limit} (four times --max-body-size)"
    )]
    Repetitive { bytes: usize, limit: usize },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delivery {
    request_id: Option<String>,
    records: Vec<DeliveryRecord>,
}

#[derive(Debug, Deserialize)]
struct DeliveryRecord {
    data: String,
}

/// CloudWatch Logs subscription data (also what the CloudWatch poller
/// writes to the WAL).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub message_type: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub log_group: String,
    #[serde(default)]
    pub log_stream: String,
    #[serde(default)]
    pub log_events: Vec<LogEvent>,
}

/// One CloudWatch log event.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct LogEvent {
    #[serde(default)]
    pub id: String,
    pub timestamp: i64,
    pub message: String,
}

/// The function a log group belongs to: `/aws/lambda/<name>`, or the group.
pub fn function_of(log_group: &str) -> &str {
    log_group.strip_prefix("/aws/lambda/").unwrap_or(log_group)
}

/// The delivery's request id, for the answer (also on refusals).
pub fn request_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Id {
        request_id: Option<String>,
    }
    serde_json::from_slice::<Id>(body).ok()?.request_id
}

/// Decodes a delivery; `limit` caps every record's decompressed size.
/// `max_expanded` bounds what the delivery becomes in memory: its records
/// inflated all together, and the bytes its rows repeat (see
/// [`decode_subscriptions`]; a metric stream's rows repeat its resource,
/// `otlp::metrics::expansion`). Each record used to be inflated up to the
/// limit on its own, so a 16 MiB delivery of small gzip bombs could inflate
/// to gigabytes.
pub fn decode(
    body: &[u8],
    now_micros: i64,
    max_expanded: usize,
) -> Result<Normalized, FirehoseError> {
    let delivery: Delivery =
        serde_json::from_slice(body).map_err(|e| FirehoseError::Body(e.to_string()))?;
    let _ = delivery.request_id;
    let mut subs = Vec::with_capacity(delivery.records.len());
    let mut metrics = Vec::new();
    let mut inflated = 0usize;
    for (i, rec) in delivery.records.iter().enumerate() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rec.data.trim())
            .map_err(|e| FirehoseError::Record(i, format!("data is not base64: {e}")))?;
        let json = if raw.starts_with(&[0x1f, 0x8b]) {
            let left = max_expanded.saturating_sub(inflated);
            decompress(Some("gzip"), &raw, left).map_err(|e| match e {
                DecompressError::TooLarge { .. } => FirehoseError::Inflated(max_expanded),
                e => FirehoseError::Record(i, e.to_string()),
            })?
        } else {
            std::borrow::Cow::Borrowed(raw.as_slice())
        };
        inflated += json.len();
        let requests = match json.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') if metric_stream::is_json(&json) => metric_stream::from_json(&json),
            Some(b'{') => {
                let sub: Subscription = serde_json::from_slice(&json).map_err(|e| {
                    FirehoseError::Record(i, format!("not CloudWatch Logs subscription data: {e}"))
                })?;
                subs.push(sub);
                continue;
            }
            _ => metric_stream::from_otlp(&json),
        };
        let requests = requests.map_err(|e| FirehoseError::Record(i, e))?;
        metrics.extend(requests.into_iter().map(|r| (i, r)));
    }
    let mut out = decode_subscriptions(&subs, now_micros, max_expanded)?;
    let repeated = metrics
        .iter()
        .map(|(_, request)| super::otlp::metrics::expansion(request))
        .fold(0, usize::saturating_add);
    if repeated > max_expanded {
        return Err(FirehoseError::Repetitive {
            bytes: repeated,
            limit: max_expanded,
        });
    }
    for (i, request) in &metrics {
        let n = super::otlp::metrics::normalize(request)?;
        if let Some(reason) = n.reject_reason {
            return Err(FirehoseError::Record(
                *i,
                format!("metric stream: {reason}"),
            ));
        }
        out.accepted += n.accepted;
        out.batches.extend(n.batches);
    }
    Ok(out)
}

/// Log rows and invocation records of CloudWatch subscription messages;
/// only `DATA_MESSAGE`s carry events. Every row holds its message's log
/// group (twice: as the function and as an attribute), stream and owner;
/// messages whose rows would repeat more than `max_repeated` bytes of them
/// are refused.
pub fn decode_subscriptions(
    subs: &[Subscription],
    now_micros: i64,
    max_repeated: usize,
) -> Result<Normalized, FirehoseError> {
    let repeated = super::otlp::repeated_bytes(subs.iter().map(|s| {
        let shared = 2 * s.log_group.len() + s.log_stream.len();
        (
            shared + s.owner.as_ref().map_or(0, |o| 2 * o.len()),
            s.log_events.len(),
        )
    }));
    if repeated > max_repeated {
        return Err(FirehoseError::Repetitive {
            bytes: repeated,
            limit: max_repeated,
        });
    }
    let mut out = Normalized::default();
    let events = subs.iter().map(|s| s.log_events.len()).sum();
    let mut logs = LogColumns::with_capacity(events);
    let mut records = RecordColumns::with_capacity(1);
    for sub in subs {
        if sub.message_type != "DATA_MESSAGE" {
            continue;
        }
        let function = function_of(&sub.log_group);
        for ev in &sub.log_events {
            let time = ev.timestamp.saturating_mul(1000);
            if let Some(r) = invocations::from_log_message(&ev.message, function, time) {
                records.append(&r);
            }
            let request_id = match lambda_report::parse(&ev.message) {
                Some(lambda_report::PlatformLine::Report(r)) => Some(r.request_id),
                Some(
                    lambda_report::PlatformLine::Start { request_id, .. }
                    | lambda_report::PlatformLine::End { request_id },
                ) => Some(request_id),
                _ => None,
            };
            logs.append(LogRow {
                time_micros: time,
                observed_micros: now_micros,
                body: Some(ev.message.trim_end_matches('\n').into()),
                service_name: Some(function),
                function_name: Some(function.to_string()),
                request_id,
                scope_name: Some("cloudwatch"),
                ..Default::default()
            });
            logs.attributes_mut().append_pairs([
                ("aws.log.group.names", sub.log_group.as_str()),
                ("aws.log.stream.names", sub.log_stream.as_str()),
                ("cloudwatch.event_id", ev.id.as_str()),
            ]);
            let owner = sub.owner.as_deref().unwrap_or_default();
            logs.resource_attributes_mut()
                .append_pairs([("faas.name", function), ("cloud.account.id", owner)]);
            out.accepted += 1;
        }
    }
    if !logs.is_empty() {
        out.batches.push(TableBatch {
            table: Table::Logs,
            batch: logs.finish()?,
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

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The Powertools sample from `lambda-samples.txt`: base64(gzip(JSON)).
    const SAMPLE: &str = "H4sIAAAAAAAAAHWPwQqCQBCGX0Xm7EFtK+smZBEUgXoLCdMhFtKV3akI8d0bLYmibvPPN3wz00CJxmQnTO41whwWQRIctmEcB6sQbFC3CjW3XW8kxpOpP+OC22d1Wml1qZkQGtoMsScxaczKN3plG8zlaHIta5KqWsozoTYw3/djzwhpLwivWFGHGpAFe7DL68JlBUk+l7KSN7tCOEJ4M3/qOI49vMHj+zCKdlFqLaU2ZHV2a4Ct/an0/ivdX8oYc1UVX860fQDQiMdxRQEAAA==";

    #[test]
    fn powertools_sample_and_plain_json_decode() {
        let body =
            format!(r#"{{"requestId":"r-1","timestamp":1,"records":[{{"data":"{SAMPLE}"}}]}}"#);
        let n = decode(body.as_bytes(), 0, 1 << 20).expect("decodes");
        assert!(n.accepted > 0);
        assert_eq!(request_id(body.as_bytes()).as_deref(), Some("r-1"));
        let plain = r#"{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/aws/lambda/echo-nodejs","logStream":"s","subscriptionFilters":["f"],"logEvents":[{"id":"1","timestamp":1552518348220,"message":"REPORT RequestId: 6234bffe-149a-b642-81ff-2e8e376d8aff\tDuration: 46.84 ms\tBilled Duration: 47 ms \tMemory Size: 192 MB\tMax Memory Used: 72 MB\t\n"}]}"#;
        let data = base64::engine::general_purpose::STANDARD.encode(plain);
        let body =
            format!(r#"{{"requestId":"r-2","timestamp":1,"records":[{{"data":"{data}"}}]}}"#);
        let n = decode(body.as_bytes(), 0, 1 << 20).expect("decodes");
        assert_eq!(n.accepted, 1);
        let records = n
            .batches
            .iter()
            .find(|b| b.table == Table::InvocationRecords)
            .expect("a record");
        assert_eq!(records.batch.num_rows(), 1);
        assert_eq!(function_of("/aws/lambda/echo-nodejs"), "echo-nodejs");
    }

    #[test]
    fn control_messages_are_skipped_and_bad_records_refuse_the_delivery() {
        let control = base64::engine::general_purpose::STANDARD.encode(
            r#"{"messageType":"CONTROL_MESSAGE","logGroup":"","logStream":"","logEvents":[]}"#,
        );
        let body =
            format!(r#"{{"requestId":"r","timestamp":1,"records":[{{"data":"{control}"}}]}}"#);
        assert_eq!(decode(body.as_bytes(), 0, 1 << 20).expect("ok").accepted, 0);
        assert!(matches!(
            decode(br#"{"requestId":"r","records":[{"data":"%%%"}]}"#, 0, 1024),
            Err(FirehoseError::Record(0, _))
        ));
        assert!(matches!(
            decode(b"[]", 0, 1024),
            Err(FirehoseError::Body(_))
        ));
        let not_sub = base64::engine::general_purpose::STANDARD.encode("{\"hello\":1}");
        let body = format!(r#"{{"requestId":"r","records":[{{"data":"{not_sub}"}}]}}"#);
        assert!(matches!(
            decode(body.as_bytes(), 0, 1024),
            Err(FirehoseError::Record(0, _))
        ));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn subscription(log_group: &str, messages: &[String]) -> Vec<u8> {
        let events: Vec<serde_json::Value> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| serde_json::json!({"id": i.to_string(), "timestamp": 1_764_331_200_000i64, "message": m}))
            .collect();
        serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "123456789012",
            "logGroup": log_group, "logStream": "s", "subscriptionFilters": ["f"],
            "logEvents": events})
        .to_string()
        .into_bytes()
    }

    /// The records of a delivery share one budget: ten records that each
    /// inflate to 1 MiB pass a 16 MiB budget and are refused under 8 MiB,
    /// though each is far below it on its own.
    #[test]
    fn records_inflate_within_one_budget_for_the_whole_delivery() {
        let record = gzip(&subscription("/aws/lambda/f", &["x".repeat(1 << 20)]));
        assert!(record.len() < 64 << 10, "{}", record.len());
        let body = delivery(&vec![record; 10]);
        let n = decode(body.as_bytes(), 0, 16 << 20).expect("within budget");
        assert_eq!(n.accepted, 10);
        assert!(matches!(
            decode(body.as_bytes(), 0, 8 << 20),
            Err(FirehoseError::Inflated(limit)) if limit == 8 << 20
        ));
    }

    /// Every log row holds its message's log group, stream and owner: a
    /// 100 KB log group over 1,000 one-byte events (a 220 KB delivery)
    /// would repeat ~200 MB and is refused before any row is built; the
    /// same events under a real name are stored.
    #[test]
    fn events_that_would_repeat_a_huge_log_group_are_refused() {
        let events = vec!["e".to_string(); 1_000];
        let huge = subscription(&format!("/aws/lambda/{}", "g".repeat(100_000)), &events);
        let body = delivery(&[huge]);
        assert!(body.len() < 250_000);
        match decode(body.as_bytes(), 0, 16 << 20) {
            Err(FirehoseError::Repetitive { bytes, limit }) => {
                assert!(bytes > 200_000_000, "{bytes}");
                assert_eq!(limit, 16 << 20);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let body = delivery(&[subscription("/aws/lambda/f", &events)]);
        assert_eq!(
            decode(body.as_bytes(), 0, 16 << 20).expect("ok").accepted,
            1_000
        );
    }

    fn delivery(records: &[Vec<u8>]) -> String {
        let records: Vec<serde_json::Value> = records
            .iter()
            .map(|r| serde_json::json!({"data": base64::engine::general_purpose::STANDARD.encode(r)}))
            .collect();
        serde_json::json!({"requestId": "m", "timestamp": 1, "records": records}).to_string()
    }

    fn metric_rows(n: &Normalized) -> Vec<(String, String, f64, f64, f64)> {
        use arrow::array::AsArray;
        use arrow::datatypes::Float64Type;
        let mut out = Vec::new();
        for tb in n.batches.iter().filter(|b| b.table == Table::Metrics) {
            let b = &tb.batch;
            let col = |c: &str| b.column(b.schema().index_of(c).expect("column")).clone();
            let (name, function) = (col("name"), col("function_name"));
            let (sum, min, max) = (col("sum"), col("min"), col("max"));
            for i in 0..b.num_rows() {
                out.push((
                    name.as_string::<i32>().value(i).to_string(),
                    function.as_string::<i32>().value(i).to_string(),
                    sum.as_primitive::<Float64Type>().value(i),
                    min.as_primitive::<Float64Type>().value(i),
                    max.as_primitive::<Float64Type>().value(i),
                ));
            }
        }
        out
    }

    #[test]
    fn metric_streams_in_json_format_become_metrics_rows() {
        let record = concat!(
            r#"{"metric_stream_name":"s","account_id":"123456789012","region":"us-east-1","namespace":"AWS/Lambda","metric_name":"ProvisionedConcurrencyUtilization","dimensions":{"FunctionName":"checkout","Resource":"checkout:live"},"timestamp":1764403200000,"value":{"max":0.5,"min":0.1,"sum":0.9,"count":3.0},"unit":"None"}"#,
            "\n",
            r#"{"metric_stream_name":"s","account_id":"123456789012","region":"us-east-1","namespace":"AWS/Lambda","metric_name":"ProvisionedConcurrentExecutions","dimensions":{"FunctionName":"checkout","Resource":"checkout:live"},"timestamp":1764403200000,"value":{"max":5.0,"min":1.0,"sum":9.0,"count":3.0},"unit":"Count"}"#,
            "\n"
        );
        let n = decode(
            delivery(&[record.as_bytes().to_vec()]).as_bytes(),
            0,
            1 << 20,
        )
        .expect("decodes");
        assert_eq!(n.accepted, 2);
        assert_eq!(
            metric_rows(&n),
            [
                (
                    "amazonaws.com/AWS/Lambda/ProvisionedConcurrencyUtilization".to_string(),
                    "checkout".to_string(),
                    0.9,
                    0.1,
                    0.5
                ),
                (
                    "amazonaws.com/AWS/Lambda/ProvisionedConcurrentExecutions".to_string(),
                    "checkout".to_string(),
                    9.0,
                    1.0,
                    5.0
                ),
            ]
        );
        // A bad line refuses the whole delivery.
        let bad = format!("{record}{{\"metric_stream_name\":\"s\",\"metric_name\":\"x\"}}\n");
        assert!(matches!(
            decode(delivery(&[bad.into_bytes()]).as_bytes(), 0, 1 << 20),
            Err(FirehoseError::Record(0, _))
        ));
    }

    /// Every metrics row holds its resource: a metric stream record of
    /// 1,000 points under a 100 KB resource (a ~350 KB delivery) would
    /// repeat ~300 MB and is refused before any row is built; the same
    /// points under the stream's own resource are stored.
    #[test]
    fn metric_stream_records_that_would_repeat_a_huge_resource_are_refused() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;

        let line = r#"{"metric_stream_name":"s","namespace":"AWS/Lambda","metric_name":"Duration","dimensions":{"FunctionName":"f"},"timestamp":1764403200000,"value":{"max":1,"min":1,"sum":1,"count":1}}"#;
        let mut request = metric_stream::from_json(line.as_bytes())
            .expect("request")
            .remove(0);
        let metric = &mut request.resource_metrics[0].scope_metrics[0].metrics[0];
        let Some(Data::Summary(summary)) = &mut metric.data else {
            panic!("a metric stream statistic set is a summary");
        };
        summary.data_points = vec![summary.data_points[0].clone(); 1_000];
        let body = delivery(&[request.encode_length_delimited_to_vec()]);
        let n = decode(body.as_bytes(), 0, 16 << 20).expect("decodes");
        assert_eq!(n.accepted, 1_000);

        let resource = request.resource_metrics[0]
            .resource
            .as_mut()
            .expect("resource");
        resource.attributes.push(KeyValue {
            key: "padding".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("p".repeat(100_000))),
            }),
            ..Default::default()
        });
        let body = delivery(&[request.encode_length_delimited_to_vec()]);
        assert!(body.len() < 400_000, "{}", body.len());
        match decode(body.as_bytes(), 0, 16 << 20) {
            Err(FirehoseError::Repetitive { bytes, limit }) => {
                assert!(bytes > 300_000_000, "{bytes}");
                assert_eq!(limit, 16 << 20);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn metric_streams_in_opentelemetry_format_become_metrics_rows() {
        let n = decode(
            delivery(&[b"{\"metric_stream_name\":\"s\",\"metric_name\":\"m\",\"namespace\":\"AWS/Lambda\",\"timestamp\":1764403200000,\"value\":{\"max\":1,\"min\":1,\"sum\":1,\"count\":1}}".to_vec()])
                .as_bytes(),
            0,
            1 << 20,
        )
        .expect("decodes");
        assert_eq!(metric_rows(&n).len(), 1);
        // Two length-delimited requests in one record, as a stream sends.
        let request = |function: &str, sum: f64| {
            let line = format!(
                r#"{{"metric_stream_name":"s","namespace":"AWS/Lambda","metric_name":"ProvisionedConcurrencyUtilization","dimensions":{{"FunctionName":"{function}"}},"timestamp":1764403200000,"value":{{"max":{sum},"min":0.0,"sum":{sum},"count":1.0}}}}"#
            );
            let mut requests = metric_stream::from_json(line.as_bytes()).expect("request");
            requests.remove(0)
        };
        let mut record = request("a", 0.25).encode_length_delimited_to_vec();
        record.extend(request("b", 0.75).encode_length_delimited_to_vec());
        let n = decode(delivery(&[record.clone()]).as_bytes(), 0, 1 << 20).expect("decodes");
        let rows = metric_rows(&n);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].1.as_str(), rows[0].2), ("a", 0.25));
        assert_eq!((rows[1].1.as_str(), rows[1].2), ("b", 0.75));
        // Truncated protobuf and random bytes are refused, naming the record.
        let truncated = record[..record.len() - 3].to_vec();
        for bad in [truncated, vec![0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]] {
            let err = decode(delivery(&[record.clone(), bad]).as_bytes(), 0, 1 << 20)
                .expect_err("refused");
            assert!(
                matches!(&err, FirehoseError::Record(1, m) if m.contains("metric stream record")),
                "{err}"
            );
        }
    }
}
