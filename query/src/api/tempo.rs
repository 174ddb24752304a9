//! Trace endpoints on the API address: faasight's own trace view
//! (`/api/v1/traces/{id}`: tree, critical path, cold starts, cost) and the
//! subset of Grafana Tempo's HTTP API that Grafana's Tempo datasource uses
//! (trace by id in OTLP JSON or protobuf, search with tags or TraceQL, tag
//! names and values, echo, build info).

use std::collections::{BTreeSet, HashMap};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::http::ApiState;
use crate::traces::assemble::TraceTree;
use crate::traces::critical_path::critical_path;
use crate::traces::load::{Cols, load_invocations, load_spans, record_request_ids};
use crate::traces::search::{self, MAX_LIMIT, SearchRequest};
use crate::traces::traceql::{self, Attribute, Intrinsic, attribute_sql, parse_attribute};
use crate::traces::{parse_trace_id, summary};

/// The Tempo API version whose behaviour this API follows (Grafana decides
/// which features to use from it).
pub const TEMPO_API_VERSION: &str = "2.8.0";

/// Tag names and values listed per request.
const MAX_TAG_VALUES: usize = 1_000;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/traces/{trace_id}", get(trace_view))
        .route("/api/echo", get(|| async { "echo" }))
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/traces/{trace_id}", get(tempo_trace_v1))
        .route("/api/v2/traces/{trace_id}", get(tempo_trace_v2))
        .route("/api/search", get(tempo_search))
        .route("/api/search/tags", get(tags_v1))
        .route("/api/v2/search/tags", get(tags_v2))
        .route("/api/search/tag/{name}/values", get(values_v1))
        .route("/api/v2/search/tag/{name}/values", get(values_v2))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("trace {id} not found"))
}

/// `GET /api/v1/traces/{trace_id}`.
async fn trace_view(
    State(st): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_trace_id(&raw).map_err(ApiError::BadRequest)?;
    // The spans and the records that carry the trace id are independent
    // lookups; the invocations need both.
    let (spans, record_ids) = tokio::join!(
        load_spans(&st.engine, &id),
        record_request_ids(&st.engine, &id)
    );
    let (spans, truncated) = spans?;
    let mut request_ids: Vec<String> = spans.iter().filter_map(|s| s.request_id.clone()).collect();
    request_ids.sort();
    request_ids.dedup();
    let tree = TraceTree::assemble(spans).ok_or_else(|| not_found(&id))?;
    let invocations = load_invocations(&st.engine, &id, &request_ids, record_ids?).await?;
    let path = critical_path(&tree);
    Ok(axum::Json(summary::trace_json(&tree, &path, &invocations, truncated)).into_response())
}

async fn buildinfo() -> Response {
    axum::Json(json!({
        "version": TEMPO_API_VERSION,
        "revision": format!("faasight-{}", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

/// Tempo's v2 trace-by-id body: `message TraceByIDResponse { Trace trace = 1; }`,
/// whose `Trace` is wire-identical to OTLP `TracesData`.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/protobuf") || v.contains("application/x-protobuf"))
}

async fn trace_data(st: &ApiState, raw: &str) -> Result<(TracesData, bool), ApiError> {
    let id = parse_trace_id(raw).map_err(ApiError::BadRequest)?;
    let (spans, truncated) = load_spans(&st.engine, &id).await?;
    if spans.is_empty() {
        return Err(not_found(&id));
    }
    Ok((crate::traces::otlp::traces_data(&spans), truncated))
}

fn protobuf(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/protobuf")], bytes).into_response()
}

fn otlp_json(data: &TracesData) -> Result<Value, ApiError> {
    serde_json::to_value(data).map_err(|e| ApiError::Internal(format!("encoding the trace: {e}")))
}

/// `GET /api/traces/{id}`: `{"batches": [...]}` (or `Trace` in protobuf).
async fn tempo_trace_v1(
    State(st): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (data, _) = trace_data(&st, &raw).await?;
    if wants_protobuf(&headers) {
        return Ok(protobuf(data.encode_to_vec()));
    }
    let mut v = otlp_json(&data)?;
    let batches = v
        .get_mut("resourceSpans")
        .map(Value::take)
        .unwrap_or(Value::Array(Vec::new()));
    Ok(axum::Json(json!({ "batches": batches })).into_response())
}

/// `GET /api/v2/traces/{id}`: `{"trace": {"resourceSpans": [...]}}` (or
/// `TraceByIDResponse` in protobuf).
async fn tempo_trace_v2(
    State(st): State<ApiState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (data, truncated) = trace_data(&st, &raw).await?;
    if wants_protobuf(&headers) {
        let body = TraceByIdResponse { trace: Some(data) };
        return Ok(protobuf(body.encode_to_vec()));
    }
    let mut body = json!({ "trace": otlp_json(&data)? });
    if truncated {
        body["status"] = json!("PARTIAL");
        body["message"] = json!(format!(
            "the trace has more than {} spans; the first are shown",
            crate::traces::load::MAX_TRACE_SPANS
        ));
    }
    Ok(axum::Json(body).into_response())
}

fn param<'a>(p: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    p.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn int_param(p: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    param(p, name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("{name}={v:?}: expected an integer")))
        })
        .transpose()
}

fn duration_param(p: &HashMap<String, String>, name: &str) -> Result<Option<f64>, ApiError> {
    param(p, name)
        .map(|v| {
            traceql::parse_duration_literal(v)
                .map(|ns| ns as f64 / 1e6)
                .map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
        })
        .transpose()
}

/// Seconds either side of 1970 that every bound is clamped to: timestamps
/// are nanoseconds in SQL, which end in 1677 and 2262. A bound past them
/// (`end=99999999999`) means "no bound" and is read as such, rather than
/// failing inside the query's planning.
const MAX_RANGE_SECS: i64 = 9_000_000_000;

/// `start`/`end` in unix seconds as µs bounds.
fn range_params(p: &HashMap<String, String>) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let secs = |name| -> Result<Option<i64>, ApiError> {
        Ok(int_param(p, name)?.map(|s| s.clamp(-MAX_RANGE_SECS, MAX_RANGE_SECS) * 1_000_000))
    };
    let (start, end) = (secs("start")?, secs("end")?);
    // `end` is inclusive in Tempo (whole seconds): keep the whole last second.
    let end = end.map(|e| e.saturating_add(1_000_000));
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        return Err(ApiError::BadRequest("end must not be before start".into()));
    }
    Ok((start, end))
}

fn nanos_string(us: i64) -> String {
    (i128::from(us) * 1000).to_string()
}

/// `GET /api/search?q=…|tags=…&minDuration&maxDuration&limit&start&end&spss`.
async fn tempo_search(
    State(st): State<ApiState>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let query = match (param(&p, "q"), param(&p, "tags")) {
        (Some(q), _) => traceql::parse(q).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        (None, Some(tags)) => search::tags_to_query(tags).map_err(ApiError::BadRequest)?,
        (None, None) => traceql::SpansetExpr::Filter(None),
    };
    let (start_us, end_us) = range_params(&p)?;
    let limit = int_param(&p, "limit")?.unwrap_or(20);
    if limit < 1 {
        return Err(ApiError::BadRequest("limit must be at least 1".into()));
    }
    let spss = int_param(&p, "spss")?.unwrap_or(3).clamp(1, 100);
    let req = SearchRequest {
        query,
        start_us,
        end_us,
        min_duration_ms: duration_param(&p, "minDuration")?,
        max_duration_ms: duration_param(&p, "maxDuration")?,
        limit: usize::try_from(limit).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
        spans_per_set: usize::try_from(spss).unwrap_or(3),
    };
    let hits = search::search(&st.engine, &req).await?;
    let traces: Vec<Value> = hits
        .iter()
        .map(|h| {
            let spans: Vec<Value> = h
                .spans
                .iter()
                .map(|s| {
                    json!({
                        "spanID": s.span_id,
                        "name": s.name,
                        "startTimeUnixNano": nanos_string(s.start_us),
                        "durationNanos": format!("{:.0}", s.duration_ms * 1e6),
                        "attributes": [{
                            "key": "service.name",
                            "value": { "stringValue": s.service_name.clone().unwrap_or_default() },
                        }],
                    })
                })
                .collect();
            let set = json!({ "spans": spans, "matched": h.matched });
            json!({
                "traceID": h.trace_id,
                "rootServiceName": h.root_service_name,
                "rootTraceName": h.root_trace_name,
                "startTimeUnixNano": nanos_string(h.start_us),
                "durationMs": h.duration_ms.round() as u64,
                "spanSet": set,
                "spanSets": [set],
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "traces": traces,
        "metrics": { "inspectedTraces": hits.len(), "completedJobs": 1, "totalJobs": 1 },
    }))
    .into_response())
}

/// Range of a tag listing: `start`/`end`, by default the last 24 hours.
fn tag_range(p: &HashMap<String, String>) -> Result<String, ApiError> {
    let (start, end) = range_params(p)?;
    let start = start
        .or_else(|| end.map(|e| e - 24 * 3_600_000_000))
        .unwrap_or_else(|| Utc::now().timestamp_micros() - 24 * 3_600_000_000);
    let mut parts = vec![format!("s.time >= {}", micros_literal(start))];
    if let Some(e) = end {
        parts.push(format!("s.time < {}", micros_literal(e)));
    }
    Ok(parts.join(" AND "))
}

fn micros_literal(us: i64) -> String {
    let t = chrono::DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
    format!(
        "TIMESTAMP '{}'",
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

async fn strings(st: &ApiState, sql: &str, column: &str) -> Result<Vec<String>, ApiError> {
    let result = st.engine.execute(sql).await?;
    let mut out = Vec::new();
    for b in &result.batches {
        out.extend(Cols::new(b).strings(column)?.into_iter().flatten());
    }
    Ok(out)
}

async fn attribute_keys(st: &ApiState, column: &str, range: &str) -> Result<Vec<String>, ApiError> {
    let sql = format!(
        "SELECT DISTINCT k FROM (SELECT unnest(map_keys(s.{column})) AS k FROM spans s WHERE {range}) \
         ORDER BY k LIMIT {MAX_TAG_VALUES}"
    );
    strings(st, &sql, "k").await
}

/// `GET /api/search/tags`: `{"tagNames": [...]}`.
async fn tags_v1(
    State(st): State<ApiState>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let range = tag_range(&p)?;
    let mut names: BTreeSet<String> = attribute_keys(&st, "attributes", &range)
        .await?
        .into_iter()
        .collect();
    names.extend(attribute_keys(&st, "resource_attributes", &range).await?);
    names.insert("service.name".into());
    Ok(axum::Json(json!({ "tagNames": names })).into_response())
}

/// `GET /api/v2/search/tags[?scope=span|resource|intrinsic]`: `{"scopes": [...]}`.
async fn tags_v2(
    State(st): State<ApiState>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let range = tag_range(&p)?;
    let scope = param(&p, "scope").unwrap_or("all");
    if !matches!(scope, "all" | "none" | "span" | "resource" | "intrinsic") {
        return Err(ApiError::BadRequest(format!(
            "scope={scope:?}: expected span, resource, intrinsic or none"
        )));
    }
    let want = |s: &str| matches!(scope, "all" | "none") || scope == s;
    let mut scopes = Vec::new();
    if want("span") {
        let tags = attribute_keys(&st, "attributes", &range).await?;
        scopes.push(json!({ "name": "span", "tags": tags }));
    }
    if want("resource") {
        let mut tags: BTreeSet<String> = attribute_keys(&st, "resource_attributes", &range)
            .await?
            .into_iter()
            .collect();
        tags.insert("service.name".into());
        scopes.push(json!({ "name": "resource", "tags": tags }));
    }
    if want("intrinsic") {
        let tags: Vec<&str> = Intrinsic::ALL.iter().map(|(n, _)| *n).collect();
        scopes.push(json!({ "name": "intrinsic", "tags": tags }));
    }
    Ok(axum::Json(json!({ "scopes": scopes })).into_response())
}

/// Distinct values of a tag (a parsed attribute) in the range.
async fn tag_values(st: &ApiState, attr: &Attribute, range: &str) -> Result<Vec<String>, ApiError> {
    let (expr, extra) = match attr {
        Attribute::Intrinsic(Intrinsic::Duration | Intrinsic::TraceDuration) => {
            return Ok(Vec::new());
        }
        Attribute::Intrinsic(Intrinsic::RootName) => {
            ("s.name".to_string(), " AND s.parent_span_id IS NULL")
        }
        Attribute::Intrinsic(Intrinsic::RootServiceName) => (
            "s.service_name".to_string(),
            " AND s.parent_span_id IS NULL",
        ),
        other => (attribute_sql(other), ""),
    };
    let sql = format!(
        "SELECT DISTINCT v FROM (SELECT {expr} AS v FROM spans s WHERE {range}{extra}) \
         WHERE v IS NOT NULL ORDER BY v LIMIT {MAX_TAG_VALUES}"
    );
    strings(st, &sql, "v").await
}

/// An unscoped v1 tag name: an intrinsic, `service.name`, or any attribute.
fn v1_tag(name: &str) -> Attribute {
    match name {
        "service.name" => Attribute::Resource("service.name".into()),
        "name" | "status" | "kind" | "rootName" | "rootServiceName" => {
            parse_attribute(name).unwrap_or(Attribute::Any(name.into()))
        }
        "status.code" => Attribute::Intrinsic(Intrinsic::Status),
        _ => Attribute::Any(name.into()),
    }
}

/// `GET /api/search/tag/{name}/values`: `{"tagValues": [...]}`.
async fn values_v1(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let range = tag_range(&p)?;
    let values = tag_values(&st, &v1_tag(&name), &range).await?;
    Ok(axum::Json(json!({ "tagValues": values })).into_response())
}

fn value_type(attr: &Attribute, v: &str) -> &'static str {
    match attr {
        Attribute::Intrinsic(Intrinsic::Status | Intrinsic::Kind) => "keyword",
        Attribute::Intrinsic(_) => "string",
        _ if v.parse::<i64>().is_ok() => "int",
        _ if v.parse::<f64>().is_ok_and(f64::is_finite) => "float",
        _ if v == "true" || v == "false" => "bool",
        _ => "string",
    }
}

/// `GET /api/v2/search/tag/{scope.name}/values`: `{"tagValues": [{"type", "value"}]}`.
async fn values_v2(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let range = tag_range(&p)?;
    let attr = parse_attribute(&name).map_err(ApiError::BadRequest)?;
    let values = tag_values(&st, &attr, &range).await?;
    let typed: Vec<Value> = values
        .iter()
        .map(|v| json!({ "type": value_type(&attr, v), "value": v }))
        .collect();
    Ok(axum::Json(json!({ "tagValues": typed })).into_response())
}
