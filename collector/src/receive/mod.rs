//! Receivers: OTLP over HTTP (axum) and gRPC (tonic). Both end in
//! [`Receiver::accept`], which checks capacity, decodes, normalizes and hands
//! the request to the WAL; errors map to statuses once per protocol.

pub mod body;
pub mod decompress;
pub mod grpc;
pub mod http;

use std::sync::Arc;

use crate::decode::otlp::{self, DecodeError, Encoding, Signal};
use crate::decode::{firehose, invocations_api, telemetry_api};
use crate::ingest::{Ingest, IngestError};
use crate::model::Normalized;
use crate::telemetry::{CollectorMetrics, SignalCounters};
use crate::wal::RecordKind;

/// Why a request was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Invocations(#[from] crate::decode::invocations_api::BodyError),
    #[error(transparent)]
    Telemetry(#[from] crate::decode::telemetry_api::TelemetryError),
    #[error(transparent)]
    Firehose(#[from] crate::decode::firehose::FirehoseError),
}

/// How much larger than the largest body a request may become in memory.
/// Every row holds a copy of what its resource (or log group) shares with
/// the others, so rows can be far larger than the body: a 300 KB traces
/// request of 2,000 spans under one 200 KB resource took the server from 75
/// to 883 MB. And each of a Firehose delivery's records is gzip'd on its
/// own. A request whose rows would repeat, or whose records inflate to,
/// more than this many times `--max-body-size` is refused as a whole (HTTP
/// 413, gRPC `INVALID_ARGUMENT`). Real requests stay far below: 8,192 spans
/// under a 1 KB resource count as 24 MiB against the default 64 MiB.
pub const MAX_EXPANSION: usize = 4;

/// Settings shared by the receivers.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Largest body accepted, compressed and after decompression.
    pub max_body_size: usize,
    /// Bearer tokens accepted on ingest; empty = no authentication.
    pub ingest_tokens: Vec<String>,
    /// The access key Firehose must send (`X-Amz-Firehose-Access-Key`);
    /// `None` = not checked.
    pub firehose_access_key: Option<String>,
}

/// The shared core of the receivers.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub ingest: Ingest,
    pub metrics: Arc<CollectorMetrics>,
    pub config: Arc<ReceiverConfig>,
}

pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Receiver {
    /// True when tokens are off or `authorization` carries one of them.
    pub fn authorized(&self, authorization: Option<&str>) -> bool {
        if self.config.ingest_tokens.is_empty() {
            return true;
        }
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return false;
        };
        self.config
            .ingest_tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), token.trim().as_bytes()))
    }

    /// The most one request may become in memory beyond its body: rows
    /// repeating shared data, inflated Firehose records
    /// ([`MAX_EXPANSION`] times the largest body).
    pub fn max_expanded_bytes(&self) -> usize {
        self.config.max_body_size.saturating_mul(MAX_EXPANSION)
    }

    /// Decodes an OTLP body and makes it durable. `body` is already
    /// decompressed.
    pub async fn accept(
        &self,
        signal: Signal,
        encoding: Encoding,
        body: &[u8],
    ) -> Result<Normalized, AcceptError> {
        let now = now_micros();
        let kind = otlp::record_kind(signal, encoding);
        let decoded = self.accept_with(self.metrics.signal(signal), kind, body, now, || {
            let instances = self.ingest.instances().as_ref();
            let max_expanded = self.max_expanded_bytes();
            Ok((
                otlp::decode_for_ingest(signal, encoding, body, now, instances, max_expanded)?,
                (),
            ))
        });
        Ok(decoded.await?.0)
    }

    /// `POST /v1/invocations`: stores the valid rows, reports the others.
    pub async fn accept_invocations(
        &self,
        body: &[u8],
    ) -> Result<(Normalized, invocations_api::Rejections), AcceptError> {
        let kind = RecordKind::InvocationsJson;
        self.accept_with(&self.metrics.invocations, kind, body, now_micros(), || {
            Ok(invocations_api::decode(body)?)
        })
        .await
    }

    /// `POST /v1/lambda/telemetry?…`: a Telemetry API batch, whole or not at all.
    pub async fn accept_telemetry(
        &self,
        query: &str,
        body: &[u8],
    ) -> Result<Normalized, AcceptError> {
        let now = now_micros();
        let framed = telemetry_api::wal_body(query, body);
        let counters = &self.metrics.lambda_telemetry;
        let max_expanded = self.max_expanded_bytes();
        let accepted = self.accept_with(counters, RecordKind::TelemetryJson, &framed, now, || {
            Ok((telemetry_api::decode(query, body, now, max_expanded)?, ()))
        });
        Ok(accepted.await?.0)
    }

    /// True when no Firehose access key is configured or `key` matches it.
    pub fn firehose_authorized(&self, key: Option<&str>) -> bool {
        match &self.config.firehose_access_key {
            None => true,
            Some(expected) => {
                key.is_some_and(|k| constant_time_eq(expected.as_bytes(), k.as_bytes()))
            }
        }
    }

    /// `POST /v1/firehose`: a delivery, whole or not at all.
    pub async fn accept_firehose(&self, body: &[u8]) -> Result<Normalized, AcceptError> {
        let now = now_micros();
        let max_expanded = self.max_expanded_bytes();
        let counters = &self.metrics.firehose;
        let accepted = self.accept_with(counters, RecordKind::FirehoseJson, body, now, || {
            Ok((firehose::decode(body, now, max_expanded)?, ()))
        });
        Ok(accepted.await?.0)
    }

    /// Events of the CloudWatch poller (a `cloudwatch::PolledBatch`).
    pub async fn accept_cloudwatch(&self, body: &[u8]) -> Result<Normalized, AcceptError> {
        let now = now_micros();
        let counters = &self.metrics.cloudwatch;
        let accepted = self.accept_with(counters, RecordKind::CloudWatchJson, body, now, || {
            let batch: crate::cloudwatch::PolledBatch = serde_json::from_slice(body)
                .map_err(|e| firehose::FirehoseError::Body(e.to_string()))?;
            // The poller's own batches: AWS bounds their names (512
            // characters) and events per call (10,000), and a refusal would
            // stall the poller on the same events.
            let n = firehose::decode_subscriptions(&batch.messages, now, usize::MAX)?;
            Ok((n, ()))
        });
        Ok(accepted.await?.0)
    }

    /// The shared path: capacity check, decode, counters, WAL.
    async fn accept_with<T>(
        &self,
        counters: &SignalCounters,
        kind: RecordKind,
        body: &[u8],
        now: i64,
        decode: impl FnOnce() -> Result<(Normalized, T), AcceptError>,
    ) -> Result<(Normalized, T), AcceptError> {
        let refused = |e: AcceptError| {
            counters.refused_requests.add(1);
            e
        };
        self.ingest
            .check_capacity()
            .map_err(|e| refused(e.into()))?;
        let (mut normalized, extra) = decode().map_err(refused)?;
        counters
            .received
            .add(normalized.accepted + normalized.rejected);
        counters.rejected.add(normalized.rejected);
        if normalized.accepted > 0 {
            let batches = std::mem::take(&mut normalized.batches);
            let unbuilt = normalized.unbuilt.take();
            self.ingest
                .submit(kind, now, body, batches, unbuilt)
                .await
                .map_err(|e| refused(e.into()))?;
            counters.accepted.add(normalized.accepted);
        }
        Ok((normalized, extra))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
