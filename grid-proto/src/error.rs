//! Errors of each layer: decoding, calls, stream sends, incoming
//! cancellation and disconnects.

use std::fmt;

/// Why a received frame (or a payload inside it) could not be decoded.
///
/// Every variant except [`DecodeError::UnknownOp`] is fatal to the connection
/// that received it, as in Go (docs/protocol.md#envelope-errors). See
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
            DecodeError::InvalidValue { field, reason } => write!(f, "invalid {field}: {reason}"),
            DecodeError::TooDeep { field } => write!(f, "{field} is nested too deeply"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a call (single request or stream) failed, locally or remotely.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// Refused locally: the connection is not established. Retry after
    /// reconnecting (Go: `ErrDisconnected`).
    NotConnected,
    /// The connection was lost while the call was in flight ("remote
    /// disconnected"). The callee may or may not have run the handler.
    Disconnected,
    /// Refused locally: the handler id is not valid (1..=79), or no
    /// capacities are known for a stream handler. Configure its capacities.
    UnknownHandler {
        /// The handler id.
        handler: u8,
    },
    /// The remote handler returned an error; the text is exactly the remote's.
    Remote(String),
    /// The callee refused to start the call (`MuxConnectError`), e.g.
    /// `Invalid Handler for type: DiskInfo`.
    Refused(String),
    /// The deadline passed before the call finished.
    DeadlineExceeded,
    /// The peer broke the per-mux sequence ("out-of-sequence item received").
    OutOfSequence {
        /// The expected sequence number.
        want: u32,
        /// The one received.
        got: u32,
    },
    /// The callee answered a stream ping with "not found": it no longer has
    /// the stream ("remote terminated call").
    RemoteTerminated,
    /// The callee showed no sign of life for 30 s (no pong, no message).
    Unresponsive,
    /// The callee sent more messages than the stream's capacity allows
    /// ("Response was blocked").
    ResponseBlocked,
    /// Refused locally: too many bytes are queued for sending. Retry later.
    QueueFull,
    /// Refused locally: the message would exceed the maximum message size.
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The connection was shut down.
    Shutdown,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::NotConnected => f.write_str("not connected"),
            CallError::Disconnected => f.write_str("remote disconnected"),
            CallError::UnknownHandler { handler } => write!(f, "unknown mux handler {handler}"),
            CallError::Remote(text) => f.write_str(text),
            CallError::Refused(text) => write!(f, "call refused: {text}"),
            CallError::DeadlineExceeded => f.write_str("deadline exceeded"),
            CallError::OutOfSequence { want, got } => {
                write!(f, "out-of-sequence item received (want {want}, got {got})")
            }
            CallError::RemoteTerminated => f.write_str("remote terminated call"),
            CallError::Unresponsive => f.write_str("no sign of life from the remote for 30s"),
            CallError::ResponseBlocked => {
                f.write_str("response was blocked: callee overran its capacity")
            }
            CallError::QueueFull => f.write_str("outgoing queue is full"),
            CallError::TooLarge { size, max } => {
                write!(
                    f,
                    "message of {size} bytes exceeds the limit of {max} bytes"
                )
            }
            CallError::Shutdown => f.write_str("connection shut down"),
        }
    }
}

impl std::error::Error for CallError {}

/// Why a stream message could not be sent. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// No credit: wait for [`crate::Event::StreamCredit`] /
    /// [`crate::Event::IncomingCredit`] and try again.
    NoCredit,
    /// The stream does not exist (it ended, or was never opened).
    UnknownStream,
    /// This direction is closed: EOF was sent, or the handler has no input
    /// (`InCapacity` 0), or the stream already finished.
    Closed,
    /// Too many bytes are queued for sending; try again later.
    QueueFull,
    /// The message would exceed the maximum message size.
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NoCredit => f.write_str("no send credit"),
            SendError::UnknownStream => f.write_str("unknown stream"),
            SendError::Closed => f.write_str("stream direction closed"),
            SendError::QueueFull => f.write_str("outgoing queue is full"),
            SendError::TooLarge { size, max } => {
                write!(
                    f,
                    "message of {size} bytes exceeds the limit of {max} bytes"
                )
            }
        }
    }
}

impl std::error::Error for SendError {}

/// Why an incoming request or stream was ended from outside its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// The caller cancelled it (`DisconnectServerMux`).
    CallerCancelled,
    /// The connection was lost.
    Disconnected,
    /// Its `DeadlineMS` passed.
    DeadlineExceeded,
    /// The caller sent no stream ping for 60 s.
    Idle,
    /// The caller broke the stream protocol; the text was sent to it.
    ProtocolError(String),
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::CallerCancelled => f.write_str("cancelled by the caller"),
            CancelReason::Disconnected => f.write_str("remote disconnected"),
            CancelReason::DeadlineExceeded => f.write_str("deadline exceeded"),
            CancelReason::Idle => f.write_str("no ping from the caller for 60s"),
            CancelReason::ProtocolError(text) => write!(f, "protocol error: {text}"),
        }
    }
}

/// Why a session (or a handshake attempt) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The driver reported the transport closed or failed.
    TransportLost,
    /// No connection pong for longer than the pong timeout.
    PongTimeout,
    /// The peer sent a frame that could not be decoded.
    Decode(DecodeError),
    /// The handshake did not complete in time.
    HandshakeTimeout,
    /// The peer answered the handshake with something other than a
    /// `ConnectResponse`, or an undecodable one.
    HandshakeFailed(String),
    /// The acceptor refused the connection; the text is its reason.
    Rejected(String),
    /// A new session replaced this one.
    Replaced,
    /// The application shut the connection down.
    Shutdown,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::TransportLost => f.write_str("transport lost"),
            DisconnectReason::PongTimeout => f.write_str("no pong from the remote in time"),
            DisconnectReason::Decode(e) => write!(f, "undecodable frame: {e}"),
            DisconnectReason::HandshakeTimeout => f.write_str("handshake timed out"),
            DisconnectReason::HandshakeFailed(why) => write!(f, "handshake failed: {why}"),
            DisconnectReason::Rejected(why) => write!(f, "connection rejected: {why}"),
            DisconnectReason::Replaced => f.write_str("replaced by a newer connection"),
            DisconnectReason::Shutdown => f.write_str("shut down"),
        }
    }
}

impl std::error::Error for DisconnectReason {}
