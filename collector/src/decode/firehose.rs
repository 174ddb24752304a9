//! `POST /v1/firehose`: an Amazon Data Firehose HTTP-endpoint delivery of
//! CloudWatch Logs subscription data. Each record's `data` is base64 of
//! gzip'd JSON (already-decompressed JSON is accepted too). `DATA_MESSAGE`
//! log events become `logs` rows, and Lambda platform lines among them
//! become invocation records (function from the log group
//! `/aws/lambda/<name>`); `CONTROL_MESSAGE` records are skipped.
//!
//! A malformed delivery is refused whole, so Firehose retries it and
//! nothing is stored half-way.

use base64::Engine;
use serde::Deserialize;

use super::invocations::{self, RecordColumns};
use super::lambda_report;
use super::otlp::logs::{LogColumns, LogRow};
use crate::model::{Normalized, Table, TableBatch};
use crate::receive::decompress::decompress;

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum FirehoseError {
    #[error("body is not a Firehose delivery: {0}")]
    Body(String),
    #[error("record {0}: {1}")]
    Record(usize, String),
    #[error("could not build rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
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
pub fn decode(body: &[u8], now_micros: i64, limit: usize) -> Result<Normalized, FirehoseError> {
    let delivery: Delivery =
        serde_json::from_slice(body).map_err(|e| FirehoseError::Body(e.to_string()))?;
    let _ = delivery.request_id;
    let mut subs = Vec::with_capacity(delivery.records.len());
    for (i, rec) in delivery.records.iter().enumerate() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rec.data.trim())
            .map_err(|e| FirehoseError::Record(i, format!("data is not base64: {e}")))?;
        let json = if raw.starts_with(&[0x1f, 0x8b]) {
            decompress(Some("gzip"), &raw, limit)
                .map_err(|e| FirehoseError::Record(i, e.to_string()))?
        } else {
            std::borrow::Cow::Borrowed(raw.as_slice())
        };
        let sub: Subscription = serde_json::from_slice(&json).map_err(|e| {
            FirehoseError::Record(i, format!("not CloudWatch Logs subscription data: {e}"))
        })?;
        subs.push(sub);
    }
    Ok(decode_subscriptions(&subs, now_micros)?)
}

/// Log rows and invocation records of CloudWatch subscription messages;
/// only `DATA_MESSAGE`s carry events.
pub fn decode_subscriptions(
    subs: &[Subscription],
    now_micros: i64,
) -> Result<Normalized, arrow::error::ArrowError> {
    let mut out = Normalized::default();
    let mut logs = LogColumns::new();
    let mut records = RecordColumns::default();
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
                body: Some(ev.message.trim_end_matches('\n').to_string()),
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
}
