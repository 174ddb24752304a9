//! OTLP/gRPC: the Trace, Logs and Metrics `Export` methods (gzip and zstd).
//!
//! The services take the message as raw bytes through [`RawCodec`] instead
//! of tonic's prost codec, for two reasons: the bytes go to the WAL as they
//! arrived (no re-encoding), and an undecodable message is answered with
//! `INVALID_ARGUMENT` as OTLP asks, where the prost codec says `INTERNAL`.
//! tonic caps the decompressed message at `max_body_size` (`OUT_OF_RANGE`).

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use tonic::body::Body;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::{AcceptError, Receiver};
use crate::decode::otlp::{self, Encoding, Signal};
use crate::ingest::IngestError;

/// Passes message bytes through untouched in both directions.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

fn status_of(e: AcceptError) -> Status {
    match e {
        AcceptError::Decode(e) => Status::invalid_argument(e.to_string()),
        AcceptError::Invocations(e) => Status::invalid_argument(e.to_string()),
        AcceptError::Telemetry(e) => Status::invalid_argument(e.to_string()),
        AcceptError::Firehose(e) => Status::invalid_argument(e.to_string()),
        AcceptError::Ingest(IngestError::Overloaded(why)) => Status::unavailable(why),
        AcceptError::Ingest(e) => {
            tracing::error!(error = %e, "could not make a request durable");
            Status::unavailable("storage unavailable, retry later")
        }
    }
}

/// One `Export` method bound to its signal.
#[derive(Debug, Clone)]
struct ExportMethod {
    receiver: Receiver,
    signal: Signal,
}

impl UnaryService<Bytes> for ExportMethod {
    type Response = Vec<u8>;
    type Future = BoxFuture<Response<Vec<u8>>, Status>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let auth = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if !this.receiver.authorized(auth) {
                return Err(Status::unauthenticated("missing or invalid ingest token"));
            }
            let body = req.into_inner();
            let n = this
                .receiver
                .accept(this.signal, Encoding::Protobuf, &body)
                .await
                .map_err(status_of)?;
            Ok(Response::new(otlp::response_body(
                this.signal,
                Encoding::Protobuf,
                &n,
            )))
        })
    }
}

/// Serves `Export` of one OTLP service; everything else is UNIMPLEMENTED.
fn serve<B>(
    method: ExportMethod,
    max_size: usize,
    req: http::Request<B>,
) -> BoxFuture<http::Response<Body>, Infallible>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    Box::pin(async move {
        if !req.uri().path().ends_with("/Export") {
            return Ok(Status::unimplemented("only Export is served").into_http());
        }
        let mut accept = EnabledCompressionEncodings::default();
        accept.enable(CompressionEncoding::Gzip);
        accept.enable(CompressionEncoding::Zstd);
        let mut send = EnabledCompressionEncodings::default();
        send.enable(CompressionEncoding::Gzip);
        let mut grpc = Grpc::new(RawCodec)
            .apply_compression_config(accept, send)
            .apply_max_message_size_config(Some(max_size), None);
        Ok(grpc.unary(method, req).await)
    })
}

macro_rules! otlp_service {
    ($name:ident, $signal:expr, $path:literal) => {
        /// The OTLP gRPC service of one signal.
        #[derive(Debug, Clone)]
        pub struct $name(ExportMethod, usize);

        impl NamedService for $name {
            const NAME: &'static str = $path;
        }

        impl<B> Service<http::Request<B>> for $name
        where
            B: http_body::Body + Send + 'static,
            B::Error: Into<StdError> + Send + 'static,
        {
            type Response = http::Response<Body>;
            type Error = Infallible;
            type Future = BoxFuture<Self::Response, Self::Error>;

            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, req: http::Request<B>) -> Self::Future {
                serve(self.0.clone(), self.1, req)
            }
        }

        impl $name {
            pub fn new(receiver: Receiver) -> Self {
                let max = receiver.config.max_body_size;
                $name(
                    ExportMethod {
                        receiver,
                        signal: $signal,
                    },
                    max,
                )
            }
        }
    };
}

otlp_service!(
    TraceService,
    Signal::Traces,
    "opentelemetry.proto.collector.trace.v1.TraceService"
);
otlp_service!(
    LogsService,
    Signal::Logs,
    "opentelemetry.proto.collector.logs.v1.LogsService"
);
otlp_service!(
    MetricsService,
    Signal::Metrics,
    "opentelemetry.proto.collector.metrics.v1.MetricsService"
);

/// The three services.
pub fn services(receiver: Receiver) -> (TraceService, LogsService, MetricsService) {
    (
        TraceService::new(receiver.clone()),
        LogsService::new(receiver.clone()),
        MetricsService::new(receiver),
    )
}
