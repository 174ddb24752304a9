//! The answer of `GET /api/v1/traces/{trace_id}`: the tree, its critical
//! path, the cold starts on it and what the whole request cost.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Value, json};

use super::SpanRecord;
use super::assemble::{Placement, TraceTree};
use super::critical_path::CriticalPath;
use super::load::TraceInvocation;

/// Deepest nesting the JSON tree shows; deeper spans hang at this depth with
/// `depth_capped` (keeps the response within any client's recursion limit).
pub const MAX_JSON_DEPTH: usize = 200;

fn rfc3339(us: i64) -> Value {
    DateTime::from_timestamp_micros(us)
        .map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Micros, true)))
        .unwrap_or(Value::Null)
}

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// A cold start within the trace and what it cost in latency.
#[derive(Debug, Clone, PartialEq)]
pub struct ColdStart {
    pub function_name: String,
    pub request_id: String,
    pub init_duration_ms: Option<f64>,
    /// The span that handled the invocation, if the trace holds it.
    pub span: Option<usize>,
    pub on_critical_path: bool,
    /// Latency of the trace that the init explains: the init time that falls
    /// before the handler started while its caller waited on the critical
    /// path (all of it for an entry function, whose caller is outside the trace).
    pub latency_explained_ms: f64,
}

/// The span that handled an invocation: a server/consumer span with its
/// request id, else the earliest span with it.
fn handler_span(tree: &TraceTree, request_id: &str) -> Option<usize> {
    let with_id = |s: &SpanRecord| s.request_id.as_deref() == Some(request_id);
    let handler = |s: &SpanRecord| s.kind == "server" || s.kind == "consumer";
    tree.spans
        .iter()
        .position(|s| with_id(s) && handler(s))
        .or_else(|| tree.spans.iter().position(with_id))
}

/// Cold starts of the trace: cold invocations, and cold spans whose
/// invocation record has not arrived.
pub fn cold_starts(
    tree: &TraceTree,
    path: &CriticalPath,
    invocations: &[TraceInvocation],
) -> Vec<ColdStart> {
    let mut out: Vec<ColdStart> = Vec::new();
    let known: Vec<&str> = invocations.iter().map(|i| i.request_id.as_str()).collect();
    let mut candidates: Vec<(String, String, Option<f64>)> = invocations
        .iter()
        .filter(|i| i.cold_start)
        .map(|i| {
            (
                i.function_name.clone(),
                i.request_id.clone(),
                i.init_duration_ms,
            )
        })
        .collect();
    for s in &tree.spans {
        if let (Some(true), Some(rid)) = (s.cold_start, s.request_id.as_deref())
            && !known.contains(&rid)
            && !candidates.iter().any(|c| c.1 == rid)
        {
            let function = s.function_name.clone().or(s.service_name.clone());
            candidates.push((function.unwrap_or_default(), rid.to_string(), None));
        }
    }
    for (function_name, request_id, init) in candidates {
        let span = handler_span(tree, &request_id);
        let on_path = span.is_some_and(|s| path.contains(s));
        let explained = match (on_path, span, init) {
            (true, Some(s), Some(init)) => match tree.placement[s] {
                Placement::Child => {
                    let parent = tree.spans[s]
                        .parent_span_id
                        .as_deref()
                        .and_then(|p| tree.find(p));
                    let gap = parent.map_or(0, |p| {
                        (tree.spans[s].start_us - tree.spans[p].start_us).max(0)
                    });
                    init.min(ms(gap))
                }
                Placement::Root | Placement::Orphan => init,
            },
            _ => 0.0,
        };
        out.push(ColdStart {
            function_name,
            request_id,
            init_duration_ms: init,
            span,
            on_critical_path: on_path,
            latency_explained_ms: explained,
        });
    }
    out
}

fn parsed_json(raw: Option<&str>) -> Value {
    raw.and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Array(Vec::new()))
}

fn span_object(
    tree: &TraceTree,
    i: usize,
    self_times: &[Option<i64>],
    trace_start: i64,
) -> Map<String, Value> {
    let s = &tree.spans[i];
    let mut o = Map::new();
    o.insert("span_id".into(), json!(s.span_id));
    o.insert("parent_span_id".into(), json!(s.parent_span_id));
    o.insert("name".into(), json!(s.name));
    o.insert("kind".into(), json!(s.kind));
    o.insert("status_code".into(), json!(s.status_code));
    if let Some(m) = &s.status_message {
        o.insert("status_message".into(), json!(m));
    }
    o.insert("service_name".into(), json!(s.service_name));
    o.insert("function_name".into(), json!(s.function_name));
    o.insert("request_id".into(), json!(s.request_id));
    o.insert("cold_start".into(), json!(s.cold_start));
    o.insert("start".into(), rfc3339(s.start_us));
    o.insert(
        "start_offset_ms".into(),
        json!(ms(s.start_us - trace_start)),
    );
    o.insert("duration_ms".into(), json!(s.duration_ms()));
    let attrs: Map<String, Value> = s
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    o.insert("attributes".into(), Value::Object(attrs));
    if s.events.is_some() {
        o.insert("events".into(), parsed_json(s.events.as_deref()));
    }
    if s.links.is_some() {
        o.insert("links".into(), parsed_json(s.links.as_deref()));
    }
    if tree.placement[i] == Placement::Orphan {
        o.insert("orphan".into(), json!(true));
    }
    o.insert("on_critical_path".into(), json!(self_times[i].is_some()));
    if let Some(t) = self_times[i] {
        o.insert("self_time_ms".into(), json!(ms(t)));
    }
    o
}

/// The nested span object of `root` and everything below it, built without
/// recursion (children first), capped at [`MAX_JSON_DEPTH`].
fn subtree(tree: &TraceTree, root: usize, self_times: &[Option<i64>], trace_start: i64) -> Value {
    // Pre-order with the display parent of each span (depth-capped).
    let mut order = Vec::new();
    let mut display_parent: Vec<Option<usize>> = vec![None; tree.spans.len()];
    let mut capped = vec![false; tree.spans.len()];
    let mut stack = vec![(root, 0usize, None::<usize>)];
    while let Some((i, depth, shown_under)) = stack.pop() {
        display_parent[i] = shown_under;
        order.push(i);
        let (child_depth, under) = if depth >= MAX_JSON_DEPTH {
            (depth, shown_under)
        } else {
            (depth + 1, Some(i))
        };
        for &c in tree.children[i].iter().rev() {
            capped[c] = depth >= MAX_JSON_DEPTH;
            stack.push((c, child_depth, under));
        }
    }
    let mut built: Vec<Option<Map<String, Value>>> = vec![None; tree.spans.len()];
    let mut kids: Vec<Vec<Value>> = vec![Vec::new(); tree.spans.len()];
    for &i in order.iter().rev() {
        let mut o = span_object(tree, i, self_times, trace_start);
        if capped[i] {
            o.insert("depth_capped".into(), json!(true));
        }
        let mut children = std::mem::take(&mut kids[i]);
        children.reverse();
        o.insert("children".into(), Value::Array(children));
        match display_parent[i] {
            Some(p) => kids[p].push(Value::Object(o)),
            None => built[i] = Some(o),
        }
    }
    built[root].take().map(Value::Object).unwrap_or(Value::Null)
}

/// The whole JSON answer for one trace.
pub fn trace_json(
    tree: &TraceTree,
    path: &CriticalPath,
    invocations: &[TraceInvocation],
    truncated: bool,
) -> Value {
    let (start, end) = tree.bounds();
    let mut self_times = vec![None; tree.spans.len()];
    for p in &path.spans {
        self_times[p.span] = Some(p.self_time_us);
    }
    let colds = cold_starts(tree, path, invocations);
    let mut by_function: BTreeMap<&str, f64> = BTreeMap::new();
    let mut cost = 0.0;
    let mut priced = 0;
    for inv in invocations {
        if let Some(c) = inv.cost_usd {
            cost += c;
            priced += 1;
            *by_function.entry(inv.function_name.as_str()).or_default() += c;
        }
    }
    let cold_json: Vec<Value> = colds
        .iter()
        .map(|c| {
            json!({
                "function_name": c.function_name,
                "request_id": c.request_id,
                "init_duration_ms": c.init_duration_ms,
                "span_id": c.span.map(|s| tree.spans[s].span_id.clone()),
                "on_critical_path": c.on_critical_path,
                "latency_explained_ms": c.latency_explained_ms,
            })
        })
        .collect();
    let detail: Vec<Value> = path
        .spans
        .iter()
        .map(|p| {
            let s = &tree.spans[p.span];
            json!({
                "span_id": s.span_id,
                "name": s.name,
                "service_name": s.service_name,
                "self_time_ms": ms(p.self_time_us),
            })
        })
        .collect();
    let untracked: i64 = path
        .segments
        .iter()
        .filter(|s| s.span.is_none())
        .map(|s| s.end_us - s.start_us)
        .sum();
    let other_roots: Vec<Value> = tree.roots[1..]
        .iter()
        .map(|&r| subtree(tree, r, &self_times, start))
        .collect();
    let invocations_json: Vec<Value> = invocations
        .iter()
        .map(|i| {
            json!({
                "function_name": i.function_name,
                "request_id": i.request_id,
                "cold_start": i.cold_start,
                "init_duration_ms": i.init_duration_ms,
                "duration_ms": i.duration_ms,
                "billed_duration_ms": i.billed_duration_ms,
                "memory_size_mb": i.memory_size_mb,
                "status": i.status,
                "cost_usd": i.cost_usd,
            })
        })
        .collect();
    json!({
        "trace_id": tree.spans[tree.main_root()].trace_id,
        "span_count": tree.spans.len(),
        "truncated": truncated,
        "start": rfc3339(start),
        "end": rfc3339(end),
        "duration_ms": ms(end - start),
        "root": subtree(tree, tree.main_root(), &self_times, start),
        "other_roots": other_roots,
        "orphan_count": tree.placement.iter().filter(|p| **p == Placement::Orphan).count(),
        "critical_path": path.spans.iter().map(|p| tree.spans[p.span].span_id.clone()).collect::<Vec<_>>(),
        "critical_path_detail": detail,
        "untracked_ms": ms(untracked),
        "cold_starts": cold_json,
        // A fold from 0: `sum` of no floats is -0.0, which JSON shows as such.
        "cold_start_ms_on_critical_path": colds.iter().map(|c| c.latency_explained_ms).fold(0.0, |a, b| a + b),
        "invocations": invocations_json,
        "cost_usd": if priced > 0 { json!(cost) } else { Value::Null },
        "cost_estimated": invocations.iter().any(|i| i.cost_estimated),
        "cost_by_function": by_function,
    })
}
