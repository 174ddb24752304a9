//! Lambda platform log lines (plain text) → structured facts.
//!
//! Accepts the forms in `shared/reference/lambda-samples.txt`: fields
//! separated by tabs or spaces, older lines with a space before the tab and
//! a trailing tab or newline. Numbers that do not parse make the field
//! absent, never an error: a line that is not a platform line is `None`.
//!
//! Not yet wired into ingest: the invocation-records issue builds on it.

/// A `REPORT` line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub request_id: String,
    pub duration_ms: Option<f64>,
    pub billed_duration_ms: Option<i64>,
    pub memory_size_mb: Option<i64>,
    pub max_memory_used_mb: Option<i64>,
    pub init_duration_ms: Option<f64>,
    pub restore_duration_ms: Option<f64>,
    pub billed_restore_duration_ms: Option<i64>,
    pub xray_trace_id: Option<String>,
    pub segment_id: Option<String>,
    pub sampled: Option<bool>,
    pub status: Option<String>,
    pub error_type: Option<String>,
}

impl Report {
    /// The W3C trace id of the X-Ray root: `1-5e34a614-10bdcb5a…` →
    /// `5e34a61410bdcb5a…`.
    pub fn w3c_trace_id(&self) -> Option<String> {
        xray_to_w3c(self.xray_trace_id.as_deref()?)
    }
}

/// An `INIT_REPORT` line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitReport {
    pub init_duration_ms: Option<f64>,
    pub phase: Option<String>,
    pub status: Option<String>,
    pub error_type: Option<String>,
}

/// One recognized platform line.
#[derive(Debug, Clone, PartialEq)]
pub enum PlatformLine {
    Start {
        request_id: String,
        version: Option<String>,
    },
    End {
        request_id: String,
    },
    Report(Report),
    InitStart {
        runtime_version: Option<String>,
    },
    InitReport(InitReport),
    RestoreStart {
        runtime_version: Option<String>,
    },
    /// `<ts> <request id> Task timed out after 5.01 seconds`
    Timeout {
        request_id: Option<String>,
        after_seconds: Option<f64>,
    },
    /// `RequestId: <id> Error: Runtime exited with error: signal: killed`
    RuntimeExited {
        request_id: Option<String>,
        signal_killed: bool,
    },
}

/// Maps an X-Ray trace id (`1-<8 hex>-<24 hex>`) to the W3C form.
pub fn xray_to_w3c(xray: &str) -> Option<String> {
    let mut parts = xray.trim().split('-');
    if parts.next()? != "1" {
        return None;
    }
    let (time, rest) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || time.len() != 8 || rest.len() != 24 {
        return None;
    }
    let id = format!("{time}{rest}").to_ascii_lowercase();
    id.bytes().all(|b| b.is_ascii_hexdigit()).then_some(id)
}

/// The value after `key` up to the next known key or the end, trimmed.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find('\t').unwrap_or(rest.len());
    let value = rest[..end].trim();
    // Space-separated lines: cut at the next "Word:" key.
    let value = match KEYS
        .iter()
        .filter_map(|k| value.find(&format!(" {k}")))
        .min()
    {
        Some(i) => value[..i].trim(),
        None => value,
    };
    (!value.is_empty()).then_some(value)
}

const KEYS: [&str; 14] = [
    "Duration:",
    "Billed Duration:",
    "Memory Size:",
    "Max Memory Used:",
    "Init Duration:",
    "Restore Duration:",
    "Billed Restore Duration:",
    "XRAY TraceId:",
    "SegmentId:",
    "Sampled:",
    "Status:",
    "Error Type:",
    "Phase:",
    "Version:",
];

/// `Duration: 12.5 ms` without also matching `Billed Duration:` and
/// friends: the key must start the line or follow a separator.
fn exact_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = line[from..].find(key) {
        let at = from + i;
        let before = line[..at].chars().last();
        if before.is_none_or(|c| c == '\t' || c == ' ') {
            let prev_word = line[..at]
                .trim_end()
                .rsplit([' ', '\t'])
                .next()
                .unwrap_or("");
            if !matches!(prev_word, "Billed" | "Max" | "Init" | "Restore") {
                return field(&line[at..], key);
            }
        }
        from = at + key.len();
    }
    None
}

fn number<T: std::str::FromStr>(v: Option<&str>, unit: &str) -> Option<T> {
    v?.trim_end_matches(unit).trim().parse().ok()
}

fn parse_report(line: &str) -> Option<Report> {
    let request_id = field(line, "RequestId:")?
        .split_whitespace()
        .next()?
        .to_string();
    Some(Report {
        request_id,
        duration_ms: number(exact_field(line, "Duration:"), "ms"),
        billed_duration_ms: number(exact_field(line, "Billed Duration:"), "ms"),
        memory_size_mb: number(exact_field(line, "Memory Size:"), "MB"),
        max_memory_used_mb: number(exact_field(line, "Max Memory Used:"), "MB"),
        init_duration_ms: number(exact_field(line, "Init Duration:"), "ms"),
        restore_duration_ms: number(exact_field(line, "Restore Duration:"), "ms"),
        billed_restore_duration_ms: number(exact_field(line, "Billed Restore Duration:"), "ms"),
        xray_trace_id: field(line, "XRAY TraceId:").map(String::from),
        segment_id: field(line, "SegmentId:").map(String::from),
        sampled: field(line, "Sampled:").and_then(|s| s.parse().ok()),
        status: field(line, "Status:").map(String::from),
        error_type: field(line, "Error Type:").map(String::from),
    })
}

/// Lines longer than this are not platform lines (and are not scanned).
pub const MAX_PLATFORM_LINE: usize = 4096;

/// Recognizes one log message; `None` for anything that is not a platform line.
pub fn parse(message: &str) -> Option<PlatformLine> {
    let line = message.trim_end_matches(['\n', '\r', '\t', ' ']);
    if line.len() > MAX_PLATFORM_LINE {
        return None;
    }
    if let Some(rest) = line.strip_prefix("REPORT ") {
        return parse_report(rest).map(PlatformLine::Report);
    }
    if let Some(rest) = line.strip_prefix("START ") {
        let request_id = field(rest, "RequestId:")?
            .split_whitespace()
            .next()?
            .to_string();
        return Some(PlatformLine::Start {
            request_id,
            version: field(rest, "Version:").map(String::from),
        });
    }
    if let Some(rest) = line.strip_prefix("END ") {
        let request_id = field(rest, "RequestId:")?
            .split_whitespace()
            .next()?
            .to_string();
        return Some(PlatformLine::End { request_id });
    }
    if let Some(rest) = line.strip_prefix("INIT_START ") {
        return Some(PlatformLine::InitStart {
            runtime_version: runtime_version(rest),
        });
    }
    if let Some(rest) = line.strip_prefix("RESTORE_START ") {
        return Some(PlatformLine::RestoreStart {
            runtime_version: runtime_version(rest),
        });
    }
    if let Some(rest) = line.strip_prefix("INIT_REPORT ") {
        return Some(PlatformLine::InitReport(InitReport {
            init_duration_ms: number(exact_field(rest, "Init Duration:"), "ms"),
            phase: field(rest, "Phase:").map(String::from),
            status: field(rest, "Status:").map(String::from),
            error_type: field(rest, "Error Type:").map(String::from),
        }));
    }
    if let Some(i) = line.find("Task timed out after ") {
        let after = line[i + "Task timed out after ".len()..]
            .split_whitespace()
            .next();
        let request_id = timeout_request_id(&line[..i]);
        return Some(PlatformLine::Timeout {
            request_id,
            after_seconds: after.and_then(|s| s.parse().ok()),
        });
    }
    if line.contains("Runtime exited with error") {
        let request_id = field(line, "RequestId:")
            .and_then(|s| s.split_whitespace().next())
            .map(String::from);
        return Some(PlatformLine::RuntimeExited {
            request_id,
            signal_killed: line.contains("signal: killed"),
        });
    }
    None
}

fn runtime_version(rest: &str) -> Option<String> {
    field(rest, "Runtime Version:")
        .and_then(|v| v.split_whitespace().next())
        .map(String::from)
}

/// The request id in `2019-09-18T00:02:46.542Z f2704689-… Task timed out` or
/// in `RequestId: 327e… Error: Task timed out`.
fn timeout_request_id(prefix: &str) -> Option<String> {
    if let Some(v) = field(prefix, "RequestId:") {
        return v.split_whitespace().next().map(String::from);
    }
    let mut words = prefix.split_whitespace();
    let first = words.next()?;
    let id = if first.contains('T') && first.ends_with('Z') {
        words.next()?
    } else {
        first
    };
    (id.len() >= 8 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then(|| id.to_string())
}

#[cfg(test)]
mod tests;
