//! The sans-IO core of `grid`: MinIO's "grid" RPC protocol, wire-compatible
//! with the Go implementation, with no sockets, clocks, threads or runtime.
//!
//! This crate is built in layers, one concept per module:
//! - the codec: [`Message`] (the envelope with its subroute and CRC
//!   trailers), [`Op`], [`Flags`], [`HandlerId`], [`SubrouteId`], merged
//!   frames ([`FrameDecoder`], [`FrameBuilder`]) and the control payloads
//!   ([`ConnectRequest`], [`PongPayload`], ...);
//! - errors of each layer ([`DecodeError`]).
//!
//! Decoding a received WebSocket binary message:
//!
//! ```
//! use bytes::Bytes;
//! use grid_proto::{FrameDecoder, Op, DEFAULT_MAX_MESSAGE_SIZE};
//!
//! // A response to mux 1 carrying "world", with a CRC (PROTOCOL.md C.4).
//! let frame = Bytes::from_static(&[
//!     0x97, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x03, 0xc4, 0x05, b'w', b'o', b'r', b'l', b'd',
//!     0x37, 0x6d, 0xfa, 0x0c,
//! ]);
//! for msg in FrameDecoder::new(frame, DEFAULT_MAX_MESSAGE_SIZE)? {
//!     let msg = msg?;
//!     assert_eq!(msg.op, Op::Response);
//!     assert_eq!(msg.payload().unwrap(), "world");
//! }
//! # Ok::<(), grid_proto::DecodeError>(())
//! ```

mod config;
mod connection;
mod dial;
#[cfg(feature = "driver")]
pub mod driver;
mod error;
mod event;
mod flags;
mod handler;
pub mod handshake;
mod incoming;
mod merge;
mod message;
mod msgpack;
mod op;
mod outgoing;
mod payload;
mod rng;
pub mod sim;
mod stats;
mod subroute;
mod time;
mod timer;

pub use config::{Backoff, Capacities, CapacityTable, Config};
pub use connection::{Connection, State};
pub use dial::{crc_enabled, should_dial};
pub use error::{CallError, CancelReason, DecodeError, DisconnectReason, SendError};
pub use event::{CallId, Event, IncomingId};
pub use flags::Flags;
pub use handler::HandlerId;
pub use incoming::{IDLE_CHECK_INTERVAL, IDLE_TIMEOUT};
pub use merge::{
    DEFAULT_MAX_MESSAGE_SIZE, FrameBuilder, FrameDecoder, MAX_MERGED_MESSAGES, MERGE_BYTE_LIMIT,
};
pub use message::{CRC_LEN, Message, SUBROUTE_LEN, crc};
pub use op::Op;
pub use outgoing::{STREAM_LIVENESS_TIMEOUT, STREAM_PING_INTERVAL};
pub use payload::{
    ConnectRequest, ConnectResponse, InstanceId, MuxConnectError, PingPayload, PongPayload,
};
pub use stats::Stats;
pub use subroute::{SubrouteId, join_route};
pub use time::Timestamp;
