//! Trace and span ids: fixed-size newtypes over the bytes OTLP carries,
//! displayed (and stored) as lowercase hex.

use std::fmt;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be {expected} bytes, got {got}")]
    Length {
        kind: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{kind} must not be all zeros")]
    Zero { kind: &'static str },
}

/// An id's lowercase hex on the stack: what the decoders append to the id
/// columns, one per span, without a `String` each.
#[derive(Clone, Copy)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> Hex<N> {
    pub fn as_str(&self) -> &str {
        // `hex::encode_to_slice` writes only ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl<const N: usize> AsRef<str> for Hex<N> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

macro_rules! id_type {
    ($name:ident, $len:expr, $hex_len:expr, $kind:expr) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; $len]);

        impl TryFrom<&[u8]> for $name {
            type Error = IdError;

            fn try_from(bytes: &[u8]) -> Result<Self, IdError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| IdError::Length {
                    kind: $kind,
                    expected: $len,
                    got: bytes.len(),
                })?;
                if arr.iter().all(|b| *b == 0) {
                    return Err(IdError::Zero { kind: $kind });
                }
                Ok($name(arr))
            }
        }

        impl $name {
            /// Lowercase hex, as the id appears in SQL.
            pub fn hex(&self) -> Hex<$hex_len> {
                let mut out = [0u8; $hex_len];
                // The output is exactly twice the input: cannot fail.
                let _ = hex::encode_to_slice(self.0, &mut out);
                Hex(out)
            }

            /// [`Self::hex`] as an owned `String`.
            pub fn to_hex(&self) -> String {
                self.hex().as_str().to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.hex().as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.hex().as_str())
            }
        }
    };
}

id_type!(TraceId, 16, 32, "trace id");
id_type!(SpanId, 8, 16, "span id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase() {
        let id = TraceId::try_from(&[0xAB; 16][..]).expect("valid id");
        assert_eq!(id.to_hex(), "ab".repeat(16));
        let id = TraceId::try_from(
            &[
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
                0x32, 0x10,
            ][..],
        )
        .expect("valid id");
        assert_eq!(id.hex().as_str(), "0123456789abcdeffedcba9876543210");
        let id = SpanId::try_from(&[0x0f, 0xf0, 0, 0, 0, 0, 0, 0x01][..]).expect("valid id");
        assert_eq!(id.hex().as_str(), "0ff0000000000001");
        assert_eq!(id.to_string(), "0ff0000000000001");
    }

    #[test]
    fn wrong_length_and_zero_are_refused() {
        assert_eq!(
            TraceId::try_from(&[1u8; 15][..]),
            Err(IdError::Length {
                kind: "trace id",
                expected: 16,
                got: 15
            })
        );
        assert_eq!(
            SpanId::try_from(&[0u8; 8][..]),
            Err(IdError::Zero { kind: "span id" })
        );
    }
}
