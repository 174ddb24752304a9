//! The HTTP API on `--api-addr`: SQL, health and Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use faasight_collector::receive::body::{BodyError, read_body};
use faasight_collector::telemetry::CollectorMetrics;

use super::errors::ApiError;
use crate::engine::QueryEngine;
use crate::format::{self, Format};

/// What the API handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub engine: QueryEngine,
    pub collector_metrics: Arc<CollectorMetrics>,
    /// Set once recovery is done and every listener is bound.
    pub ready: Arc<AtomicBool>,
    /// The rules engine, when a rules directory is loaded.
    pub rules: Option<crate::rules::Rules>,
}

#[derive(Debug, serde::Deserialize)]
struct QueryRequest {
    sql: String,
    #[serde(default)]
    format: Format,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/query", post(query))
        .route("/api/v1/functions", get(functions))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/recommendations", get(recommendations))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(super::tempo::routes())
        .with_state(state)
}

/// The largest `POST /api/v1/query` body (axum's default for the JSON it
/// replaced): SQL, not data.
const MAX_QUERY_BODY: usize = 2 << 20;

async fn query(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, MAX_QUERY_BODY)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            BodyError::TimedOut(_) => ApiError::BodyTimedOut(e.to_string()),
            BodyError::Read(_) => ApiError::BadRequest(e.to_string()),
        })?;
    let req: QueryRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if req.format == Format::Table {
        return Err(ApiError::BadRequest(
            "format must be json, ndjson, csv or arrow".into(),
        ));
    }
    let result = st.engine.execute(&req.sql).await?;
    let bytes = format::encode(req.format, &result.schema, &result.batches)?;
    Ok(([(header::CONTENT_TYPE, req.format.content_type())], bytes).into_response())
}

#[derive(Debug, serde::Deserialize)]
struct FunctionsParams {
    /// A duration back from now (`24h`, `7d`) or an RFC 3339 time.
    since: Option<String>,
    /// An RFC 3339 time or a duration back from now; default now.
    until: Option<String>,
}

/// A time parameter: RFC 3339, or a duration back from `now`.
pub(crate) fn time_param(
    name: &str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    humantime::parse_duration(value)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{name}={value:?}: expected a duration like 24h or 7d, or an RFC 3339 time"
            ))
        })
}

/// `GET /api/v1/functions?since=24h`: `function_stats` over the range, most
/// expensive first.
async fn functions(
    State(st): State<ApiState>,
    Query(params): Query<FunctionsParams>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let start = time_param("since", params.since.as_deref().unwrap_or("24h"), now)?;
    let end = match params.until.as_deref() {
        Some(v) => time_param("until", v, now)?,
        None => now,
    };
    if end <= start {
        return Err(ApiError::BadRequest("until must be after since".into()));
    }
    // Both bounds are formatted here, never copied from the request.
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let sql = format!(
        "SELECT * FROM function_stats('{}', '{}') ORDER BY cost_usd DESC NULLS LAST, function_name",
        fmt(start),
        fmt(end)
    );
    let result = st.engine.execute(&sql).await?;
    let rows = format::encode(Format::Json, &result.schema, &result.batches)?;
    let rows: serde_json::Value = serde_json::from_slice(&rows)
        .map_err(|e| ApiError::Internal(format!("encoding the summary: {e}")))?;
    let body = serde_json::json!({
        "since": fmt(start),
        "until": fmt(end),
        "functions": rows,
    });
    Ok(axum::Json(body).into_response())
}

fn time_json(us: Option<i64>) -> serde_json::Value {
    us.and_then(DateTime::<Utc>::from_timestamp_micros)
        .map(|t| serde_json::Value::String(t.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .unwrap_or(serde_json::Value::Null)
}

fn alert_json(a: &crate::rules::state::Alert) -> serde_json::Value {
    serde_json::json!({
        "rule": a.rule,
        "severity": a.severity.as_str(),
        "state": a.state,
        "labels": a.labels,
        "value": a.value,
        "savings_usd_month": a.savings_usd_month,
        "message": a.message,
        "description": a.description,
        "since": time_json(Some(a.since_us)),
        "firing_since": time_json(a.firing_since_us),
        "last_notified": time_json(a.last_notified_us),
    })
}

/// `GET /api/v1/alerts`: active alerts (pending and firing).
async fn alerts(State(st): State<ApiState>) -> Response {
    let list: Vec<serde_json::Value> = st
        .rules
        .as_ref()
        .map(|r| r.alerts().iter().map(alert_json).collect())
        .unwrap_or_default();
    axum::Json(serde_json::json!({
        "rules_enabled": st.rules.is_some(),
        "rules": st.rules.as_ref().map_or(0, |r| r.rule_count()),
        "alerts": list,
    }))
    .into_response()
}

/// `GET /api/v1/recommendations`: current findings with dollars, largest
/// savings first.
async fn recommendations(State(st): State<ApiState>) -> Response {
    let mut found: Vec<crate::rules::state::Alert> = st
        .rules
        .as_ref()
        .map(|r| r.alerts())
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.savings_usd_month.is_some_and(|s| s > 0.0))
        .collect();
    found.sort_by(|a, b| {
        b.savings_usd_month
            .unwrap_or(0.0)
            .total_cmp(&a.savings_usd_month.unwrap_or(0.0))
    });
    // A fold from 0: `sum` of no floats is -0.0, which JSON shows as such.
    let total = found
        .iter()
        .filter_map(|a| a.savings_usd_month)
        .fold(0.0, |a, b| a + b);
    axum::Json(serde_json::json!({
        "total_savings_usd_month": total,
        "recommendations": found.iter().map(alert_json).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn readyz(State(st): State<ApiState>) -> Response {
    if st.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
    }
}

async fn metrics(State(st): State<ApiState>) -> Response {
    let mut out = String::new();
    st.collector_metrics.render(&mut out);
    st.engine.render_metrics(&mut out);
    if let Some(rules) = &st.rules {
        let firing = rules
            .alerts()
            .iter()
            .filter(|a| a.state == crate::rules::state::AlertState::Firing)
            .count();
        rules.metrics().render(&mut out, firing as u64);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
