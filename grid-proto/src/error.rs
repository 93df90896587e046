//! Errors of the codec layer.

use std::fmt;

/// Why a received frame (or a payload inside it) could not be decoded.
///
/// Every variant except [`DecodeError::UnknownOp`] is fatal to the connection
/// that received it, as in Go (PROTOCOL.md §2.1, §8.4). See
/// [`DecodeError::is_fatal`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside `field`: `needed` more bytes were required but
    /// only `available` remained. A peer sent a cut-off message.
    Truncated {
        /// What was being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// `field` started with a msgpack `marker` that is not allowed there
    /// (e.g. `nil` or `str` where Go requires `bin`).
    WrongType {
        /// What was being read.
        field: &'static str,
        /// The offending msgpack marker byte.
        marker: u8,
    },
    /// An integer field held a negative value or one too large for its Go type.
    OutOfRange {
        /// What was being read.
        field: &'static str,
        /// The value found.
        value: i128,
    },
    /// The envelope array did not have exactly 7 elements.
    TupleLength {
        /// The element count announced by the array header.
        len: u32,
    },
    /// The `Op` field held a value that is not an op code. Not fatal: Go logs
    /// and ignores such a message, and so does the connection.
    UnknownOp {
        /// The raw op value.
        op: u8,
    },
    /// `FlagCRCxxh3` was set but the checksum did not match the bytes.
    CrcMismatch {
        /// The checksum carried by the message.
        received: u32,
        /// The checksum computed over the message.
        computed: u32,
    },
    /// A flag announced a trailer (CRC or subroute) that the message is too
    /// short to hold.
    MissingTrailer {
        /// `"crc"` or `"subroute"`.
        trailer: &'static str,
        /// Bytes available after the tuple.
        available: usize,
    },
    /// A frame was larger than the configured maximum message size.
    TooLarge {
        /// Size of the frame or message.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A payload string was not valid UTF-8.
    InvalidUtf8 {
        /// What was being read.
        field: &'static str,
    },
    /// A payload field had the right msgpack type but an invalid value
    /// (an instance id that is not 16 bytes, a bad timestamp extension...).
    InvalidValue {
        /// What was being read.
        field: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A payload nested arrays or maps deeper than the decoder follows.
    TooDeep {
        /// What was being read.
        field: &'static str,
    },
}

impl DecodeError {
    /// Whether the connection must be dropped (Go's behaviour). Only an
    /// unknown op is ignored and the connection kept.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, DecodeError::UnknownOp { .. })
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated {
                field,
                needed,
                available,
            } => {
                write!(
                    f,
                    "truncated {field}: needed {needed} bytes, {available} available"
                )
            }
            DecodeError::WrongType { field, marker } => {
                write!(f, "unexpected msgpack type 0x{marker:02x} for {field}")
            }
            DecodeError::OutOfRange { field, value } => write!(f, "{field} out of range: {value}"),
            DecodeError::TupleLength { len } => write!(f, "envelope has {len} elements, want 7"),
            DecodeError::UnknownOp { op } => write!(f, "unknown message type {op}"),
            DecodeError::CrcMismatch { received, computed } => {
                write!(
                    f,
                    "crc mismatch: received 0x{received:08x}, computed 0x{computed:08x}"
                )
            }
            DecodeError::MissingTrailer { trailer, available } => {
                write!(
                    f,
                    "missing {trailer} trailer: only {available} bytes after the envelope"
                )
            }
            DecodeError::TooLarge { size, max } => {
                write!(
                    f,
                    "message of {size} bytes exceeds the limit of {max} bytes"
                )
            }
            DecodeError::InvalidUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
            DecodeError::InvalidValue { field, reason } => write!(f, "invalid {field}: {reason}"),
            DecodeError::TooDeep { field } => write!(f, "{field} is nested too deeply"),
        }
    }
}

impl std::error::Error for DecodeError {}
