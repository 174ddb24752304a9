//! OTLP requests (protobuf or OTLP/JSON) → normalized rows, and the export
//! responses in the request's encoding.

pub mod logs;
pub mod metrics;
pub mod spans;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::instances::Instances;
use crate::model::Normalized;
use crate::wal::RecordKind;

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Logs,
    Metrics,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }
}

/// Body encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// Why a body could not be decoded (the whole request is refused with 400).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid OTLP/JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("could not build rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(
        "the request's rows would repeat {bytes} bytes of resource and scope data \
         (each row holds its resource's attributes), more than the limit of {limit} \
         (four times --max-body-size); send fewer items per resource"
    )]
    Repetitive { bytes: usize, limit: usize },
}

pub fn record_kind(signal: Signal, encoding: Encoding) -> RecordKind {
    match (signal, encoding) {
        (Signal::Traces, Encoding::Protobuf) => RecordKind::TracesProto,
        (Signal::Traces, Encoding::Json) => RecordKind::TracesJson,
        (Signal::Logs, Encoding::Protobuf) => RecordKind::LogsProto,
        (Signal::Logs, Encoding::Json) => RecordKind::LogsJson,
        (Signal::Metrics, Encoding::Protobuf) => RecordKind::MetricsProto,
        (Signal::Metrics, Encoding::Json) => RecordKind::MetricsJson,
    }
}

/// The signal and encoding of an OTLP record kind; `None` for other kinds.
pub fn signal_of(kind: RecordKind) -> Option<(Signal, Encoding)> {
    Some(match kind {
        RecordKind::TracesProto => (Signal::Traces, Encoding::Protobuf),
        RecordKind::TracesJson => (Signal::Traces, Encoding::Json),
        RecordKind::LogsProto => (Signal::Logs, Encoding::Protobuf),
        RecordKind::LogsJson => (Signal::Logs, Encoding::Json),
        RecordKind::MetricsProto => (Signal::Metrics, Encoding::Protobuf),
        RecordKind::MetricsJson => (Signal::Metrics, Encoding::Json),
        RecordKind::InvocationsJson
        | RecordKind::TelemetryJson
        | RecordKind::FirehoseJson
        | RecordKind::CloudWatchJson => return None,
    })
}

fn parse<T: Message + Default + serde::de::DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<T, DecodeError> {
    Ok(match encoding {
        Encoding::Protobuf => T::decode(body)?,
        Encoding::Json => serde_json::from_slice(body)?,
    })
}

/// Decodes and normalizes one request body. `now_micros` is the receive time
/// (used where a record carries no time of its own).
pub fn decode(
    signal: Signal,
    encoding: Encoding,
    body: &[u8],
    now_micros: i64,
) -> Result<Normalized, DecodeError> {
    decode_with(signal, encoding, body, now_micros, None)
}

/// [`decode`], marking the first invocation of each instance seen in
/// `instances` as a cold start (see [`crate::instances`]).
pub fn decode_with(
    signal: Signal,
    encoding: Encoding,
    body: &[u8],
    now_micros: i64,
    instances: Option<&Instances>,
) -> Result<Normalized, DecodeError> {
    Ok(match signal {
        Signal::Traces => spans::normalize_with(
            &parse::<ExportTraceServiceRequest>(encoding, body)?,
            instances.map(|i| (i, now_micros)),
        )?,
        Signal::Logs => logs::normalize(
            &parse::<ExportLogsServiceRequest>(encoding, body)?,
            now_micros,
        )?,
        Signal::Metrics => {
            metrics::normalize(&parse::<ExportMetricsServiceRequest>(encoding, body)?)?
        }
    })
}

/// Traces requests of at most this many spans are built into rows by the
/// WAL writer, with the other small requests of their group commit (see
/// [`decode_for_ingest`]). Lambda functions export a handful of spans per
/// invocation; larger requests build their own batch on the receiving
/// worker, where the work is spread over the cores.
pub const SMALL_REQUEST_SPANS: usize = 32;

/// [`decode_with`] for the receivers, which also refuses a request whose
/// rows would repeat more than `max_expanded` bytes of resource and scope
/// data (each signal's `expansion`): a small body can otherwise expand a
/// thousandfold in memory. A traces request of at most
/// [`SMALL_REQUEST_SPANS`] spans is parsed and checked here (so the response
/// can report partial success) and left unbuilt
/// ([`crate::model::UnbuiltSpans`]); the WAL writer builds its rows after the
/// sync, as [`decode_with`] would have with `instances` and `now_micros`.
pub fn decode_for_ingest(
    signal: Signal,
    encoding: Encoding,
    body: &[u8],
    now_micros: i64,
    instances: &Instances,
    max_expanded: usize,
) -> Result<Normalized, DecodeError> {
    let check = |bytes: usize| {
        if bytes > max_expanded {
            return Err(DecodeError::Repetitive {
                bytes,
                limit: max_expanded,
            });
        }
        Ok(())
    };
    let req = match signal {
        Signal::Traces => parse::<ExportTraceServiceRequest>(encoding, body)?,
        Signal::Logs => {
            let req = parse::<ExportLogsServiceRequest>(encoding, body)?;
            check(logs::expansion(&req))?;
            return Ok(logs::normalize(&req, now_micros)?);
        }
        Signal::Metrics => {
            let req = parse::<ExportMetricsServiceRequest>(encoding, body)?;
            check(metrics::expansion(&req))?;
            return Ok(metrics::normalize(&req)?);
        }
    };
    let expansion = spans::expansion(&req);
    check(expansion)?;
    Ok(if spans::span_count(&req) <= SMALL_REQUEST_SPANS {
        spans::defer(req, now_micros, expansion)
    } else {
        spans::normalize_with(&req, Some((instances, now_micros)))?
    })
}

/// The bytes a request's rows would repeat, from (shared bytes, rows) per
/// group of rows that share them.
pub fn repeated_bytes(groups: impl IntoIterator<Item = (usize, usize)>) -> usize {
    groups
        .into_iter()
        .map(|(shared, rows)| shared.saturating_mul(rows))
        .fold(0, usize::saturating_add)
}

/// What every row of a resource repeats: its attributes (their encoded
/// size; the text the map holds is about as long) and the service and
/// function names taken from them (at most as long again, twice).
/// Each signal's `expansion` adds what else its rows share.
fn shared_bytes(resource: Option<&Resource>) -> usize {
    resource.map_or(0, |r| 3 * r.encoded_len())
}

/// An OTLP/JSON export response. OTLP/JSON follows the protobuf JSON
/// mapping, where an int64 is a string (`"rejectedSpans":"2"`), which the
/// `opentelemetry-proto` serde types write as a number.
fn json_response(signal: Signal, partial: Option<(i64, String)>) -> Vec<u8> {
    let Some((rejected, message)) = partial else {
        return b"{}".to_vec();
    };
    let count = match signal {
        Signal::Traces => "rejectedSpans",
        Signal::Logs => "rejectedLogRecords",
        Signal::Metrics => "rejectedDataPoints",
    };
    let body = serde_json::json!({
        "partialSuccess": { count: rejected.to_string(), "errorMessage": message }
    });
    body.to_string().into_bytes()
}

/// The export response for `signal`, with partial success when items were
/// rejected, encoded like the request.
///
/// A full success leaves `partial_success` unset, as OTLP asks: in JSON
/// that is `{}` (serde would write `{"partialSuccess":null}`).
pub fn response_body(signal: Signal, encoding: Encoding, n: &Normalized) -> Vec<u8> {
    let rejected = i64::try_from(n.rejected).unwrap_or(i64::MAX);
    let message = n.reject_reason.clone().unwrap_or_default();
    let partial = n.rejected > 0;
    if encoding == Encoding::Json {
        return json_response(signal, partial.then_some((rejected, message)));
    }
    match signal {
        Signal::Traces => Message::encode_to_vec(&ExportTraceServiceResponse {
            partial_success: partial.then_some(ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: message,
            }),
        }),
        Signal::Logs => Message::encode_to_vec(&ExportLogsServiceResponse {
            partial_success: partial.then_some(ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: message,
            }),
        }),
        Signal::Metrics => Message::encode_to_vec(&ExportMetricsServiceResponse {
            partial_success: partial.then_some(ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message: message,
            }),
        }),
    }
}

#[cfg(test)]
mod tests;
