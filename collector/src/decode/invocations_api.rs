//! `POST /v1/invocations`: a JSON array or NDJSON of records whose fields are
//! named like the `invocations` columns. Each row is validated on its own;
//! invalid rows are reported by index and valid rows stored.

use serde_json::{Map, Value};

use super::invocations::{InvocationRecord, RecordColumns, SOURCE_API};
use crate::model::{Normalized, Table, TableBatch};

/// The body is neither a JSON array nor NDJSON of objects.
#[derive(Debug, thiserror::Error)]
#[error("body must be a JSON array or NDJSON of objects: {0}")]
pub struct BodyError(String);

/// Rows refused, by index in the body, with the reason.
pub type Rejections = Vec<(usize, String)>;

const KNOWN: [&str; 20] = [
    "time",
    "function_name",
    "function_version",
    "provider",
    "region",
    "account_id",
    "request_id",
    "trace_id",
    "trigger",
    "cold_start",
    "init_duration_ms",
    "duration_ms",
    "billed_duration_ms",
    "memory_size_mb",
    "max_memory_used_mb",
    "architecture",
    "runtime",
    "status",
    "error_type",
    "cost_usd",
];

fn rows(body: &[u8]) -> Result<Vec<Value>, BodyError> {
    let trimmed = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&body[..0], |i| &body[i..]);
    if trimmed.first() == Some(&b'[') {
        return serde_json::from_slice(trimmed).map_err(|e| BodyError(e.to_string()));
    }
    let mut out = Vec::new();
    for (i, line) in trimmed.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(
            serde_json::from_slice(line).map_err(|e| BodyError(format!("line {}: {e}", i + 1)))?,
        );
    }
    Ok(out)
}

fn text(o: &Map<String, Value>, k: &str) -> Result<Option<String>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 1024 => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
        Some(Value::String(_)) => Err(format!("{k} is longer than 1024 characters")),
        Some(_) => Err(format!("{k} must be a string")),
    }
}

fn float(o: &Map<String, Value>, k: &str) -> Result<Option<f64>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
            _ => Err(format!("{k} must be a non-negative number")),
        },
        Some(_) => Err(format!("{k} must be a number")),
    }
}

fn int(o: &Map<String, Value>, k: &str) -> Result<Option<i64>, String> {
    match float(o, k)? {
        Some(v) if v.fract() == 0.0 && v < 9.0e15 => Ok(Some(v as i64)),
        Some(_) => Err(format!("{k} must be a whole number")),
        None => Ok(None),
    }
}

fn time(o: &Map<String, Value>) -> Result<i64, String> {
    match o.get("time") {
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_micros())
            .map_err(|e| format!("time {s:?} is not RFC 3339: {e}")),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|ms| (0..=253_402_300_799_999).contains(ms))
            .map(|ms| ms * 1000)
            .ok_or_else(|| "time must be epoch milliseconds".to_string()),
        _ => Err("time is required (RFC 3339 or epoch milliseconds)".into()),
    }
}

fn one_of(v: Option<String>, k: &str, allowed: &[&str]) -> Result<Option<String>, String> {
    match v {
        Some(s) if !allowed.contains(&s.as_str()) => {
            Err(format!("{k} must be one of {}", allowed.join("|")))
        }
        other => Ok(other),
    }
}

fn record(v: &Value) -> Result<InvocationRecord, String> {
    let Value::Object(o) = v else {
        return Err("row must be a JSON object".into());
    };
    if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("unknown field {k:?}"));
    }
    let cold_start = match o.get("cold_start") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err("cold_start must be true or false".into()),
    };
    Ok(InvocationRecord {
        time_micros: time(o)?,
        function_name: text(o, "function_name")?.ok_or("function_name is required")?,
        request_id: text(o, "request_id")?.ok_or("request_id is required")?,
        function_version: text(o, "function_version")?,
        provider: one_of(text(o, "provider")?, "provider", &["aws", "gcp", "azure"])?,
        region: text(o, "region")?,
        account_id: text(o, "account_id")?,
        trace_id: text(o, "trace_id")?.map(|t| t.to_ascii_lowercase()),
        trigger: text(o, "trigger")?,
        cold_start,
        init_duration_ms: float(o, "init_duration_ms")?,
        duration_ms: float(o, "duration_ms")?,
        billed_duration_ms: int(o, "billed_duration_ms")?,
        memory_size_mb: int(o, "memory_size_mb")?,
        max_memory_used_mb: int(o, "max_memory_used_mb")?,
        architecture: one_of(
            text(o, "architecture")?,
            "architecture",
            &["x86_64", "arm64"],
        )?,
        runtime: text(o, "runtime")?,
        status: one_of(
            text(o, "status")?,
            "status",
            &["ok", "error", "timeout", "oom"],
        )?,
        error_type: text(o, "error_type")?,
        source: SOURCE_API,
    })
}

/// Parses and validates a body.
pub fn decode(body: &[u8]) -> Result<(Normalized, Rejections), BodyError> {
    let mut out = Normalized::default();
    let mut rejections = Vec::new();
    let rows = rows(body)?;
    let mut cols = RecordColumns::with_capacity(rows.len());
    for (i, v) in rows.iter().enumerate() {
        match record(v) {
            Ok(r) => {
                cols.append(&r);
                out.accepted += 1;
            }
            Err(reason) => {
                out.reject(|| format!("row {i}: {reason}"));
                rejections.push((i, reason));
            }
        }
    }
    if !cols.is_empty() {
        let batch = cols.finish().map_err(|e| BodyError(e.to_string()))?;
        out.batches.push(TableBatch {
            table: Table::InvocationRecords,
            batch,
        });
    }
    Ok((out, rejections))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_and_ndjson_with_per_row_rejections() {
        let body = br#"[{"time":"2026-11-28T10:00:00Z","function_name":"f","request_id":"r1","duration_ms":12.5,"billed_duration_ms":13,"memory_size_mb":128,"architecture":"arm64","status":"ok"},
                        {"time":1764324000000,"function_name":"f","request_id":"r2"},
                        {"function_name":"f","request_id":"r3"},
                        {"time":1764324000000,"function_name":"f","request_id":"r4","architecture":"sparc"},
                        {"time":1764324000000,"function_name":"f","request_id":"r5","memory_size_mb":-1},
                        {"time":1764324000000,"function_name":"f","request_id":"r6","colour":"red"},
                        "not an object"]"#;
        let (n, rej) = decode(body).expect("decodes");
        assert_eq!(n.accepted, 2);
        let idx: Vec<usize> = rej.iter().map(|r| r.0).collect();
        assert_eq!(idx, vec![2, 3, 4, 5, 6]);
        assert!(rej[0].1.contains("time is required"));
        assert!(rej[1].1.contains("architecture"));
        let nd = b"{\"time\":1764324000000,\"function_name\":\"f\",\"request_id\":\"a\"}\n\n{\"time\":1764324000000,\"function_name\":\"f\",\"request_id\":\"b\"}\n";
        assert_eq!(decode(nd).expect("ndjson").0.accepted, 2);
        assert!(decode(b"{\"time\":1,").is_err());
        assert!(decode(b"[1,2").is_err());
    }
}
