//! Request-body decompression with a cap on the *decompressed* size, read as
//! a stream so that a gzip bomb is refused after `limit` bytes, never fully
//! inflated. This is the only place allowed to build decompressors (see
//! `clippy.toml`).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::borrow::Cow;
use std::io::Read;

/// Why a body could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("decompressed body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("invalid {encoding} stream: {source}")]
    Invalid {
        encoding: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("unsupported content encoding {0:?}")]
    Unsupported(String),
}

/// Decompresses `body` according to a `Content-Encoding` value.
pub fn decompress<'a>(
    content_encoding: Option<&str>,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, DecompressError> {
    let encoding = content_encoding
        .map(str::trim)
        .unwrap_or("identity")
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => {
            if body.len() > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            Ok(Cow::Borrowed(body))
        }
        "gzip" | "x-gzip" => {
            read_capped(flate2::read::MultiGzDecoder::new(body), limit, "gzip").map(Cow::Owned)
        }
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::new(body).map_err(|source| {
                DecompressError::Invalid {
                    encoding: "zstd",
                    source,
                }
            })?;
            // Bound the decoder's window (and so its memory) to 32 MiB.
            decoder
                .window_log_max(25)
                .map_err(|source| DecompressError::Invalid {
                    encoding: "zstd",
                    source,
                })?;
            read_capped(decoder, limit, "zstd").map(Cow::Owned)
        }
        other => Err(DecompressError::Unsupported(other.to_string())),
    }
}

fn read_capped(
    reader: impl Read,
    limit: usize,
    encoding: &'static str,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|source| DecompressError::Invalid { encoding, source })?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn gzip_and_zstd_round_trip() {
        let data = b"hello otlp".repeat(100);
        assert_eq!(
            &*decompress(Some("gzip"), &gzip(&data), 1 << 20).expect("gzip"),
            &data[..]
        );
        let z = zstd::encode_all(&data[..], 3).expect("zstd");
        assert_eq!(
            &*decompress(Some("zstd"), &z, 1 << 20).expect("zstd"),
            &data[..]
        );
        assert_eq!(
            &*decompress(None, &data, 1 << 20).expect("identity"),
            &data[..]
        );
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 200_000);
        assert!(matches!(
            decompress(Some("gzip"), &bomb, 4 << 20),
            Err(DecompressError::TooLarge { limit }) if limit == 4 << 20
        ));
    }

    #[test]
    fn bad_streams_and_encodings_are_errors() {
        assert!(matches!(
            decompress(Some("gzip"), b"not gzip at all", 1024),
            Err(DecompressError::Invalid { .. })
        ));
        let mut truncated = gzip(b"some data that will be cut");
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            decompress(Some("gzip"), &truncated, 1024),
            Err(DecompressError::Invalid { .. })
        ));
        assert!(matches!(
            decompress(Some("br"), b"x", 1024),
            Err(DecompressError::Unsupported(_))
        ));
        assert!(matches!(
            decompress(None, &[0; 2048], 1024),
            Err(DecompressError::TooLarge { .. })
        ));
    }
}
