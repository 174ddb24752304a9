//! Receivers: OTLP over HTTP (axum) and gRPC (tonic). Both end in
//! [`Receiver::accept`], which checks capacity, decodes, normalizes and hands
//! the request to the WAL; errors map to statuses once per protocol.

pub mod decompress;
pub mod grpc;
pub mod http;

use std::sync::Arc;

use crate::decode::otlp::{self, DecodeError, Encoding, Signal};
use crate::ingest::{Ingest, IngestError};
use crate::model::Normalized;
use crate::telemetry::CollectorMetrics;

/// Why a request was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Invocations(#[from] crate::decode::invocations_api::BodyError),
}

/// Settings shared by the receivers.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Largest body accepted, compressed and after decompression.
    pub max_body_size: usize,
    /// Bearer tokens accepted on ingest; empty = no authentication.
    pub ingest_tokens: Vec<String>,
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

    /// Decodes a body and makes it durable. `body` is already decompressed.
    pub async fn accept(
        &self,
        signal: Signal,
        encoding: Encoding,
        body: &[u8],
    ) -> Result<Normalized, AcceptError> {
        let counters = self.metrics.signal(signal);
        if let Err(e) = self.ingest.check_capacity() {
            counters.refused_requests.add(1);
            return Err(e.into());
        }
        let now = now_micros();
        let normalized = match otlp::decode(signal, encoding, body, now) {
            Ok(n) => n,
            Err(e) => {
                counters.refused_requests.add(1);
                return Err(e.into());
            }
        };
        self.store(signal, encoding, body, now, normalized).await
    }

    /// Makes a decoded request durable; `body` is what the WAL keeps.
    async fn store(
        &self,
        signal: Signal,
        encoding: Encoding,
        body: &[u8],
        now: i64,
        mut normalized: Normalized,
    ) -> Result<Normalized, AcceptError> {
        let counters = self.metrics.signal(signal);
        counters
            .received
            .add(normalized.accepted + normalized.rejected);
        counters.rejected.add(normalized.rejected);
        if normalized.accepted > 0 {
            let batches = std::mem::take(&mut normalized.batches);
            if let Err(e) = self
                .ingest
                .submit(otlp::record_kind(signal, encoding), now, body, batches)
                .await
            {
                counters.refused_requests.add(1);
                return Err(e.into());
            }
            counters.accepted.add(normalized.accepted);
        }
        Ok(normalized)
    }
}

impl Receiver {
    /// `POST /v1/invocations`: stores the valid rows, reports the others.
    pub async fn accept_invocations(
        &self,
        body: &[u8],
    ) -> Result<(Normalized, crate::decode::invocations_api::Rejections), AcceptError> {
        let counters = &self.metrics.invocations;
        if let Err(e) = self.ingest.check_capacity() {
            counters.refused_requests.add(1);
            return Err(e.into());
        }
        let (mut normalized, rejections) = match crate::decode::invocations_api::decode(body) {
            Ok(d) => d,
            Err(e) => {
                counters.refused_requests.add(1);
                return Err(e.into());
            }
        };
        counters
            .received
            .add(normalized.accepted + normalized.rejected);
        counters.rejected.add(normalized.rejected);
        if normalized.accepted > 0 {
            let batches = std::mem::take(&mut normalized.batches);
            let kind = crate::wal::RecordKind::InvocationsJson;
            self.ingest
                .submit(kind, now_micros(), body, batches)
                .await?;
            counters.accepted.add(normalized.accepted);
        }
        Ok((normalized, rejections))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
