//! Traces: everything faasight answers about one distributed request.
//!
//! ```text
//! load (spans + invocations of a trace id, pruned by the ids' bloom filters)
//!   → assemble (tree, orphans, roots) → critical_path (the chain that decides
//!   latency, self times) → summary (cold starts on the path, cost per trace)
//! traceql (TraceQL subset → SQL over `spans`) → search (Tempo search results)
//! ```

pub mod assemble;
pub mod critical_path;
pub mod load;
pub mod otlp;
pub mod search;
pub mod summary;
pub mod traceql;

#[cfg(test)]
mod tests;

/// One stored span, as the trace views need it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: String,
    pub status_code: String,
    pub status_message: Option<String>,
    pub service_name: Option<String>,
    pub function_name: Option<String>,
    pub request_id: Option<String>,
    pub cold_start: Option<bool>,
    pub start_us: i64,
    pub end_us: i64,
    pub attributes: Vec<(String, String)>,
    pub resource_attributes: Vec<(String, String)>,
    /// Events and links as stored (JSON arrays), if any.
    pub events: Option<String>,
    pub links: Option<String>,
    pub scope_name: Option<String>,
}

impl SpanRecord {
    pub fn duration_ms(&self) -> f64 {
        (self.end_us - self.start_us) as f64 / 1000.0
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A trace id from a URL: 1 to 32 hex digits (shorter ids are left-padded
/// with zeros, as Tempo does), not all zero; lowercase 32-digit hex after.
pub fn parse_trace_id(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 32 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "trace id must be 1 to 32 hex digits, got {:?}",
            raw.chars().take(64).collect::<String>()
        ));
    }
    let id = format!("{:0>32}", raw.to_ascii_lowercase());
    if id.bytes().all(|b| b == b'0') {
        return Err("trace id must not be all zeros".into());
    }
    Ok(id)
}

/// A SQL string literal for any text: quotes doubled, nothing else special
/// in DataFusion's dialect (a unit test round-trips quotes and backslashes).
pub fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
