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

macro_rules! id_type {
    ($name:ident, $len:expr, $kind:expr) => {
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
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
    };
}

id_type!(TraceId, 16, "trace id");
id_type!(SpanId, 8, "span id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase() {
        let id = TraceId::try_from(&[0xAB; 16][..]).expect("valid id");
        assert_eq!(id.to_hex(), "ab".repeat(16));
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
