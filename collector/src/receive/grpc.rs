//! OTLP/gRPC: the Trace, Logs and Metrics `Export` methods (gzip and zstd).
//!
//! The services take the message as raw bytes through [`RawCodec`] instead
//! of tonic's prost codec, for two reasons: the bytes go to the WAL as they
//! arrived (no re-encoding), and an undecodable message is answered with
//! `INVALID_ARGUMENT` as OTLP asks, where the prost codec says `INTERNAL`.
//! tonic caps the decompressed message at `max_body_size` (`OUT_OF_RANGE`).
//! A request whose message has not arrived within [`BODY_TIME`] is answered
//! `DEADLINE_EXCEEDED`, as OTLP/HTTP answers a stalled body (see
//! [`super::body`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tonic::body::Body;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::body::BODY_TIME;
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
        let req = req.map(|b| Deadline::new(b, BODY_TIME));
        Ok(grpc.unary(method, req).await)
    })
}

/// A request body that fails with `DEADLINE_EXCEEDED` once `limit` has
/// passed before it ended: a client that stops sending mid-message does not
/// hold its stream for as long as it likes.
struct Deadline<B> {
    inner: Pin<Box<B>>,
    expires: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl<B> Deadline<B> {
    fn new(inner: B, limit: Duration) -> Self {
        Deadline {
            inner: Box::pin(inner),
            expires: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body,
    B::Error: Into<StdError>,
{
    type Data = B::Data;
    type Error = StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, StdError>>> {
        if let Poll::Ready(frame) = self.inner.as_mut().poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.expires.as_mut().poll(cx).is_ready() {
            let why = format!("the request message did not arrive within {:?}", self.limit);
            return Poll::Ready(Some(Err(Box::new(Status::deadline_exceeded(why)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of one frame, after which it ends, or stalls as a client that
    /// stopped sending would.
    struct OneFrame {
        frame: Option<Bytes>,
        ends: bool,
    }

    impl OneFrame {
        fn new(bytes: &'static [u8], ends: bool) -> Self {
            OneFrame {
                frame: Some(Bytes::from_static(bytes)),
                ends,
            }
        }
    }

    impl http_body::Body for OneFrame {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            match self.frame.take() {
                Some(b) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
                None if self.ends => Poll::Ready(None),
                None => Poll::Pending,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.ends && self.frame.is_none()
        }
    }

    #[derive(Clone)]
    struct Accepts;

    impl UnaryService<Bytes> for Accepts {
        type Response = Vec<u8>;
        type Future = BoxFuture<Response<Vec<u8>>, Status>;

        fn call(&mut self, _req: Request<Bytes>) -> Self::Future {
            Box::pin(async { Ok(Response::new(Vec::new())) })
        }
    }

    /// A message that stops arriving is answered DEADLINE_EXCEEDED once
    /// the body's time is up, through tonic's own request handling.
    #[tokio::test]
    async fn a_stalled_message_is_answered_deadline_exceeded() {
        let limit = Duration::from_millis(50);
        let req = http::Request::builder()
            .uri("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            .header("content-type", "application/grpc")
            // The 5-byte prefix of an uncompressed 100-byte message; none of
            // the message follows.
            .body(Deadline::new(
                OneFrame::new(&[0, 0, 0, 0, 100], false),
                limit,
            ))
            .expect("request");
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            Grpc::new(RawCodec).unary(Accepts, req),
        )
        .await
        .expect("answered, not left waiting for the rest of the message");
        let status = Status::from_header_map(resp.headers()).expect("a trailers-only status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(
            status.message().contains("did not arrive within 50ms"),
            "{status:?}"
        );

        // A body that ends in time is read whole.
        let whole: &'static [u8] = &[0, 0, 0, 0, 2, b'o', b'k'];
        let req = http::Request::builder()
            .uri("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            .header("content-type", "application/grpc")
            .body(Deadline::new(OneFrame::new(whole, true), limit))
            .expect("request");
        let resp = Grpc::new(RawCodec).unary(Accepts, req).await;
        assert!(
            Status::from_header_map(resp.headers()).is_none_or(|s| s.code() == tonic::Code::Ok),
            "{:?}",
            resp.headers()
        );
    }
}
