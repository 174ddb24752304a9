//! OTLP/gRPC: the Trace, Logs and Metrics services (gzip and zstd). tonic
//! caps the decompressed message at `max_body_size`.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::{AcceptError, Receiver, now_micros};
use crate::decode::otlp::{self, Encoding, Signal};
use crate::ingest::IngestError;
use crate::model::Normalized;

fn status_of(e: AcceptError) -> Status {
    match e {
        AcceptError::Decode(e) => Status::invalid_argument(e.to_string()),
        AcceptError::Ingest(IngestError::Overloaded(why)) => Status::unavailable(why),
        AcceptError::Ingest(e) => {
            tracing::error!(error = %e, "could not make a request durable");
            Status::unavailable("storage unavailable, retry later")
        }
    }
}

impl Receiver {
    fn check_grpc<T>(&self, req: &Request<T>, signal: Signal) -> Result<(), Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !self.authorized(auth) {
            return Err(Status::unauthenticated("missing or invalid ingest token"));
        }
        if let Err(e) = self.ingest.check_capacity() {
            self.metrics.signal(signal).refused_requests.add(1);
            return Err(status_of(e.into()));
        }
        Ok(())
    }

    async fn store_grpc<M: Message>(
        &self,
        signal: Signal,
        msg: &M,
        normalize: impl FnOnce(&M, i64) -> Result<Normalized, arrow::error::ArrowError>,
    ) -> Result<Normalized, Status> {
        let now = now_micros();
        let normalized = normalize(msg, now).map_err(|e| Status::internal(e.to_string()))?;
        // The WAL keeps the request in protobuf, as the HTTP path does.
        let body = msg.encode_to_vec();
        self.store(signal, Encoding::Protobuf, &body, now, normalized)
            .await
            .map_err(status_of)
    }
}

fn partial(n: &Normalized) -> (i64, String) {
    (
        i64::try_from(n.rejected).unwrap_or(i64::MAX),
        n.reject_reason.clone().unwrap_or_default(),
    )
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.check_grpc(&req, Signal::Traces)?;
        let n = self
            .store_grpc(Signal::Traces, req.get_ref(), |m, _| {
                otlp::spans::normalize(m)
            })
            .await?;
        let (rejected_spans, error_message) = partial(&n);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (n.rejected > 0).then_some(
                opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                },
            ),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.check_grpc(&req, Signal::Logs)?;
        let n = self
            .store_grpc(Signal::Logs, req.get_ref(), otlp::logs::normalize)
            .await?;
        let (rejected_log_records, error_message) = partial(&n);
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: (n.rejected > 0).then_some(
                opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                },
            ),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.check_grpc(&req, Signal::Metrics)?;
        let n = self
            .store_grpc(Signal::Metrics, req.get_ref(), |m, _| {
                otlp::metrics::normalize(m)
            })
            .await?;
        let (rejected_data_points, error_message) = partial(&n);
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: (n.rejected > 0).then_some(
                opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                },
            ),
        }))
    }
}

/// The three services, configured with compression and the size cap.
pub fn services(
    receiver: Receiver,
) -> (
    TraceServiceServer<Receiver>,
    LogsServiceServer<Receiver>,
    MetricsServiceServer<Receiver>,
) {
    let limit = receiver.config.max_body_size;
    macro_rules! configure {
        ($server:ident) => {
            $server::new(receiver.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit)
        };
    }
    (
        configure!(TraceServiceServer),
        configure!(LogsServiceServer),
        configure!(MetricsServiceServer),
    )
}
