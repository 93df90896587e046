//! The sans-IO core of `grid`: MinIO's "grid" RPC protocol, wire-compatible
//! with the Go implementation, with no sockets, clocks, threads or runtime.
//!
//! The entry point is [`Connection`]: one per remote host, living across
//! reconnects. It consumes received frames (WebSocket binary messages),
//! timer expiries and application commands, and produces frames to send,
//! its next deadline and application [`Event`]s. Time is passed in; the same
//! inputs always give the same outputs. A driver runs this loop:
//!
//! ```
//! use std::time::{Instant, SystemTime};
//! use grid_proto::{Config, Connection, Event, InstanceId, Timestamp};
//!
//! let now = Instant::now();
//! let wall = Timestamp::from_system_time(SystemTime::now());
//! let config = Config::new("http://10.0.0.2:9000", "http://10.0.0.1:9000");
//! let mut conn = Connection::new(config, InstanceId::from_seed(7), now, wall);
//!
//! // 1. Inputs: `handle_frame(now, frame)` for every binary message read
//! //    (read only while `wants_read()`: back-pressure), `handle_timeout(now)`
//! //    when the timer fires, and commands: `start_handshake`, new calls
//! //    (`request(now, Request::new(..))`, `open_stream(now, OpenStream::new(..))`)
//! //    and the commands of a live call (`call(id).send(..)`,
//! //    `incoming(id).respond(..)`, ...).
//! // 2. Then drain the outputs, in this order:
//! while let Some(frame) = conn.poll_transmit() {
//!     let _ = frame; // write it as one WebSocket binary message
//! }
//! while let Some(event) = conn.poll_event() {
//!     match event {
//!         // This side dials the pair: open a WebSocket, then call
//!         // `start_handshake(now, wall, token)`.
//!         Event::Dial => {}
//!         other => println!("{other:?}"),
//!     }
//! }
//! // 3. Arm one timer.
//! let _next_wakeup: Option<Instant> = conn.poll_timeout();
//! ```
//!
//! An acceptor does not know which `Connection` a new WebSocket belongs to
//! until the peer's `Connect` names its host: the HTTP [`upgrade`] checks
//! and the [`handshake::IncomingHandshake`] (which waits for `Connect` on
//! its own timer) run first, then
//! [`accept_handshake`](Connection::accept_handshake) hands the transport
//! to the host's connection.
//!
//! Modules, one concept each: the codec ([`Message`], [`Op`], [`Flags`],
//! [`HandlerId`] with MinIO's [`CATALOGUE`], [`SubrouteId`] and [`Subroute`], merged frames in [`FrameDecoder`] and
//! [`FrameBuilder`], control payloads such as [`ConnectRequest`]); the HTTP
//! [`upgrade`] and the [`handshake`]; the connection with its caller side
//! (requests and streams it started, [`OutgoingCall`]) and callee side
//! (calls it serves, [`IncomingCall`]), which share one flow control per
//! stream; the reconnect policy; timers; errors per layer ([`DecodeError`],
//! [`CallError`], [`SendError`], [`CancelReason`], [`DisconnectReason`]).
//!
//! Features (none is on by default, so the core comes alone):
//! - `driver`: the `driver` module, the runtime-neutral handles, registry,
//!   typed handlers and connection task that `grid-tokio` and `grid-smol`
//!   run;
//! - `recorder` (implies `driver`): `driver::Recorder`, which writes a
//!   manager's connections as transcripts;
//! - `sim`: the `sim` module (two cores joined on a virtual clock, and the
//!   reference handler table of the recorded transcripts) and `chaos` (the
//!   invariant-checking script runner behind the fuzz target): test tooling.
//!
//! Decoding a received frame by hand:
//!
//! ```
//! use bytes::Bytes;
//! use grid_proto::{FrameDecoder, Op, DEFAULT_MAX_MESSAGE_SIZE};
//!
//! // A response to mux 1 carrying "world", with a CRC (docs/protocol.md#crc).
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

mod capacities;
mod catalogue;
#[cfg(feature = "sim")]
pub mod chaos;
mod config;
mod connection;
mod dial;
#[cfg(feature = "driver")]
pub mod driver;
mod error;
mod event;
mod flags;
mod flow;
mod handler;
pub mod handshake;
mod incoming;
mod merge;
mod message;
mod msgpack;
mod op;
mod outgoing;
mod payload;
mod redial;
mod rng;
#[cfg(feature = "sim")]
pub mod sim;
mod state;
mod stats;
mod subroute;
mod time;
mod timer;
pub mod upgrade;

pub use capacities::Capacities;
pub use catalogue::{CATALOGUE, HandlerInfo};
pub use config::{Backoff, CapacityTable, Config, Settings};
pub use connection::Connection;
pub use dial::{crc_enabled, should_dial};
pub use error::{CallError, CancelReason, DecodeError, DisconnectReason, SendError};
pub use event::{CallId, Event, IncomingId, MuxId};
pub use flags::Flags;
pub use handler::HandlerId;
pub use incoming::{IDLE_CHECK_INTERVAL, IDLE_TIMEOUT, IncomingCall};
pub use merge::{
    DEFAULT_MAX_MESSAGE_SIZE, FrameBuilder, FrameDecoder, MAX_MERGED_MESSAGES, MERGE_BYTE_LIMIT,
};
pub use message::{CRC_LEN, Message, SUBROUTE_LEN, crc};
pub use op::Op;
pub use outgoing::{
    OpenStream, OutgoingCall, Request, STREAM_LIVENESS_TIMEOUT, STREAM_PING_INTERVAL,
};
pub use payload::{
    ConnectRequest, ConnectResponse, InstanceId, MuxConnectError, PingPayload, PongPayload,
};
pub use redial::DialFailure;
pub use state::State;
pub use stats::{Stats, StatsTotal};
pub use subroute::{Subroute, SubrouteId, join_route};
pub use time::Timestamp;

/// Bytes from spaced hex, for the unit tests' byte vectors.
#[cfg(test)]
pub(crate) fn test_hex(s: &str) -> bytes::Bytes {
    let clean: String = s.split_whitespace().collect();
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).expect("hex digits"))
        .collect::<Vec<u8>>()
        .into()
}
