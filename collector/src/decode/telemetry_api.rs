//! `POST /v1/lambda/telemetry?function_name=…`: a batch from the Lambda
//! Telemetry API (a JSON array of `{time, type, record}` events) as an
//! extension forwards it.
//!
//! `platform.start` (trace id from `tracing`), `platform.runtimeDone`
//! (status) and `platform.report` (metrics, status, error type) become
//! invocation records; `platform.initStart` marks the next invocation of the
//! batch as a cold start (and names the runtime); `function` and `extension`
//! events become `logs` rows. Other event types are ignored.
//!
//! The WAL keeps `[u32 LE length][query string][events JSON]`, so replay
//! sees the same function name and parameters.

use serde_json::Value;

use super::invocations::{InvocationRecord, RecordColumns};
use super::otlp::logs::{LogColumns, LogRow};
use crate::model::{Normalized, Table, TableBatch};

/// Records of this source carry `source = 'telemetry'`.
pub const SOURCE_TELEMETRY: &str = "telemetry";

/// Why a batch was refused as a whole (nothing is stored).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("function_name is required")]
    MissingFunction,
    #[error("invalid {0}: {1}")]
    Param(&'static str, String),
    #[error("body must be a JSON array of Telemetry API events: {0}")]
    Body(String),
    #[error("event {0}: {1}")]
    Event(usize, String),
    #[error("could not build rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(
        "the events would repeat {bytes} bytes of query parameters (each row holds them), \
         more than the limit of {limit} (four times --max-body-size)"
    )]
    Repetitive { bytes: usize, limit: usize },
}

/// The query parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    pub function_name: String,
    pub function_version: Option<String>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub architecture: Option<String>,
}

impl Params {
    pub fn parse(query: &str) -> Result<Params, TelemetryError> {
        let mut p = Params::default();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v)
                .ok_or_else(|| TelemetryError::Param("query", pair.to_string()))?;
            if v.len() > 256 {
                return Err(TelemetryError::Param("query", format!("{k} is too long")));
            }
            let v = Some(v).filter(|v| !v.is_empty());
            match k {
                "function_name" => p.function_name = v.unwrap_or_default(),
                "function_version" => p.function_version = v,
                "region" => p.region = v,
                "account_id" => p.account_id = v,
                "architecture" => match v.as_deref() {
                    None | Some("x86_64" | "arm64") => p.architecture = v,
                    Some(other) => {
                        return Err(TelemetryError::Param(
                            "architecture",
                            format!("{other} (use x86_64 or arm64)"),
                        ));
                    }
                },
                _ => {}
            }
        }
        if p.function_name.is_empty() {
            return Err(TelemetryError::MissingFunction);
        }
        Ok(p)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Frames query and body for the WAL.
pub fn wal_body(query: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + query.len() + body.len());
    out.extend_from_slice(&(query.len() as u32).to_le_bytes());
    out.extend_from_slice(query.as_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a WAL body back into query and events.
pub fn split_wal_body(bytes: &[u8]) -> Result<(&str, &[u8]), TelemetryError> {
    let len = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| TelemetryError::Body("short wal record".into()))? as usize;
    let query = bytes
        .get(4..4 + len)
        .ok_or_else(|| TelemetryError::Body("short wal record".into()))?;
    let query = std::str::from_utf8(query).map_err(|e| TelemetryError::Body(e.to_string()))?;
    Ok((query, &bytes[4 + len..]))
}

fn time_micros(event: &Value) -> Option<i64> {
    let t = event.get("time")?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_micros())
}

fn status_of(status: Option<&str>, error_type: Option<&str>) -> Option<String> {
    Some(
        match (status?, error_type) {
            (_, Some("Runtime.OutOfMemory")) => "oom",
            ("success", _) => "ok",
            ("timeout", _) => "timeout",
            _ => "error",
        }
        .into(),
    )
}

fn trace_id(record: &Value) -> Option<String> {
    let value = record.get("tracing")?.get("value")?.as_str()?;
    let root = value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("Root="))?;
    super::lambda_report::xray_to_w3c(root)
}

fn metric_f64(m: Option<&Value>, k: &str) -> Option<f64> {
    m?.get(k)?.as_f64().filter(|v| v.is_finite() && *v >= 0.0)
}

fn metric_i64(m: Option<&Value>, k: &str) -> Option<i64> {
    metric_f64(m, k).map(|v| v.ceil() as i64)
}

/// State carried across the platform events of one instance's stream:
/// `platform.initStart` makes the next `platform.start` a cold start.
#[derive(Debug, Default)]
pub struct PlatformState {
    cold_next: bool,
    runtime: Option<String>,
}

/// The invocation record of one `platform.*` event, if it makes one.
/// `Ok(None)` for platform events without invocation facts (and for
/// `platform.initStart`, which only updates `state`); `Err` for an event
/// that should carry a request id and does not.
pub fn platform_record(
    p: &Params,
    state: &mut PlatformState,
    kind: &str,
    time: i64,
    record: &Value,
    source: &'static str,
) -> Result<Option<InvocationRecord>, String> {
    let request_id = record.get("requestId").and_then(Value::as_str);
    let needs_id = || {
        request_id
            .filter(|r| !r.is_empty() && r.len() <= 256)
            .ok_or_else(|| format!("{kind} without requestId"))
    };
    let base = |request_id: &str, runtime: Option<String>| InvocationRecord {
        time_micros: time,
        function_name: p.function_name.clone(),
        function_version: p.function_version.clone(),
        provider: Some("aws".into()),
        region: p.region.clone(),
        account_id: p.account_id.clone(),
        request_id: request_id.to_string(),
        architecture: p.architecture.clone(),
        runtime,
        source,
        ..Default::default()
    };
    Ok(Some(match kind {
        "platform.initStart" => {
            state.cold_next = true;
            state.runtime = record
                .get("runtimeVersion")
                .and_then(Value::as_str)
                .map(|r| r.split(".v").next().unwrap_or(r).to_string());
            return Ok(None);
        }
        "platform.start" => InvocationRecord {
            trace_id: trace_id(record),
            cold_start: Some(std::mem::take(&mut state.cold_next)),
            function_version: record
                .get("version")
                .and_then(Value::as_str)
                .map(String::from)
                .or(p.function_version.clone()),
            ..base(needs_id()?, state.runtime.clone())
        },
        "platform.runtimeDone" => {
            let status = record.get("status").and_then(Value::as_str);
            let error_type = record.get("errorType").and_then(Value::as_str);
            InvocationRecord {
                status: status_of(status, error_type),
                error_type: error_type.map(String::from),
                ..base(needs_id()?, state.runtime.clone())
            }
        }
        "platform.report" => {
            let m = record.get("metrics");
            let error_type = record.get("errorType").and_then(Value::as_str);
            let init = metric_f64(m, "initDurationMs");
            let restore = metric_f64(m, "restoreDurationMs");
            InvocationRecord {
                trace_id: trace_id(record),
                cold_start: Some(init.is_some() || restore.is_some()),
                init_duration_ms: init.or(restore),
                duration_ms: metric_f64(m, "durationMs"),
                billed_duration_ms: metric_i64(m, "billedDurationMs"),
                memory_size_mb: metric_i64(m, "memorySizeMB"),
                max_memory_used_mb: metric_i64(m, "maxMemoryUsedMB"),
                status: status_of(record.get("status").and_then(Value::as_str), error_type),
                error_type: error_type.map(String::from),
                ..base(needs_id()?, state.runtime.clone())
            }
        }
        _ => return Ok(None),
    }))
}

/// A log message in Lambda's JSON log format that is a platform record
/// (`{"time", "type": "platform.*", "record"}`): its invocation record.
/// Malformed or other messages give `None`: they stay plain log lines.
pub fn json_platform_line(
    message: &str,
    function_name: &str,
    source: &'static str,
) -> Option<InvocationRecord> {
    let m = message.trim();
    if !m.starts_with('{') || !m.contains("\"platform.") || m.len() > 64 * 1024 {
        return None;
    }
    let v: Value = serde_json::from_str(m).ok()?;
    let kind = v.get("type")?.as_str()?;
    let time = time_micros(&v)?;
    let p = Params {
        function_name: function_name.to_string(),
        ..Default::default()
    };
    let record = v.get("record").unwrap_or(&Value::Null);
    platform_record(
        &p,
        &mut PlatformState::default(),
        kind,
        time,
        record,
        source,
    )
    .ok()?
}

/// Decodes a batch. Any malformed event refuses the whole batch, so nothing
/// is stored half-way.
/// Every row holds the query's parameters (up to 256 bytes each): a batch
/// whose rows would repeat more than `max_repeated` bytes of them is
/// refused before any row is built.
pub fn decode(
    query: &str,
    body: &[u8],
    now_micros: i64,
    max_repeated: usize,
) -> Result<Normalized, TelemetryError> {
    let p = Params::parse(query)?;
    let events: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| TelemetryError::Body(e.to_string()))?;
    let repeated = super::otlp::repeated_bytes([(2 * query.len(), events.len())]);
    if repeated > max_repeated {
        return Err(TelemetryError::Repetitive {
            bytes: repeated,
            limit: max_repeated,
        });
    }
    let mut out = Normalized::default();
    let mut records = RecordColumns::with_capacity(1);
    let mut logs = LogColumns::with_capacity(events.len());
    let mut state = PlatformState::default();
    for (i, e) in events.iter().enumerate() {
        let kind = e
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| TelemetryError::Event(i, "missing type".into()))?;
        let time = time_micros(e)
            .ok_or_else(|| TelemetryError::Event(i, "missing or invalid time".into()))?;
        let record = e.get("record").unwrap_or(&Value::Null);
        match kind {
            "function" | "extension" => {
                let (body, request_id, level) = match record {
                    Value::String(s) => (s.clone(), None, None),
                    Value::Object(o) => (
                        o.get("message").map_or_else(
                            || record.to_string(),
                            |m| m.as_str().map_or_else(|| m.to_string(), String::from),
                        ),
                        o.get("requestId").and_then(Value::as_str).map(String::from),
                        o.get("level").and_then(Value::as_str),
                    ),
                    other => (other.to_string(), None, None),
                };
                logs.append(LogRow {
                    time_micros: time,
                    observed_micros: now_micros,
                    severity_text: level,
                    body: Some(body.into()),
                    service_name: Some(&p.function_name),
                    function_name: Some(p.function_name.clone()),
                    request_id,
                    scope_name: Some(kind),
                    ..Default::default()
                });
                logs.attributes_mut()
                    .append_pairs([("faas.log.source", kind)]);
                logs.resource_attributes_mut()
                    .append_pairs([("faas.name", p.function_name.as_str())]);
            }
            "platform.initStart"
            | "platform.start"
            | "platform.runtimeDone"
            | "platform.report" => {
                let r = platform_record(&p, &mut state, kind, time, record, SOURCE_TELEMETRY)
                    .map_err(|e| TelemetryError::Event(i, e))?;
                if let Some(r) = r {
                    records.append(&r);
                }
            }
            _ => continue,
        }
        out.accepted += 1;
    }
    if !records.is_empty() {
        out.batches.push(TableBatch {
            table: Table::InvocationRecords,
            batch: records.finish()?,
        });
    }
    if !logs.is_empty() {
        out.batches.push(TableBatch {
            table: Table::Logs,
            batch: logs.finish()?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQUENCE: &str = r#"[
      {"time":"2026-10-08T07:30:27.768Z","type":"platform.initStart","record":{"initializationType":"on-demand","phase":"init","runtimeVersion":"nodejs:22.mainline.v122","functionName":"tenner-notifier","functionVersion":"$LATEST","instanceMaxMemory":268435456}},
      {"time":"2026-10-08T07:30:28.235Z","type":"platform.start","record":{"requestId":"79b5e81f-9cdd-4145-b1f6-7c50ef8a2a36","version":"$LATEST","tracing":{"spanId":"54565fb41ac79632","type":"X-Amzn-Trace-Id","value":"Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=1"}}},
      {"time":"2026-10-08T07:30:29.443Z","type":"function","record":{"timestamp":"2026-10-08T07:30:29.443Z","level":"ERROR","requestId":"79b5e81f-9cdd-4145-b1f6-7c50ef8a2a36","message":"boom"}},
      {"time":"2026-10-08T07:30:29.470Z","type":"platform.report","record":{"requestId":"79b5e81f-9cdd-4145-b1f6-7c50ef8a2a36","metrics":{"durationMs":1233.96,"billedDurationMs":1698,"memorySizeMB":256,"maxMemoryUsedMB":123,"initDurationMs":463.512},"status":"success"}},
      {"time":"2026-10-08T07:30:42.149Z","type":"platform.report","record":{"requestId":"f0c9f58b-8ebe-4e84-a656-95eb6eee865a","metrics":{"durationMs":1072.145,"billedDurationMs":1073,"memorySizeMB":256,"maxMemoryUsedMB":125},"status":"success"}},
      {"time":"2026-07-09T06:05:50.581Z","type":"platform.report","record":{"requestId":"aec7a529-47f9-4090-be01-c9ed91bf83cf","metrics":{"durationMs":5000.0,"billedDurationMs":5000,"memorySizeMB":128,"maxMemoryUsedMB":94},"status":"timeout"}},
      {"time":"2026-07-09T06:05:50.600Z","type":"platform.logsDropped","record":{"reason":"x"}},
      {"time":"2026-07-09T06:05:50.600Z","type":"platform.somethingNew","record":{}}
    ]"#;

    #[test]
    fn the_real_sequence_decodes() {
        let n = decode(
            "function_name=tenner-notifier&region=eu-central-1&architecture=arm64",
            SEQUENCE.as_bytes(),
            0,
            usize::MAX,
        )
        .expect("decodes");
        assert_eq!(n.accepted, 6);
        let records = n
            .batches
            .iter()
            .find(|b| b.table == Table::InvocationRecords)
            .expect("records");
        assert_eq!(records.batch.num_rows(), 4);
        let logs = n
            .batches
            .iter()
            .find(|b| b.table == Table::Logs)
            .expect("logs");
        assert_eq!(logs.batch.num_rows(), 1);
    }

    #[test]
    fn json_log_format_platform_lines_are_records() {
        let line = r#"{"time":"2026-07-09T06:05:50.581Z","type":"platform.report","record":{"requestId":"aec7a529-47f9-4090-be01-c9ed91bf83cf","metrics":{"durationMs":5000.0,"billedDurationMs":5000,"memorySizeMB":128,"maxMemoryUsedMB":94},"status":"timeout"}}"#;
        let r = json_platform_line(line, "f", "report").expect("a record");
        assert_eq!(r.request_id, "aec7a529-47f9-4090-be01-c9ed91bf83cf");
        assert_eq!(
            (r.duration_ms, r.billed_duration_ms, r.memory_size_mb),
            (Some(5000.0), Some(5000), Some(128))
        );
        assert_eq!(r.status.as_deref(), Some("timeout"));
        assert_eq!(r.cold_start, Some(false));
        let start = r#"{"time":"2022-10-12T00:00:15.064Z","type":"platform.start","record":{"requestId":"6d68ca91-49c9-448d-89b8-7ca3e6dc66aa","version":"$LATEST","tracing":{"spanId":"54565fb41ac79632","type":"X-Amzn-Trace-Id","value":"Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=1"}}}"#;
        let r = json_platform_line(start, "f", "report").expect("a record");
        assert_eq!(
            r.trace_id.as_deref(),
            Some("62e900b2710d76f009d6e7785905449a")
        );
        let init = r#"{"time":"2024-06-17T17:48:06.348Z","type":"platform.initReport","record":{"initializationType":"on-demand","phase":"init","status":"timeout","metrics":{"durationMs":10000.487}}}"#;
        assert_eq!(json_platform_line(init, "f", "report"), None);
        assert_eq!(
            json_platform_line(
                r#"{"timestamp":"2026-10-08T07:30:29.443Z","level":"ERROR","message":"..."}"#,
                "f",
                "report"
            ),
            None
        );
        assert_eq!(
            json_platform_line(r#"{"type":"platform.report", broken"#, "f", "report"),
            None
        );
    }

    #[test]
    fn bad_batches_are_refused_whole() {
        assert!(matches!(
            decode("", b"[]", 0, usize::MAX),
            Err(TelemetryError::MissingFunction)
        ));
        assert!(matches!(
            decode("function_name=f&architecture=sparc", b"[]", 0, usize::MAX),
            Err(TelemetryError::Param(..))
        ));
        assert!(matches!(
            decode("function_name=f", b"{\"not\":\"an array\"}", 0, usize::MAX),
            Err(TelemetryError::Body(_))
        ));
        assert!(matches!(
            decode(
                "function_name=f",
                b"[{\"type\":\"platform.report\",\"time\":\"2026-01-01T00:00:00Z\",\"record\":{}}]",
                0,
                usize::MAX
            ),
            Err(TelemetryError::Event(0, _))
        ));
        assert!(matches!(
            decode(
                "function_name=f",
                b"[{\"type\":\"platform.start\",\"time\":\"later\"}]",
                0,
                usize::MAX
            ),
            Err(TelemetryError::Event(0, _))
        ));
        assert_eq!(
            decode("function_name=my%20fn", b"[]", 0, usize::MAX)
                .expect("empty")
                .accepted,
            0
        );
        let framed = wal_body("function_name=f", b"[1]");
        assert_eq!(
            split_wal_body(&framed).expect("split"),
            ("function_name=f", &b"[1]"[..])
        );
    }

    /// Every row holds the query's parameters: 20,000 events under a
    /// query of 1,000 bytes would repeat 40 MB and are refused under a
    /// 16 MiB limit; a real query's pass.
    #[test]
    fn batches_that_would_repeat_a_long_query_are_refused() {
        let event = r#"{"time":"2026-01-01T00:00:00Z","type":"function","record":"x"}"#;
        let body = format!("[{}]", vec![event; 20_000].join(","));
        let long = format!(
            "function_name={}&function_version={}&region={}&account_id={}",
            "f".repeat(250),
            "v".repeat(250),
            "r".repeat(250),
            "a".repeat(200)
        );
        assert!(long.len() > 1_000);
        match decode(&long, body.as_bytes(), 0, 16 << 20) {
            Err(TelemetryError::Repetitive { bytes, limit }) => {
                assert!(bytes > 40_000_000, "{bytes}");
                assert_eq!(limit, 16 << 20);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let n = decode("function_name=f", body.as_bytes(), 0, 16 << 20).expect("decodes");
        assert_eq!(n.accepted, 20_000);
    }
}
