//! The HTTP API on `--api-addr`: SQL, health and Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn query(State(st): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
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
    st.engine.metrics.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
