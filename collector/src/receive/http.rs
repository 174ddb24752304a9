//! OTLP/HTTP: `POST /v1/traces`, `/v1/logs`, `/v1/metrics` with protobuf or
//! JSON bodies, gzip or zstd, answered in the request's encoding.

use std::borrow::Cow;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;

use super::body::{BodyError, read_body};
use super::decompress::{DecompressError, decompress};
use super::{AcceptError, Receiver};
use crate::decode::firehose::FirehoseError;
use crate::decode::otlp::{self, DecodeError, Encoding, Signal};
use crate::decode::telemetry_api::TelemetryError;
use crate::ingest::IngestError;

/// `google.rpc.Status`, the error body OTLP/HTTP specifies. Not part of
/// `opentelemetry-proto`, and two fields are all OTLP clients read.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// Seconds a client should wait before retrying under back-pressure.
const RETRY_AFTER_SECS: &str = "1";

pub fn router(receiver: Receiver) -> Router {
    Router::new()
        .route(
            "/v1/traces",
            post(|s, h, b| export(s, h, b, Signal::Traces)),
        )
        .route("/v1/logs", post(|s, h, b| export(s, h, b, Signal::Logs)))
        .route(
            "/v1/metrics",
            post(|s, h, b| export(s, h, b, Signal::Metrics)),
        )
        .route("/v1/invocations", post(invocations))
        .route("/v1/lambda/telemetry", post(lambda_telemetry))
        .route("/v1/firehose", post(firehose))
        .with_state(receiver)
}

/// The HTTP status and message of a body that could not be read.
fn body_refusal(e: &BodyError) -> (StatusCode, String) {
    match e {
        BodyError::TooLarge { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{e} (--max-body-size)"),
        ),
        BodyError::TimedOut(_) => (StatusCode::REQUEST_TIMEOUT, e.to_string()),
        BodyError::Read(_) => (StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// The HTTP status of a decompression failure.
fn decompress_status(e: &DecompressError) -> StatusCode {
    match e {
        DecompressError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        DecompressError::Invalid { .. } => StatusCode::BAD_REQUEST,
        DecompressError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
    }
}

fn encoding_of(headers: &HeaderMap) -> Option<Encoding> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
        "application/json" => Some(Encoding::Json),
        _ => None,
    }
}

fn error(status: StatusCode, encoding: Encoding, message: String) -> Response {
    let body = RpcStatus {
        code: i32::from(status.as_u16()),
        message,
    };
    let (ct, bytes) = match encoding {
        Encoding::Protobuf => ("application/x-protobuf", body.encode_to_vec()),
        Encoding::Json => (
            "application/json",
            serde_json::to_vec(&body).unwrap_or_default(),
        ),
    };
    let mut resp = (status, [(header::CONTENT_TYPE, ct)], bytes).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    resp
}

async fn export(
    State(rx): State<Receiver>,
    headers: HeaderMap,
    body: Body,
    signal: Signal,
) -> Response {
    // Read first: answering with the body unread can reset the connection
    // before the client reads the answer (see `body`).
    let body = read_body(&headers, body, rx.config.max_body_size).await;
    let Some(encoding) = encoding_of(&headers) else {
        rx.metrics.signal(signal).refused_requests.add(1);
        let msg =
            "unsupported content type: use application/x-protobuf or application/json".to_string();
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, msg).into_response();
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !rx.authorized(auth) {
        return error(
            StatusCode::UNAUTHORIZED,
            encoding,
            "missing or invalid ingest token".into(),
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            rx.metrics.signal(signal).refused_requests.add(1);
            let (status, message) = body_refusal(&e);
            return error(status, encoding, message);
        }
    };
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let body = match decompress(content_encoding, &body, rx.config.max_body_size) {
        Ok(b) => b,
        Err(e) => {
            rx.metrics.signal(signal).refused_requests.add(1);
            let status = decompress_status(&e);
            return error(status, encoding, e.to_string());
        }
    };
    match rx.accept(signal, encoding, &body).await {
        Ok(n) => {
            let ct = match encoding {
                Encoding::Protobuf => "application/x-protobuf",
                Encoding::Json => "application/json",
            };
            let bytes = otlp::response_body(signal, encoding, &n);
            (StatusCode::OK, [(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Err(AcceptError::Decode(e @ DecodeError::Repetitive { .. })) => {
            error(StatusCode::PAYLOAD_TOO_LARGE, encoding, e.to_string())
        }
        Err(AcceptError::Decode(e)) => error(StatusCode::BAD_REQUEST, encoding, e.to_string()),
        Err(
            e
            @ (AcceptError::Invocations(_) | AcceptError::Telemetry(_) | AcceptError::Firehose(_)),
        ) => error(StatusCode::BAD_REQUEST, encoding, e.to_string()),
        Err(AcceptError::Ingest(IngestError::Overloaded(why))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, encoding, why.to_string())
        }
        Err(AcceptError::Ingest(e)) => {
            tracing::error!(error = %e, "could not make a request durable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                encoding,
                "storage unavailable, retry later".into(),
            )
        }
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let mut r = (status, Json(serde_json::json!({ "error": message }))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    r
}

/// The JSON error of a refused request on the JSON ingest endpoints.
fn json_accept_error(e: AcceptError) -> Response {
    match e {
        AcceptError::Ingest(IngestError::Overloaded(why)) => {
            json_error(StatusCode::SERVICE_UNAVAILABLE, why)
        }
        AcceptError::Ingest(e) => {
            tracing::error!(error = %e, "could not make a request durable");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable, retry later",
            )
        }
        e @ AcceptError::Telemetry(TelemetryError::Repetitive { .. }) => {
            json_error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())
        }
        e @ (AcceptError::Invocations(_)
        | AcceptError::Decode(_)
        | AcceptError::Telemetry(_)
        | AcceptError::Firehose(_)) => json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// Reading, authorization and decompression of the JSON ingest endpoints.
async fn json_body(rx: &Receiver, headers: &HeaderMap, body: Body) -> Result<Bytes, Box<Response>> {
    let body = read_body(headers, body, rx.config.max_body_size)
        .await
        .map_err(|e| {
            let (status, message) = body_refusal(&e);
            Box::new(json_error(status, &message))
        })?;
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !rx.authorized(auth) {
        let r = json_error(StatusCode::UNAUTHORIZED, "missing or invalid ingest token");
        return Err(Box::new(r));
    }
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let inflated = match decompress(content_encoding, &body, rx.config.max_body_size) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(v)) => Some(Bytes::from(v)),
        Err(e) => return Err(Box::new(json_error(decompress_status(&e), &e.to_string()))),
    };
    Ok(inflated.unwrap_or(body))
}

/// `POST /v1/invocations`: 200 with the count stored and the rows refused
/// (by index, with the reason); 400 when the body is not JSON rows or when
/// every row was refused.
async fn invocations(State(rx): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    let body = match json_body(&rx, &headers, body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match rx.accept_invocations(&body).await {
        Ok((n, rejected)) => {
            let rejected: Vec<_> = rejected
                .into_iter()
                .map(|(index, reason)| serde_json::json!({"index": index, "reason": reason}))
                .collect();
            let status = if n.accepted == 0 && !rejected.is_empty() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            (
                status,
                Json(serde_json::json!({"accepted": n.accepted, "rejected": rejected})),
            )
                .into_response()
        }
        Err(e) => json_accept_error(e),
    }
}

/// `POST /v1/lambda/telemetry?function_name=…`: 200 with the number of
/// events used; 400 (nothing stored) for a malformed batch.
async fn lambda_telemetry(
    State(rx): State<Receiver>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match json_body(&rx, &headers, body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match rx
        .accept_telemetry(query.as_deref().unwrap_or(""), &body)
        .await
    {
        Ok(n) => (
            StatusCode::OK,
            Json(serde_json::json!({"accepted": n.accepted})),
        )
            .into_response(),
        Err(e) => json_accept_error(e),
    }
}

/// `POST /v1/firehose`, answered as the Firehose HTTP-endpoint contract
/// asks: `{"requestId", "timestamp"}` echoing `X-Amz-Firehose-Request-Id`,
/// plus `errorMessage` on failure (4xx: do not retry as is; 5xx/429: retry).
async fn firehose(State(rx): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    let body = read_body(&headers, body, rx.config.max_body_size).await;
    let header_id = headers
        .get("x-amz-firehose-request-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let answer = |status: StatusCode, request_id: Option<String>, error: Option<String>| {
        let mut v = serde_json::json!({
            "requestId": request_id.unwrap_or_default(),
            "timestamp": chrono::Utc::now().timestamp_millis(),
        });
        if let Some(e) = error {
            v["errorMessage"] = serde_json::Value::String(e);
        }
        let mut r = (status, Json(v)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        r
    };
    let key = headers
        .get("x-amz-firehose-access-key")
        .and_then(|v| v.to_str().ok());
    if !rx.firehose_authorized(key) {
        return answer(
            StatusCode::UNAUTHORIZED,
            header_id,
            Some("invalid or missing access key".into()),
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let (status, message) = body_refusal(&e);
            return answer(status, header_id, Some(message));
        }
    };
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let body = match decompress(content_encoding, &body, rx.config.max_body_size) {
        Ok(b) => b,
        Err(e) => return answer(decompress_status(&e), header_id, Some(e.to_string())),
    };
    let request_id = header_id.or_else(|| crate::decode::firehose::request_id(&body));
    match rx.accept_firehose(&body).await {
        Ok(_) => answer(StatusCode::OK, request_id, None),
        Err(AcceptError::Ingest(IngestError::Overloaded(why))) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            request_id,
            Some(why.to_string()),
        ),
        Err(AcceptError::Ingest(e)) => {
            tracing::error!(error = %e, "could not make a request durable");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                request_id,
                Some("storage unavailable, retry later".into()),
            )
        }
        Err(
            e
            @ AcceptError::Firehose(FirehoseError::Inflated(_) | FirehoseError::Repetitive { .. }),
        ) => answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            request_id,
            Some(e.to_string()),
        ),
        Err(e) => answer(StatusCode::BAD_REQUEST, request_id, Some(e.to_string())),
    }
}
