//! Reading an HTTP request body within `--max-body-size`, so that a client
//! sending too much still reads the `413`.
//!
//! Answering before the body is read, as axum's `DefaultBodyLimit` does,
//! closes the connection with the rest of the body unread: the kernel then
//! resets it, and a client still writing gets a broken pipe instead of the
//! status (an OTLP exporter retries a connection error; it drops a batch
//! refused with `413`). So past the limit the body is read on and thrown
//! away, up to [`DRAIN_BYTES`] more within [`DRAIN_TIME`], before the
//! answer; a body declared larger than that is refused at once, since no
//! draining could save its connection. Nothing past the limit is kept.
//!
//! A body must arrive whole within [`BODY_TIME`]: a client that declares a
//! length and stops sending (or trickles) would otherwise hold its
//! connection and task for as long as it likes.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

/// How much past the limit is read and thrown away so the client gets the
/// answer.
const DRAIN_BYTES: usize = 32 << 20;

/// How long the thrown-away part may take.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// How long a whole body may take to arrive: 16 MiB (the default limit)
/// at 280 KB/s.
pub const BODY_TIME: Duration = Duration::from_secs(60);

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error("could not read the request body: {0}")]
    Read(String),
}

/// The whole body, or [`BodyError::TooLarge`] once it passes `limit`, or
/// [`BodyError::TimedOut`] when it takes longer than [`BODY_TIME`].
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    read_body_within(headers, body, limit, BODY_TIME).await
}

async fn read_body_within(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    time: Duration,
) -> Result<Bytes, BodyError> {
    tokio::time::timeout(time, read_whole(headers, body, limit))
        .await
        .unwrap_or(Err(BodyError::TimedOut(time)))
}

async fn read_whole(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut stream = body.into_data_stream();
    if let Some(n) = declared
        && n > limit
    {
        if n - limit <= DRAIN_BYTES {
            drain(&mut stream).await;
        }
        return Err(BodyError::TooLarge { limit });
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        len += chunk.len();
        if len > limit {
            drain(&mut stream).await;
            return Err(BodyError::TooLarge { limit });
        }
        chunks.push(chunk);
    }
    // One chunk (the usual case) is returned as it is; more are joined.
    if chunks.len() == 1 {
        return Ok(chunks.swap_remove(0));
    }
    let mut joined = BytesMut::with_capacity(len);
    for chunk in &chunks {
        joined.extend_from_slice(chunk);
    }
    Ok(joined.freeze())
}

/// Reads and drops up to [`DRAIN_BYTES`] within [`DRAIN_TIME`].
async fn drain(stream: &mut axum::body::BodyDataStream) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut dropped = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            dropped += chunk.len();
            if dropped > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(chunks: Vec<&'static [u8]>) -> Body {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn chunks_are_joined_in_order_up_to_the_limit() {
        let body = chunked(vec![b"ab", b"cd", b"e"]);
        let got = read_body(&HeaderMap::new(), body, 5).await.expect("read");
        assert_eq!(&got[..], b"abcde");
        let one = read_body(&HeaderMap::new(), Body::from("xyz"), 3)
            .await
            .expect("read");
        assert_eq!(&one[..], b"xyz");
        let empty = read_body(&HeaderMap::new(), Body::empty(), 3)
            .await
            .expect("read");
        assert!(empty.is_empty());
    }

    /// A client that stops sending gets no more than the body's time.
    #[tokio::test]
    async fn a_body_that_stops_arriving_times_out() {
        let stalled = Body::from_stream(
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"ab"))])
                .chain(futures::stream::pending()),
        );
        let time = Duration::from_millis(50);
        let err = read_body_within(&HeaderMap::new(), stalled, 1024, time)
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::TimedOut(t) if t == time), "{err}");
        let whole = read_body_within(&HeaderMap::new(), chunked(vec![b"ab", b"c"]), 1024, time)
            .await
            .expect("read");
        assert_eq!(&whole[..], b"abc");
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused_whatever_it_declares() {
        let body = chunked(vec![b"ab", b"cd", b"e"]);
        let err = read_body(&HeaderMap::new(), body, 4).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 4 }), "{err}");
        // Declared too large: refused without reading it.
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "100".parse().expect("header"));
        let err = read_body(&headers, Body::from("ab"), 4).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { .. }), "{err}");
        // Declared small, sent large: the bytes count, not the header.
        headers.insert(header::CONTENT_LENGTH, "2".parse().expect("header"));
        let body = chunked(vec![b"abc", b"def"]);
        let err = read_body(&headers, body, 4).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_broken_body_is_a_read_error() {
        let stream = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let err = read_body(&HeaderMap::new(), Body::from_stream(stream), 10)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");
    }
}
