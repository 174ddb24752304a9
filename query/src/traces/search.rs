//! Trace search (Tempo's `/api/search`): a TraceQL query (or logfmt tags,
//! turned into one) → SQL over `spans` → trace summaries with the spans that
//! matched.
//!
//! Step 1 finds up to `limit` trace ids whose spans satisfy the spanset
//! combination, newest first, within the time range (pruned by hour
//! partition; searched backwards in growing windows when one span decides a
//! match). Step 2 reads those traces by id (bloom filters) for their
//! roots, bounds and matched spans.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::load::Cols;
use super::sql_string;
use super::traceql::{Attribute, FieldExpr, Intrinsic, Op, SpansetExpr, Static, parse_attribute};
use crate::engine::{QueryEngine, QueryError};

/// Most traces one search returns.
pub const MAX_LIMIT: usize = 1_000;

/// A search over stored traces.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: SpansetExpr,
    /// Inclusive start and exclusive end, µs since the epoch.
    pub start_us: Option<i64>,
    pub end_us: Option<i64>,
    /// Bounds on the trace's duration.
    pub min_duration_ms: Option<f64>,
    pub max_duration_ms: Option<f64>,
    pub limit: usize,
    /// Matched spans returned per trace.
    pub spans_per_set: usize,
}

/// A span that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedSpan {
    pub span_id: String,
    pub name: String,
    pub start_us: i64,
    pub duration_ms: f64,
    pub service_name: Option<String>,
}

/// One trace found.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceHit {
    pub trace_id: String,
    pub root_service_name: String,
    pub root_trace_name: String,
    pub start_us: i64,
    pub duration_ms: f64,
    pub matched: usize,
    pub spans: Vec<MatchedSpan>,
}

/// What Tempo shows while a trace's root span has not arrived.
pub const ROOT_NOT_YET: &str = "<root span not yet received>";

fn timestamp(us: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
    format!(
        "TIMESTAMP {}",
        sql_string(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    )
}

/// `time` bounds for `spans` (alias `s`), or `TRUE`.
fn time_filter(alias: &str, start: Option<i64>, end: Option<i64>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = start {
        parts.push(format!("{alias}time >= {}", timestamp(s)));
    }
    if let Some(e) = end {
        parts.push(format!("{alias}time < {}", timestamp(e)));
    }
    if parts.is_empty() {
        "TRUE".into()
    } else {
        parts.join(" AND ")
    }
}

/// The per-trace summary `t` (root name and service, duration) over a range.
fn trace_summary_cte(range: &str) -> String {
    format!(
        "t AS (SELECT trace_id, \
           max(CASE WHEN parent_span_id IS NULL THEN name END) AS root_name, \
           max(CASE WHEN parent_span_id IS NULL THEN service_name END) AS root_service_name, \
           CAST(CAST(max(end_time) AS BIGINT) - CAST(min(time) AS BIGINT) AS DOUBLE) / 1000.0 AS duration_ms \
         FROM spans WHERE {range} GROUP BY trace_id)"
    )
}

fn filter_sql(f: &Option<FieldExpr>) -> String {
    match f {
        Some(e) => format!("coalesce({}, false)", e.to_sql()),
        None => "true".into(),
    }
}

/// The SQL of step 1: matching trace ids, newest first.
pub fn step1_sql(req: &SearchRequest) -> String {
    step1_sql_in(req, req.start_us, req.end_us)
}

/// Step 1 over `[start, end)` instead of the request's range.
fn step1_sql_in(req: &SearchRequest, start: Option<i64>, end: Option<i64>) -> String {
    let filters = req.query.filters();
    let needs_t = req.query.uses_trace_level()
        || req.min_duration_ms.is_some()
        || req.max_duration_ms.is_some();
    let range = time_filter("", start, end);
    let mut sql = String::new();
    if needs_t {
        let _ = write!(sql, "WITH {} ", trace_summary_cte(&range));
    }
    let flags: Vec<String> = filters.iter().map(|f| filter_sql(f)).collect();
    sql.push_str("SELECT s.trace_id, max(s.time) AS last_time");
    for (i, f) in flags.iter().enumerate() {
        let _ = write!(sql, ", bool_or({f}) AS m{i}");
    }
    sql.push_str(" FROM spans s");
    if needs_t {
        sql.push_str(" JOIN t ON s.trace_id = t.trace_id");
    }
    let _ = write!(
        sql,
        " WHERE {} AND ({})",
        time_filter("s.", start, end),
        flags.join(" OR ")
    );
    if let Some(min) = req.min_duration_ms {
        let _ = write!(sql, " AND t.duration_ms >= {min:.6}");
    }
    if let Some(max) = req.max_duration_ms {
        let _ = write!(sql, " AND t.duration_ms <= {max:.6}");
    }
    let _ = write!(
        sql,
        " GROUP BY s.trace_id HAVING {} ORDER BY last_time DESC, s.trace_id LIMIT {}",
        req.query.combine_sql(&|i| format!("bool_or({})", flags[i])),
        req.limit.clamp(1, MAX_LIMIT)
    );
    sql
}

const HOUR_US: i64 = 3_600_000_000;

/// Windows a piecewise search looks at before one last look at the rest of
/// the range: 1 h, 2 h, 4 h, … 128 h back from the end (10.6 days).
const WINDOWS: u32 = 8;

async fn step1_ids(
    engine: &QueryEngine,
    req: &SearchRequest,
    start: Option<i64>,
    end: Option<i64>,
) -> Result<Vec<String>, QueryError> {
    let result = engine.execute(&step1_sql_in(req, start, end)).await?;
    let mut ids = Vec::new();
    for b in &result.batches {
        ids.extend(Cols::new(b).strings("trace_id")?.into_iter().flatten());
    }
    Ok(ids)
}

/// The ids of step 1, newest first. When one span decides a match, the
/// range is searched backwards from its end in windows that double (1 h,
/// 2 h, 4 h, …) until `limit` traces are found: a common query (`{ kind =
/// server }`) then reads the last hour, not the week. The answer is the
/// same as one query over the whole range: a trace's newest matching span
/// lies in the first window that finds it.
async fn matching_ids(
    engine: &QueryEngine,
    req: &SearchRequest,
) -> Result<Vec<String>, QueryError> {
    let whole =
        !req.query.per_span() || req.min_duration_ms.is_some() || req.max_duration_ms.is_some();
    if whole {
        return step1_ids(engine, req, req.start_us, req.end_us).await;
    }
    let limit = req.limit.clamp(1, MAX_LIMIT);
    // Windows reach back from the end of the range, or from now when the
    // range ends later (nothing is stored in the future).
    let soon = Utc::now().timestamp_micros() + HOUR_US;
    let anchor = req.end_us.map_or(soon, |end| end.min(soon));
    let mut ids: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut upper = req.end_us;
    let mut back = HOUR_US;
    for window in 0..=WINDOWS {
        let lower = anchor.saturating_sub(back);
        let done = window == WINDOWS || req.start_us.is_some_and(|s| lower <= s);
        let lo = if done { req.start_us } else { Some(lower) };
        for id in step1_ids(engine, req, lo, upper).await? {
            if seen.insert(id.clone()) {
                ids.push(id);
            }
        }
        if done || ids.len() >= limit {
            break;
        }
        upper = Some(lower);
        back = back.saturating_mul(2);
    }
    ids.truncate(limit);
    Ok(ids)
}

/// Runs a search.
pub async fn search(
    engine: &QueryEngine,
    req: &SearchRequest,
) -> Result<Vec<TraceHit>, QueryError> {
    let ids = matching_ids(engine, req).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = ids
        .iter()
        .map(|i| sql_string(i))
        .collect::<Vec<_>>()
        .join(", ");

    // Bounds and roots of the found traces.
    let sql = format!(
        "SELECT trace_id, span_id, parent_span_id, name, service_name, time, end_time \
         FROM spans WHERE trace_id IN ({list}) AND parent_span_id IS NULL"
    );
    let roots = engine.execute(&sql).await?;
    let sql = format!(
        "SELECT trace_id, min(time) AS start_time, max(end_time) AS end_time, \
         first_value(name ORDER BY time) AS first_name \
         FROM spans WHERE trace_id IN ({list}) GROUP BY trace_id"
    );
    let bounds = engine.execute(&sql).await?;
    let filters = req.query.filters();
    let flags: Vec<String> = filters.iter().map(|f| filter_sql(f)).collect();
    let needs_t = req.query.uses_trace_level();
    let mut sql = String::new();
    if needs_t {
        let _ = write!(
            sql,
            "WITH {} ",
            trace_summary_cte(&format!("trace_id IN ({list})"))
        );
    }
    let _ = write!(
        sql,
        "SELECT s.trace_id, s.span_id, s.name, s.time, s.duration_ms, s.service_name FROM spans s{} \
         WHERE s.trace_id IN ({list}) AND ({}) ORDER BY s.time",
        if needs_t {
            " JOIN t ON s.trace_id = t.trace_id"
        } else {
            ""
        },
        flags.join(" OR ")
    );
    let matched = engine.execute(&sql).await?;

    let mut hits: HashMap<String, TraceHit> = HashMap::new();
    for b in &bounds.batches {
        let c = Cols::new(b);
        let (tid, start, end) = (
            c.strings("trace_id")?,
            c.micros("start_time")?,
            c.micros("end_time")?,
        );
        let name = c.strings("first_name")?;
        for i in 0..b.num_rows() {
            let Some(id) = tid[i].clone() else { continue };
            let (s, e) = (start[i].unwrap_or(0), end[i].unwrap_or(0));
            // Without a root: Tempo's placeholder, and the first span's name.
            hits.insert(
                id.clone(),
                TraceHit {
                    trace_id: id,
                    root_service_name: ROOT_NOT_YET.into(),
                    root_trace_name: name[i].clone().unwrap_or_default(),
                    start_us: s,
                    duration_ms: (e - s).max(0) as f64 / 1000.0,
                    matched: 0,
                    spans: Vec::new(),
                },
            );
        }
    }
    let mut root_start: HashMap<String, i64> = HashMap::new();
    for b in &roots.batches {
        let c = Cols::new(b);
        let (tid, name, service, time) = (
            c.strings("trace_id")?,
            c.strings("name")?,
            c.strings("service_name")?,
            c.micros("time")?,
        );
        for i in 0..b.num_rows() {
            let (Some(id), Some(t)) = (tid[i].as_deref(), time[i]) else {
                continue;
            };
            let Some(hit) = hits.get_mut(id) else {
                continue;
            };
            if root_start.get(id).is_none_or(|&prev| t < prev) {
                root_start.insert(id.to_string(), t);
                hit.root_trace_name = name[i].clone().unwrap_or_default();
                hit.root_service_name = service[i].clone().unwrap_or_default();
            }
        }
    }
    for b in &matched.batches {
        let c = Cols::new(b);
        let (tid, sid, name, time, dur, svc) = (
            c.strings("trace_id")?,
            c.strings("span_id")?,
            c.strings("name")?,
            c.micros("time")?,
            c.floats("duration_ms")?,
            c.strings("service_name")?,
        );
        for i in 0..b.num_rows() {
            let Some(hit) = tid[i].as_deref().and_then(|id| hits.get_mut(id)) else {
                continue;
            };
            hit.matched += 1;
            if hit.spans.len() < req.spans_per_set.max(1) {
                hit.spans.push(MatchedSpan {
                    span_id: sid[i].clone().unwrap_or_default(),
                    name: name[i].clone().unwrap_or_default(),
                    start_us: time[i].unwrap_or(0),
                    duration_ms: dur[i].unwrap_or(0.0),
                    service_name: svc[i].clone(),
                });
            }
        }
    }
    // In step 1's order (newest first).
    Ok(ids.into_iter().filter_map(|id| hits.remove(&id)).collect())
}

/// Tempo's tag search (`tags=` in logfmt) as a TraceQL spanset: every pair
/// must hold on one span (or its resource).
pub fn tags_to_query(tags: &str) -> Result<SpansetExpr, String> {
    let pairs = logfmt(tags)?;
    let mut expr: Option<FieldExpr> = None;
    for (k, v) in pairs {
        let (attr, value) = match k.as_str() {
            "name" => (Attribute::Intrinsic(Intrinsic::Name), Static::Str(v)),
            "status" | "status.code" => (
                Attribute::Intrinsic(Intrinsic::Status),
                Static::Str(v.to_ascii_lowercase()),
            ),
            "kind" => (
                Attribute::Intrinsic(Intrinsic::Kind),
                Static::Str(v.to_ascii_lowercase()),
            ),
            "root.name" => (Attribute::Intrinsic(Intrinsic::RootName), Static::Str(v)),
            "root.service.name" => (
                Attribute::Intrinsic(Intrinsic::RootServiceName),
                Static::Str(v),
            ),
            _ => match parse_attribute(&k) {
                Ok(a @ (Attribute::Span(_) | Attribute::Resource(_) | Attribute::Any(_))) => {
                    (a, Static::Str(v))
                }
                _ => (Attribute::Any(k), Static::Str(v)),
            },
        };
        let cmp = FieldExpr::Cmp(attr, Op::Eq, value);
        expr = Some(match expr {
            None => cmp,
            Some(e) => FieldExpr::And(Box::new(e), Box::new(cmp)),
        });
    }
    Ok(SpansetExpr::Filter(expr))
}

/// `key=value key2="quoted value"` pairs.
pub fn logfmt(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return Err(format!("tags: expected key=value, got {key:?}"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("tags: unterminated quote in the value of {key}")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(format!("tags: unterminated quote in the value of {key}"));
                        }
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}
