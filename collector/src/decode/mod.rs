//! Decoders: request bodies → normalized rows of the tables.

pub mod attrs;
pub mod columns;
pub mod firehose;
pub mod invocations;
pub mod invocations_api;
pub mod lambda_report;
pub mod metric_stream;
pub mod otlp;
pub mod telemetry_api;

use crate::instances::Instances;
use crate::model::Normalized;
use crate::wal::RecordKind;

/// Why a WAL record could not be decoded again.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Otlp(#[from] otlp::DecodeError),
    #[error(transparent)]
    Invocations(#[from] invocations_api::BodyError),
    #[error(transparent)]
    Telemetry(#[from] telemetry_api::TelemetryError),
    #[error(transparent)]
    Firehose(#[from] firehose::FirehoseError),
}

/// Replay inflates a Firehose delivery's records up to this size in all; the
/// live path refused anything above four times `--max-body-size` already.
const REPLAY_DECOMPRESS_LIMIT: usize = 1 << 30;

/// Decodes a WAL record's body the way the live path did.
pub fn decode_record(
    kind: RecordKind,
    body: &[u8],
    received_at_micros: i64,
    instances: &Instances,
) -> Result<Normalized, ReplayError> {
    if let Some((signal, encoding)) = otlp::signal_of(kind) {
        return Ok(otlp::decode_with(
            signal,
            encoding,
            body,
            received_at_micros,
            Some(instances),
        )?);
    }
    Ok(match kind {
        RecordKind::InvocationsJson => invocations_api::decode(body)?.0,
        RecordKind::TelemetryJson => {
            let (query, events) = telemetry_api::split_wal_body(body)?;
            telemetry_api::decode(query, events, received_at_micros, usize::MAX)?
        }
        RecordKind::FirehoseJson => {
            firehose::decode(body, received_at_micros, REPLAY_DECOMPRESS_LIMIT)?
        }
        RecordKind::CloudWatchJson => {
            let batch: crate::cloudwatch::PolledBatch = serde_json::from_slice(body)
                .map_err(|e| firehose::FirehoseError::Body(e.to_string()))?;
            firehose::decode_subscriptions(&batch.messages, received_at_micros, usize::MAX)?
        }
        // OTLP kinds were decoded above.
        _ => Normalized::default(),
    })
}
